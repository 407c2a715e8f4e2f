// Command pingtrace splits the round trips of tcpchan's
// BenchmarkPingPongUnderBulk into where the two goroutines on the ping's
// path spent them, from an execution trace of the benchmark:
//
//	go test -run '^$' -bench 'PingPongUnderBulk/tcpchan/window=256KiB' -benchtime 3000x -trace /tmp/ping.trace .
//	cd benchmarks && go run ./pingtrace /tmp/ping.trace
//
// The benchmark logs "ping start", "ping written" and "ping end" on the
// pinging goroutine and "echo got" on the echoing one (runtime/trace.Log).
// Each round trip is cut in two: the request, from start until the echo
// goroutine has the ping, as time that goroutine spent in each state; and
// the response, from then to end, as the same for the pinging goroutine.
// The states are the runtime's: running (on a processor, in Go code),
// in a system call (on a processor too, for the non-blocking socket reads
// and writes the session makes), runnable (ready but not running: waiting
// for a processor, or for an idle one's thread to wake) and waiting
// (blocked: on a lock, a condition, the network poller). The ping's Write
// call (start to written) is shown too; it is part of the request, and may
// outlast it when the echo has the ping before the Write returns.
//
// Round trips are sorted by length and the parts averaged over bands of
// them: the middle fifth, the 90th to 98th percentiles and the slowest 2%.
// Only the goroutine that logged the most round trips counts as the
// pinger, which leaves out the benchmark's warm-up run (b.N = 1).
package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"slices"
	"sort"

	"golang.org/x/exp/trace"
)

// transition is one change of a goroutine's state.
type transition struct {
	at trace.Time
	to trace.GoState
}

// roundTrip holds the logged instants of one ping and the goroutines on
// its path.
type roundTrip struct {
	start, written, got, end trace.Time
	pinger, echoer           trace.GoID
}

// echo is the instant an echoing goroutine had a ping.
type echo struct {
	at trace.Time
	g  trace.GoID
}

// spent is time in each state, in microseconds.
type spent struct{ running, syscall, runnable, waiting float64 }

func (s *spent) add(o spent) {
	s.running += o.running
	s.syscall += o.syscall
	s.runnable += o.runnable
	s.waiting += o.waiting
}

func main() {
	log.SetFlags(0)
	if len(os.Args) != 2 {
		log.Fatal("usage: pingtrace trace-file")
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	trips, echoes, states, err := read(f)
	if err != nil {
		log.Fatal(err)
	}
	trips = match(mainPinger(trips), echoes)
	if len(trips) == 0 {
		log.Fatal("no round trips with an echo in the trace: is it BenchmarkPingPongUnderBulk's?")
	}
	type row struct {
		total, write   float64
		request, reply spent
	}
	rows := make([]row, 0, len(trips))
	unknown := 0
	for _, t := range trips {
		request, ok1 := account(states[t.echoer], t.start, t.got)
		reply, ok2 := account(states[t.pinger], t.got, t.end)
		if !ok1 || !ok2 {
			unknown++
			continue
		}
		rows = append(rows, row{
			total:   micros(t.end - t.start),
			write:   micros(t.written - t.start),
			request: request,
			reply:   reply,
		})
	}
	slices.SortFunc(rows, func(a, b row) int { return cmp.Compare(a.total, b.total) })
	fmt.Printf("%d round trips", len(rows))
	if unknown > 0 {
		fmt.Printf(" (%d more left out: a goroutine's state at their start is not in the trace)", unknown)
	}
	fmt.Print("; averages per band, µs\n\n")
	fmt.Println("| round trips | total | request: echo running | syscall | runnable | waiting | (the ping's Write call) | response: pinger running | syscall | runnable | waiting |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, band := range []struct {
		name     string
		from, to float64
	}{{"40th-60th percentile", 0.4, 0.6}, {"90th-98th", 0.9, 0.98}, {"slowest 2%", 0.98, 1}} {
		lo, hi := int(band.from*float64(len(rows))), int(band.to*float64(len(rows)))
		if hi <= lo {
			continue
		}
		var sum row
		for _, r := range rows[lo:hi] {
			sum.total += r.total
			sum.write += r.write
			sum.request.add(r.request)
			sum.reply.add(r.reply)
		}
		n := float64(hi - lo)
		fmt.Printf("| %s (%d) | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |\n", band.name, hi-lo,
			sum.total/n, sum.request.running/n, sum.request.syscall/n, sum.request.runnable/n, sum.request.waiting/n, sum.write/n,
			sum.reply.running/n, sum.reply.syscall/n, sum.reply.runnable/n, sum.reply.waiting/n)
	}
}

// read collects the logged round trips and echoes and every goroutine's
// state changes, each in time order (the reader yields events in order).
func read(r io.Reader) ([]roundTrip, []echo, map[trace.GoID][]transition, error) {
	tr, err := trace.NewReader(r)
	if err != nil {
		return nil, nil, nil, err
	}
	states := make(map[trace.GoID][]transition)
	var trips []roundTrip
	var echoes []echo
	var cur roundTrip
	for {
		ev, err := tr.ReadEvent()
		if errors.Is(err, io.EOF) {
			return trips, echoes, states, nil
		}
		if err != nil {
			return nil, nil, nil, err
		}
		switch ev.Kind() {
		case trace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind == trace.ResourceGoroutine {
				_, to := st.Goroutine()
				id := st.Resource.Goroutine()
				states[id] = append(states[id], transition{ev.Time(), to})
			}
		case trace.EventLog:
			l := ev.Log()
			switch l.Category + " " + l.Message {
			case "ping start":
				cur = roundTrip{start: ev.Time(), pinger: ev.Goroutine()}
			case "ping written":
				cur.written = ev.Time()
			case "ping end":
				if cur.written != 0 && cur.pinger == ev.Goroutine() {
					cur.end = ev.Time()
					trips = append(trips, cur)
				}
			case "echo got":
				echoes = append(echoes, echo{ev.Time(), ev.Goroutine()})
			}
		}
	}
}

// mainPinger keeps the round trips of the goroutine that logged the most.
func mainPinger(trips []roundTrip) []roundTrip {
	count := make(map[trace.GoID]int)
	var most trace.GoID
	for _, t := range trips {
		count[t.pinger]++
		if count[t.pinger] > count[most] {
			most = t.pinger
		}
	}
	return slices.DeleteFunc(trips, func(t roundTrip) bool { return t.pinger != most })
}

// match gives each round trip the first echo logged at or after its start
// (the echo may have the ping before the pinger's Write returns), dropping
// those with no echo before their end. Both lists are in time order.
func match(trips []roundTrip, echoes []echo) []roundTrip {
	matched := trips[:0]
	for _, t := range trips {
		i, _ := slices.BinarySearchFunc(echoes, t.start, func(e echo, at trace.Time) int { return cmp.Compare(e.at, at) })
		if i < len(echoes) && echoes[i].at < t.end {
			t.got, t.echoer = echoes[i].at, echoes[i].g
			matched = append(matched, t)
		}
	}
	return matched
}

// account splits [from, to) by the state the goroutine with changes ts was
// in. It reports false if that state at from is unknown: no change of the
// goroutine's is in the trace before from.
func account(ts []transition, from, to trace.Time) (spent, bool) {
	var s spent
	// The first change after from; the one before it (possibly at from)
	// gives the state at from.
	i := sort.Search(len(ts), func(i int) bool { return ts[i].at > from })
	if i == 0 {
		return s, false
	}
	state, at := ts[i-1].to, from
	for ; ; i++ {
		end := to
		if i < len(ts) && ts[i].at < to {
			end = ts[i].at
		}
		d := micros(end - at)
		switch state {
		case trace.GoRunning:
			s.running += d
		case trace.GoSyscall:
			s.syscall += d
		case trace.GoRunnable:
			s.runnable += d
		default:
			s.waiting += d
		}
		if end == to {
			return s, true
		}
		state, at = ts[i].to, end
	}
}

func micros(d trace.Time) float64 { return float64(d) / 1e3 }

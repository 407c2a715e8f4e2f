package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/tcpchan/tcpchan/benchmarks/linksim"
)

// params sizes the workloads; quick shrinks everything.
type params struct {
	bulkBytes   int64         // bulk1 and bulk16 (total)
	pingIters   int           // pingpong
	pubSolo     time.Duration // pingpong-under-bulk: solo bulk phase
	pubDur      time.Duration // pingpong-under-bulk: mixed phase
	oecOps      int           // open-echo-close
	idleStreams int           // idle-mem
	llBulk      time.Duration // longlink-bulk
	llBulk16    int64         // longlink-bulk16 (total)
	llOps       int           // longlink-rr
	link        linksim.Config
	timeout     time.Duration // per measurement
}

func fullParams() params {
	return params{
		bulkBytes:   1 << 30,
		pingIters:   20000,
		pubSolo:     time.Second,
		pubDur:      2 * time.Second,
		oecOps:      5000,
		idleStreams: 10000,
		llBulk:      3 * time.Second,
		llBulk16:    16 * (6 << 20),
		llOps:       20,
		link:        linksim.Config{Delay: 20 * time.Millisecond, Rate: 100e6},
		timeout:     2 * time.Minute,
	}
}

func quickParams() params {
	return params{
		bulkBytes:   128 << 20,
		pingIters:   5000,
		pubSolo:     300 * time.Millisecond,
		pubDur:      500 * time.Millisecond,
		oecOps:      1000,
		idleStreams: 2000,
		llBulk:      time.Second,
		llBulk16:    16 * (2 << 20),
		llOps:       6,
		link:        linksim.Config{Delay: 20 * time.Millisecond, Rate: 100e6},
		timeout:     time.Minute,
	}
}

type metric struct {
	key    string
	higher bool // higher is better
	format string
}

type workload struct {
	name    string
	desc    string
	metrics []metric
	link    bool
	run     func(e *env, p *params) (map[string]float64, error)
}

var workloads = []workload{
	{
		name: "bulk1", desc: "one stream, 32 KiB writes, peer discards",
		metrics: []metric{{"MB/s", true, "%.0f"}},
		run:     runBulk1,
	},
	{
		name: "bulk16", desc: "16 concurrent streams",
		metrics: []metric{{"agg MB/s", true, "%.0f"}, {"slowest/fastest", false, "%.2f"}},
		run:     runBulk16,
	},
	{
		name: "pingpong", desc: "64-byte echo on an open stream",
		metrics: []metric{{"p50 µs", false, "%.1f"}, {"p99 µs", false, "%.1f"}},
		run:     runPingpong,
	},
	{
		name: "pingpong-under-bulk", desc: "64-byte echo while another stream of the session runs bulk",
		metrics: []metric{{"p50 µs", false, "%.1f"}, {"p99 µs", false, "%.1f"}, {"bulk vs solo", true, "%.2f"}, {"bulk MB/s", true, "%.0f"}},
		run:     runPingpongUnderBulk,
	},
	{
		name: "open-echo-close", desc: "open + one 64-byte echo + close, sequential (tcp: new connection per op)",
		metrics: []metric{{"µs/op", false, "%.1f"}},
		run:     runOpenEchoClose,
	},
	{
		name: "idle-mem", desc: "open streams after one echo each, left open",
		metrics: []metric{{"heap B/stream/end", false, "%.0f"}, {"goroutines/stream", false, "%.2f"}},
		run:     runIdleMem,
	},
	{
		name: "longlink-bulk", desc: "one stream bulk through linksim (40 ms RTT, 100 MB/s)",
		metrics: []metric{{"MB/s", true, "%.1f"}},
		link:    true,
		run:     runLonglinkBulk,
	},
	{
		name: "longlink-bulk16", desc: "16 streams bulk through linksim, as bulk16 (tcp: 16 connections, each through its own simulated link)",
		metrics: []metric{{"agg MB/s", true, "%.0f"}, {"slowest/fastest", false, "%.2f"}},
		link:    true,
		run: func(e *env, p *params) (map[string]float64, error) {
			q := *p
			q.bulkBytes = p.llBulk16
			return runBulk16(e, &q)
		},
	},
	{
		name: "longlink-rr", desc: "sequential 64-byte request/response, each on a new stream (tcp: new connection) through linksim",
		metrics: []metric{{"ms/op", false, "%.1f"}},
		link:    true,
		run:     runLonglinkRR,
	},
}

func runBulk1(e *env, p *params) (map[string]float64, error) {
	c, err := e.client.Open()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := prepN(c, p.bulkBytes); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := sendN(c, p.bulkBytes); err != nil {
		return nil, err
	}
	el := time.Since(start)
	return map[string]float64{"MB/s": float64(p.bulkBytes) / el.Seconds() / 1e6}, nil
}

func runBulk16(e *env, p *params) (map[string]float64, error) {
	const n = 16
	per := p.bulkBytes / n
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := e.client.Open()
		if err != nil {
			return nil, err
		}
		conns = append(conns, c)
	}
	prep := make([]error, n)
	var pwg sync.WaitGroup
	for i, c := range conns {
		pwg.Go(func() { prep[i] = prepN(c, per) })
	}
	pwg.Wait()
	if err := errors.Join(prep...); err != nil {
		return nil, err
	}
	finish := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	var start time.Time
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			errs[i] = sendN(c, per)
			finish[i] = time.Since(start)
		}()
	}
	start = time.Now()
	close(gate)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	sort.Slice(finish, func(i, j int) bool { return finish[i] < finish[j] })
	return map[string]float64{
		"agg MB/s":        float64(per*n) / finish[n-1].Seconds() / 1e6,
		"slowest/fastest": finish[n-1].Seconds() / finish[0].Seconds(),
	}, nil
}

func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q * float64(len(s)))
	if i >= len(s) {
		i = len(s) - 1
	}
	return s[i]
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// pingLoop runs 64-byte echoes on c (already tagged) until iters are done
// or, if dur > 0, the duration elapses; it returns each round trip time.
func pingLoop(c net.Conn, iters int, dur time.Duration) ([]time.Duration, error) {
	out := make([]byte, msgSize)
	in := make([]byte, msgSize)
	lat := make([]time.Duration, 0, min(iters, 1<<16))
	end := time.Now().Add(dur)
	for i := 0; i < iters; i++ {
		if dur > 0 && i%16 == 0 && time.Now().After(end) {
			break
		}
		fillMsg(out, i)
		t := time.Now()
		if _, err := c.Write(out); err != nil {
			return lat, err
		}
		if _, err := io.ReadFull(c, in); err != nil {
			return lat, err
		}
		lat = append(lat, time.Since(t))
		if in[0] != out[0] || in[msgSize-1] != out[msgSize-1] {
			return lat, fmt.Errorf("echo mismatch at %d", i)
		}
	}
	return lat, nil
}

func openEcho(e *env) (net.Conn, error) {
	c, err := e.client.Open()
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte{tagEcho}); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := pingLoop(c, 100, 0); err != nil { // warm-up
		c.Close()
		return nil, err
	}
	return c, nil
}

func runPingpong(e *env, p *params) (map[string]float64, error) {
	c, err := openEcho(e)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	lat, err := pingLoop(c, p.pingIters, 0)
	if err != nil {
		return nil, err
	}
	if len(lat) != p.pingIters {
		return nil, fmt.Errorf("only %d of %d echoes", len(lat), p.pingIters)
	}
	return map[string]float64{"p50 µs": us(percentile(lat, .50)), "p99 µs": us(percentile(lat, .99))}, nil
}

func runPingpongUnderBulk(e *env, p *params) (map[string]float64, error) {
	// Solo throughput: half before and half after the mixed phase, to
	// cancel slow drift on a noisy machine, both with the bulk stream
	// alone in its session (the ping stream is closed before the second
	// half), since a multiplexer may size a lone stream's window
	// differently (tcpchan does).
	_, solo1, err := e.bulkUntil(nil, time.Now().Add(p.pubSolo/2))
	if err != nil {
		return nil, fmt.Errorf("solo bulk: %w", err)
	}
	c, err := openEcho(e)
	if err != nil {
		return nil, err
	}
	defer c.Close()

	stop := make(chan struct{})
	type bres struct {
		rate float64
		err  error
	}
	bc := make(chan bres, 1)
	go func() {
		_, r, err := e.bulkUntil(stop, time.Time{})
		bc <- bres{r, err}
	}()
	// Let the bulk stream fill its window, pinging already (unmeasured):
	// the bulk rate counts from the start, so it is all taken beside a
	// ping, and a multiplexer that sizes windows by which streams are
	// active (tcpchan does) sees the ping stream active throughout.
	_, perr := pingLoop(c, 1<<30, 50*time.Millisecond)
	var lat []time.Duration
	if perr == nil {
		lat, perr = pingLoop(c, 1<<30, p.pubDur)
	}
	close(stop)
	b := <-bc
	if perr != nil {
		return nil, perr
	}
	if b.err != nil {
		return nil, fmt.Errorf("bulk: %w", b.err)
	}
	if len(lat) < 100 {
		return nil, fmt.Errorf("only %d echoes completed under bulk", len(lat))
	}
	c.Close()
	_, solo2, err := e.bulkUntil(nil, time.Now().Add(p.pubSolo/2))
	if err != nil {
		return nil, fmt.Errorf("solo bulk: %w", err)
	}
	solo := (solo1 + solo2) / 2
	return map[string]float64{
		"p50 µs":       us(percentile(lat, .50)),
		"p99 µs":       us(percentile(lat, .99)),
		"bulk vs solo": b.rate / solo,
		"bulk MB/s":    b.rate / 1e6,
	}, nil
}

func runOpenEchoClose(e *env, p *params) (map[string]float64, error) {
	untrackRaw(e) // each op closes its connection at both ends
	start := time.Now()
	for i := 0; i < p.oecOps; i++ {
		c, err := e.client.Open()
		if err != nil {
			return nil, fmt.Errorf("op %d: %w", i, err)
		}
		err = echoOn(c, tagOnce, i)
		c.Close()
		if err != nil {
			return nil, fmt.Errorf("op %d: %w", i, err)
		}
	}
	el := time.Since(start)
	return map[string]float64{"µs/op": us(el) / float64(p.oecOps)}, nil
}

// untrackRaw turns off, for raw TCP, the harness's per-connection
// tracking (a wrapper, a closure and a map entry at each end, so that
// env.Close can close what a failed workload left open), which the
// multiplexers' streams do not carry: a workload that times new
// connections, or counts their memory, then measures the connections
// alone, and closes them itself.
func untrackRaw(e *env) {
	if _, ok := e.mux.(rawTCP); ok {
		e.client.(*rawClient).noTrack = true
		e.server.(*rawServer).noTrack.Store(true)
	}
}

func heapNow() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// settledHeap is heapNow once it has settled: two readings 20 ms apart
// within 64 KiB, or after a second. A baseline read once, 20 ms after the
// previous workload (tcpchan's 10,000 idle streams) closed, held about 6
// MB that was gone by the reading after the workload: raw TCP's idle
// figure came out at -27 B per connection (2026-12-07, one round in nine).
func settledHeap() uint64 {
	h := heapNow()
	for range 50 {
		time.Sleep(20 * time.Millisecond)
		next := heapNow()
		if max(h, next)-min(h, next) < 64<<10 {
			return next
		}
		h = next
	}
	return h
}

func runIdleMem(e *env, p *params) (map[string]float64, error) {
	n := p.idleStreams
	if _, ok := e.mux.(rawTCP); ok {
		// Two descriptors per raw connection; keep headroom.
		if lim := (fdLimit() - 500) / 2; n > lim {
			n = lim
		}
	}
	untrackRaw(e) // the deferred function below closes both ends
	conns := make([]net.Conn, 0, n)
	e.idleMu.Lock()
	e.idle = make([]net.Conn, 0, n)
	e.idleMu.Unlock()
	defer func() {
		// Every stream is closed at both ends, and each end waits for
		// the other's FIN, before the sessions close: a hashicorp/yamux
		// stream closed at one end waits for the other's FIN on a
		// 5-minute timer (StreamCloseTimeout) that closing the session
		// does not stop, and 10,000 of them held about 10 MB until the
		// timers fired, all at once, minutes later: inside a later
		// round's idle-mem readings, if it fell between them. (Reads
		// after Close return at once where there is no such wait.)
		e.idleMu.Lock()
		served := e.idle
		e.idle = nil
		e.idleMu.Unlock()
		for _, c := range served {
			c.Close()
		}
		deadline := time.Now().Add(5 * time.Second)
		buf := make([]byte, 1)
		for _, side := range [][]net.Conn{conns, served} {
			for _, c := range side {
				c.SetReadDeadline(deadline)
				c.Read(buf) // io.EOF once the other end's FIN has arrived
				c.Close()
			}
		}
	}()
	h0 := settledHeap()
	g0 := runtime.NumGoroutine()
	e.idleWG.Add(n)
	for i := 0; i < n; i++ {
		c, err := e.client.Open()
		if err != nil {
			e.idleWG.Add(i - n)
			return nil, fmt.Errorf("stream %d: %w", i, err)
		}
		conns = append(conns, c)
		if err := echoOn(c, tagIdle, i); err != nil {
			e.idleWG.Add(i + 1 - n)
			return nil, fmt.Errorf("stream %d: %w", i, err)
		}
	}
	e.idleWG.Wait()
	time.Sleep(50 * time.Millisecond) // let handler goroutines exit
	h1 := heapNow()
	g1 := runtime.NumGoroutine()
	e.idleMu.Lock()
	got := len(e.idle)
	e.idleMu.Unlock()
	if got != n {
		return nil, fmt.Errorf("server holds %d idle streams, want %d", got, n)
	}
	runtime.KeepAlive(conns)
	return map[string]float64{
		"heap B/stream/end": (float64(h1) - float64(h0)) / float64(2*n),
		"goroutines/stream": float64(g1-g0) / float64(n),
		"streams":           float64(n),
	}, nil
}

func runLonglinkBulk(e *env, p *params) (map[string]float64, error) {
	_, rate, err := e.bulkUntil(nil, time.Now().Add(p.llBulk))
	if err != nil {
		return nil, err
	}
	return map[string]float64{"MB/s": rate / 1e6}, nil
}

func runLonglinkRR(e *env, p *params) (map[string]float64, error) {
	start := time.Now()
	for i := 0; i < p.llOps; i++ {
		c, err := e.client.Open()
		if err != nil {
			return nil, fmt.Errorf("op %d: %w", i, err)
		}
		err = echoOn(c, tagOnce, i)
		c.Close()
		if err != nil {
			return nil, fmt.Errorf("op %d: %w", i, err)
		}
	}
	el := time.Since(start)
	return map[string]float64{"ms/op": float64(el) / float64(time.Millisecond) / float64(p.llOps)}, nil
}

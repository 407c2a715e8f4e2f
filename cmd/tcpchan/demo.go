package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// demoOptions configure runDemo.
type demoOptions struct {
	// Duration is the total measuring time, split evenly among the
	// workloads and transports.
	Duration time.Duration
	// Streams is how many streams (raw TCP: connections) the first
	// workload runs at once.
	Streams int
}

const (
	defaultDemoDuration = 8 * time.Second
	defaultDemoStreams  = 1000
	maxDemoStreams      = 10000

	echoSize   = 1024     // many streams: one echo
	pingSize   = 64       // bulk beside ping-pong: one ping
	bulkWrite  = 32 << 10 // bulk beside ping-pong: one write
	maxTCPOpen = 20000    // open/echo/close over raw TCP: ops per run, to spare ephemeral ports

	// ioSlack is how long past its end a measurement may wait for I/O
	// before the connection's deadline fails it.
	ioSlack = 10 * time.Second
)

func parseDemo(fs *flag.FlagSet, args []string) (runFunc, error) {
	setUsage(fs, "tcpchan demo [-duration d] [-streams n]",
		`Starts a server and a client in this process on 127.0.0.1 and runs three
workloads, each over tcpchan (every stream on one TCP connection) and over
raw TCP (one connection per stream):

  many streams        n streams at once, each echoing 1 KiB messages
  bulk beside ping    one stream sends bulk data while another echoes
                      64-byte pings: bulk throughput and ping latency
  open/echo/close     open a stream (raw TCP: connect), echo 64 bytes, close

It prints a table to stdout and a progress line to stderr. Every figure
counts bytes that arrived and were checked.
`)
	d := fs.Duration("duration", defaultDemoDuration, "total measuring `time`, split evenly among the 3 workloads × 2 transports")
	n := fs.Int("streams", defaultDemoStreams, fmt.Sprintf("concurrent streams (raw TCP: connections) in the first workload, 1 to %d", maxDemoStreams))
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if *d < 6*time.Millisecond {
		return nil, usageError("-duration %v: want at least 6ms", *d)
	}
	if *n < 1 || *n > maxDemoStreams {
		return nil, usageError("-streams %d: want 1 to %d", *n, maxDemoStreams)
	}
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		return runDemo(ctx, stdout, stderr, demoOptions{Duration: *d, Streams: *n})
	}, nil
}

// metric is one measured figure.
type metric struct {
	name   string
	format func(float64) string
}

// workload is one of the demo's measurements.
type workload struct {
	label   string
	metrics []metric
	unit    string // what the progress counter counts
	run     func(ctx context.Context, dial dialFunc, p phase) ([]float64, error)
}

// phase is what a workload run gets besides the dial function.
type phase struct {
	dur     time.Duration
	streams int
	raw     bool          // over raw TCP: new connection per open
	count   *atomic.Int64 // progress counter
}

// result is one workload run on one transport.
type result struct {
	values []float64 // per metric, then the TCP connections the server accepted
	err    error
}

func demoWorkloads(streams int) []workload {
	return []workload{
		{
			label: fmt.Sprintf("%d streams at once, 1 KiB echoes", streams),
			metrics: []metric{
				{"echoes/s", fmtInt},
				{"MB/s each way", fmtFloat},
				{"all first echoes in (ms)", fmtFloat},
			},
			unit: "echoes",
			run:  runManyStreams,
		},
		{
			label: "bulk stream beside ping-pong",
			metrics: []metric{
				{"bulk MB/s", fmtFloat},
				{"ping p50 (µs)", fmtFloat},
				{"ping p99 (µs)", fmtFloat},
			},
			unit: "bytes",
			run:  runBulkPing,
		},
		{
			label: "open, 64 B echo, close",
			metrics: []metric{
				{"ops/s, one at a time", fmtInt},
				{"p50 µs/op", fmtFloat},
			},
			unit: "ops",
			run:  runOpenEchoClose,
		},
	}
}

// runDemo runs the demo and prints its table to stdout, progress to stderr.
func runDemo(ctx context.Context, stdout, stderr io.Writer, opts demoOptions) error {
	if opts.Duration <= 0 {
		opts.Duration = defaultDemoDuration
	}
	if opts.Streams <= 0 {
		opts.Streams = defaultDemoStreams
	}
	mux, err := startTcpchanServer(opts.Streams)
	if err != nil {
		return err
	}
	defer mux.close()
	tcp, err := startTCPServer()
	if err != nil {
		return err
	}
	defer tcp.close()
	servers := []*demoServer{mux, tcp}

	workloads := demoWorkloads(opts.Streams)
	per := opts.Duration / time.Duration(len(workloads)*len(servers))
	results := make([][]result, len(workloads))
	prog := newProgress(stderr, len(workloads)*len(servers))
	defer prog.stop()
	for i, w := range workloads {
		results[i] = make([]result, len(servers))
		for j, s := range servers {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("interrupted: %w", context.Cause(ctx))
			}
			var count atomic.Int64
			prog.next(fmt.Sprintf("%s over %s", w.label, s.name), &count, w.unit)
			dial, closeClient := s.newClient()
			before := s.accepted.Load()
			values, err := w.run(ctx, dial, phase{dur: per, streams: opts.Streams, raw: s.name == "raw TCP", count: &count})
			closeClient()
			results[i][j] = result{append(values, float64(s.accepted.Load()-before)), err}
		}
	}
	prog.stop()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", context.Cause(ctx))
	}
	return printTable(stdout, opts, per, workloads, servers, results)
}

// printTable writes the results and returns an error if any run failed.
func printTable(w io.Writer, opts demoOptions, per time.Duration, workloads []workload, servers []*demoServer, results [][]result) error {
	fmt.Fprintf(w, "tcpchan demo: client and server in one process on 127.0.0.1 (%s %s/%s, %d CPUs), %v per workload and transport\n\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), per.Round(time.Millisecond))
	const labelW, metricW, valW = 36, 24, 11
	fmt.Fprintf(w, "%-*s %-*s", labelW, "workload", metricW, "metric")
	for _, s := range servers {
		fmt.Fprintf(w, " %*s", valW, s.name)
	}
	fmt.Fprintln(w)
	var errs []error
	for i, wl := range workloads {
		metrics := append(slices.Clone(wl.metrics), metric{"TCP connections", fmtInt})
		for m, met := range metrics {
			label := ""
			if m == 0 {
				label = wl.label
			}
			fmt.Fprintf(w, "%-*s %-*s", labelW, label, metricW, met.name)
			for _, r := range results[i] {
				cell := "error"
				if r.err == nil {
					cell = met.format(r.values[m])
				}
				fmt.Fprintf(w, " %*s", valW, cell)
			}
			fmt.Fprintln(w)
		}
		for j, r := range results[i] {
			if r.err != nil {
				errs = append(errs, fmt.Errorf("%s over %s: %w", wl.label, servers[j].name, r.err))
			}
		}
	}
	fmt.Fprint(w, `
Every figure counts bytes that arrived and were checked. tcpchan: the
client's streams share one TCP connection (a Dialer to a Listener); raw
TCP: one connection per stream, a new one per open in open/echo/close.
`)
	if len(errs) > 0 {
		fmt.Fprintln(w)
		for _, err := range errs {
			fmt.Fprintln(w, "error:", err)
		}
		return fmt.Errorf("%d of %d runs failed", len(errs), len(workloads)*len(servers))
	}
	return nil
}

func fmtFloat(v float64) string {
	switch {
	case v >= 1000:
		return fmtInt(v)
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// fmtInt formats v rounded, with thousands separators.
func fmtInt(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	neg := s[0] == '-'
	if neg {
		s = s[1:]
	}
	var b []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b = append(b, ',')
		}
		b = append(b, s[i])
	}
	if neg {
		return "-" + string(b)
	}
	return string(b)
}

// openTagged dials, sets a deadline bounding the whole run and sends tag.
func openTagged(ctx context.Context, dial dialFunc, tag byte, deadline time.Time) (net.Conn, error) {
	c, err := dial(ctx)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(deadline)
	if _, err := c.Write([]byte{tag}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// runManyStreams opens p.streams connections at once; each echoes 1 KiB
// messages, checking every echo, until the time is up.
func runManyStreams(ctx context.Context, dial dialFunc, p phase) ([]float64, error) {
	deadline := time.Now().Add(p.dur + ioSlack)
	conns := make([]net.Conn, p.streams)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var (
		wg      sync.WaitGroup
		errMu   sync.Mutex
		firstEr error
		echoes  atomic.Int64
		ready   sync.WaitGroup // every stream has had its first echo
		start   = time.Now()
		lastOne atomic.Int64 // when the last first echo arrived, since start
		stopAt  atomic.Int64 // set once all are ready: end of the measurement, since start
		going   = make(chan struct{})
	)
	fail := func(err error) {
		errMu.Lock()
		if firstEr == nil {
			firstEr = err
		}
		errMu.Unlock()
	}
	echo := func(c net.Conn, out, in []byte) error {
		if _, err := c.Write(out); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, in); err != nil {
			return err
		}
		if !bytes.Equal(in, out) {
			return errors.New("echo differs from what was sent")
		}
		return nil
	}
	ready.Add(p.streams)
	for i := range p.streams {
		wg.Go(func() {
			in := make([]byte, echoSize)
			c, err := openTagged(ctx, dial, tagEcho, deadline)
			if err == nil {
				conns[i] = c
				err = echo(c, msgAt(i, 0), in)
			}
			for t := int64(time.Since(start)); ; {
				if old := lastOne.Load(); old >= t || lastOne.CompareAndSwap(old, t) {
					break
				}
			}
			ready.Done()
			if err != nil {
				fail(err)
				return
			}
			<-going
			for k := 1; time.Since(start) < time.Duration(stopAt.Load()) && ctx.Err() == nil; k++ {
				if err := echo(c, msgAt(i, k), in); err != nil {
					fail(err)
					return
				}
				echoes.Add(1)
				p.count.Add(1)
			}
		})
	}
	ready.Wait()
	firstEchoes := time.Duration(lastOne.Load())
	measureFrom := time.Since(start)
	errMu.Lock()
	if firstEr == nil {
		stopAt.Store(int64(measureFrom + p.dur))
	} // else stopAt stays 0: no one starts
	errMu.Unlock()
	close(going)
	wg.Wait()
	elapsed := time.Since(start) - measureFrom
	if firstEr != nil {
		return nil, firstEr
	}
	n := float64(echoes.Load())
	return []float64{
		n / elapsed.Seconds(),
		n * echoSize / elapsed.Seconds() / 1e6,
		float64(firstEchoes) / float64(time.Millisecond),
	}, nil
}

// msgAt is message k of stream i: a slice of the pattern that differs
// between streams and messages.
func msgAt(i, k int) []byte {
	off := (i*7919 + k*echoSize) % (len(pattern) - echoSize)
	return pattern[off : off+echoSize]
}

// runBulkPing sends bulk data on one stream while another echoes 64-byte
// pings, for p.dur. The server checks the bulk bytes and replies with their
// count; every ping's echo is compared with what was sent.
func runBulkPing(ctx context.Context, dial dialFunc, p phase) ([]float64, error) {
	deadline := time.Now().Add(p.dur + ioSlack)
	bulk, err := openTagged(ctx, dial, tagSink, deadline)
	if err != nil {
		return nil, err
	}
	defer bulk.Close()
	ping, err := openTagged(ctx, dial, tagEcho, deadline)
	if err != nil {
		return nil, err
	}
	defer ping.Close()
	// Warm up the ping stream before the bulk starts.
	out, in := make([]byte, pingSize), make([]byte, pingSize)
	for k := range 10 {
		if err := pingOnce(ping, k, out, in); err != nil {
			return nil, err
		}
	}

	start := time.Now()
	end := start.Add(p.dur)
	var (
		sent, verified int64
		bulkErr        error
		bulkTime       time.Duration
		wg             sync.WaitGroup
	)
	wg.Go(func() {
		defer func() { bulkTime = time.Since(start) }()
		for time.Now().Before(end) && ctx.Err() == nil {
			off := sent % int64(len(pattern))
			n, err := bulk.Write(pattern[off : off+bulkWrite])
			sent += int64(n)
			p.count.Add(int64(n))
			if err != nil {
				bulkErr = err
				return
			}
		}
		if bulkErr = bulk.(closeWriter).CloseWrite(); bulkErr != nil {
			return
		}
		var reply [8]byte
		if _, err := io.ReadFull(bulk, reply[:]); err != nil {
			bulkErr = fmt.Errorf("reading the count of bulk bytes: %w", errors.Join(err, errClosedEarly))
			return
		}
		verified = int64(binary.BigEndian.Uint64(reply[:]))
	})
	var lat []time.Duration
	for k := 10; time.Now().Before(end) && ctx.Err() == nil; k++ {
		t := time.Now()
		if err = pingOnce(ping, k, out, in); err != nil {
			break
		}
		lat = append(lat, time.Since(t))
	}
	wg.Wait()
	if err != nil {
		return nil, fmt.Errorf("ping: %w", err)
	}
	if bulkErr != nil {
		return nil, fmt.Errorf("bulk: %w", bulkErr)
	}
	if verified != sent {
		return nil, fmt.Errorf("bulk: the server checked %d bytes of %d sent", verified, sent)
	}
	if len(lat) == 0 {
		return nil, errors.New("ping: no echo within the time")
	}
	slices.Sort(lat)
	return []float64{
		float64(verified) / bulkTime.Seconds() / 1e6,
		micros(percentile(lat, 0.50)),
		micros(percentile(lat, 0.99)),
	}, nil
}

// pingOnce sends ping k and checks its echo.
func pingOnce(c net.Conn, k int, out, in []byte) error {
	copy(out, pattern[k%1024:])
	binary.BigEndian.PutUint64(out, uint64(k))
	if _, err := c.Write(out); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, in); err != nil {
		return err
	}
	if !bytes.Equal(in, out) {
		return fmt.Errorf("echo of ping %d differs from what was sent", k)
	}
	return nil
}

// runOpenEchoClose opens a stream (raw TCP: a connection), echoes 64
// bytes, reads the server's close and closes, one after another until the
// time is up.
func runOpenEchoClose(ctx context.Context, dial dialFunc, p phase) ([]float64, error) {
	msg := make([]byte, 1+oneShotSize)
	msg[0] = tagOneShot
	in := make([]byte, oneShotSize+1)
	var lat []time.Duration
	start := time.Now()
	end := start.Add(p.dur)
	deadline := end.Add(ioSlack)
	for time.Now().Before(end) && ctx.Err() == nil && !(p.raw && len(lat) >= maxTCPOpen) {
		t := time.Now()
		k := len(lat)
		copy(msg[1:], pattern[k%1024:])
		binary.BigEndian.PutUint64(msg[1:], uint64(k))
		c, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		c.SetDeadline(deadline)
		_, err = c.Write(msg)
		if err == nil {
			// The echo, then EOF: the server closed.
			var n int
			n, err = io.ReadFull(c, in)
			if errors.Is(err, io.ErrUnexpectedEOF) && n == oneShotSize {
				err = nil
			} else if err == nil {
				err = errors.New("server sent more than the echo")
			}
			if err == nil && !bytes.Equal(in[:oneShotSize], msg[1:]) {
				err = errors.New("echo differs from what was sent")
			}
		}
		c.Close()
		if err != nil {
			return nil, fmt.Errorf("op %d: %w", k, err)
		}
		lat = append(lat, time.Since(t))
		p.count.Add(1)
	}
	elapsed := time.Since(start)
	if len(lat) == 0 {
		return nil, errors.New("no operation completed within the time")
	}
	n := float64(len(lat))
	slices.Sort(lat)
	return []float64{n / elapsed.Seconds(), micros(percentile(lat, 0.50))}, nil
}

// percentile returns the q-quantile of sorted.
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := min(int(q*float64(len(sorted))), len(sorted)-1)
	return sorted[i]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

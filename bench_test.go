package tcpchan

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"runtime"
	"runtime/trace"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Every benchmark here runs over real TCP loopback with a raw TCP baseline
// beside it (sub-benchmark "tcp"), so ratios come from one run:
//
//	go test -run '^$' -bench . -benchtime 2s -count 5 . | tee new.txt
//
// The cross-implementation comparison (yamux, smux, go-yamux) lives in the
// nested module ./benchmarks.

// benchPair returns two connected ends: raw TCP, or streams of one tcpchan
// session over TCP.
func benchPair(b *testing.B, kind string) (net.Conn, net.Conn) {
	b.Helper()
	return tunedPair(b, kind, nil)
}

// tunedPair is benchPair with tune, if not nil, applied to both ends of
// the TCP connection before anything is sent.
func tunedPair(b *testing.B, kind string, tune func(*testing.B, net.Conn)) (net.Conn, net.Conn) {
	b.Helper()
	c1, c2 := tunedConnPair(b, tune)
	if kind == "tcp" {
		b.Cleanup(func() { c1.Close(); c2.Close() })
		return c1, c2
	}
	client, server := sessionPair(b, c1, c2, nil, nil)
	return streamPair(b, client, server)
}

// tunedConnPair returns the ends of a TCP connection on loopback, with
// tune, if not nil, applied to both.
func tunedConnPair(b *testing.B, tune func(*testing.B, net.Conn)) (net.Conn, net.Conn) {
	b.Helper()
	c1, c2 := tcpConnPair(b)
	if tune != nil {
		tune(b, c1)
		tune(b, c2)
	}
	return c1, c2
}

var kinds = []string{"tcp", "tcpchan"}

// twoPairs returns two pairs of connected ends: two raw TCP connections,
// or two streams of one tcpchan session over TCP, cfg at both ends; tune,
// if not nil, is applied to both ends of each TCP connection first.
func twoPairs(b *testing.B, kind string, cfg *Config, tune func(*testing.B, net.Conn)) (a1, a2, b1, b2 net.Conn) {
	b.Helper()
	if kind == "tcp" {
		a1, a2 = tunedPair(b, "tcp", tune)
		b1, b2 = tunedPair(b, "tcp", tune)
		return a1, a2, b1, b2
	}
	c1, c2 := tunedConnPair(b, tune)
	client, server := sessionPair(b, c1, c2, cfg, cfg)
	a1, a2 = streamPair(b, client, server)
	b1, b2 = streamPair(b, client, server)
	return a1, a2, b1, b2
}

// BenchmarkBulk measures one stream's throughput with the reader
// discarding, for several write sizes.
func BenchmarkBulk(b *testing.B) {
	for _, size := range []int{1 << 10, 32 << 10, 256 << 10} {
		for _, kind := range kinds {
			b.Run(fmt.Sprintf("write=%dKiB/%s", size>>10, kind), func(b *testing.B) {
				w, r := benchPair(b, kind)
				benchTransfer(b, w, r, size)
			})
		}
	}
}

// BenchmarkBulkBesideIdle is BenchmarkBulk's 32 KiB writes with another
// stream open beside the bulk one, quiet since one 64-byte echo longer ago
// than activeSpan, as a pooled keep-alive connection or a control stream
// is. The baseline is a TCP connection with an idle one beside it.
func BenchmarkBulkBesideIdle(b *testing.B) {
	for _, kind := range kinds {
		b.Run(kind, func(b *testing.B) {
			w, r, idle, idlePeer := twoPairs(b, kind, nil, nil)
			msg := make([]byte, 64)
			if _, err := idle.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(idlePeer, msg); err != nil {
				b.Fatal(err)
			}
			time.Sleep(time.Duration(activeSpan) + 10*time.Millisecond)
			benchTransfer(b, w, r, 32<<10)
		})
	}
}

// BenchmarkBulkBesideReading is BenchmarkBulk's 32 KiB writes with another
// stream open beside the bulk one, silent, with nobody reading it (quiet)
// or with a Read waiting on it at the receiving end (reading), as a server
// waits for a keep-alive connection's next request. Windows stay at
// InitialStreamWindow (MaxStreamWindow is set to it), as they do while
// another stream has been busy within activeSpan; the baseline is a TCP
// connection with an idle one beside it.
func BenchmarkBulkBesideReading(b *testing.B) {
	for _, mode := range []string{"quiet", "reading"} {
		for _, kind := range kinds {
			b.Run(mode+"/"+kind, func(b *testing.B) {
				cfg := &Config{MaxStreamWindow: DefaultConfig().InitialStreamWindow}
				w, r, idle, idlePeer := twoPairs(b, kind, cfg, nil)
				if mode == "reading" {
					done := make(chan struct{})
					go func() {
						defer close(done)
						idlePeer.Read(make([]byte, 64))
					}()
					// The Read ends when the pair is closed, before
					// the sessions are.
					b.Cleanup(func() { idle.Close(); idlePeer.Close(); <-done })
				}
				benchTransfer(b, w, r, 32<<10)
			})
		}
	}
}

// BenchmarkBulkBothWays runs two bulk transfers at once in opposite
// directions, 32 KiB writes each: one stream uploads from the client while
// another downloads to it, so each end reads one stream's data while it
// waits for the other's credit. MB/s counts both directions. The baseline
// is two TCP connections.
func BenchmarkBulkBothWays(b *testing.B) {
	for _, kind := range kinds {
		b.Run(kind, func(b *testing.B) {
			up, upPeer, down, downPeer := twoPairs(b, kind, nil, nil)
			const size = 32 << 10
			b.SetBytes(2 * size)
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			for _, pair := range [][2]net.Conn{{up, upPeer}, {downPeer, down}} {
				w, r := pair[0], pair[1]
				wg.Go(func() {
					if n, _ := io.CopyBuffer(io.Discard, r, make([]byte, 64<<10)); n != int64(size)*int64(b.N) {
						b.Errorf("reader got %d bytes, want %d", n, int64(size)*int64(b.N))
					}
				})
				wg.Go(func() {
					buf := make([]byte, size)
					for range b.N {
						if _, err := w.Write(buf); err != nil {
							b.Error(err)
							break
						}
					}
					closeWrite(w)
				})
			}
			wg.Wait()
		})
	}
}

// benchTransfer writes b.N writes of size bytes to w, then CloseWrite,
// while r's peer reads them all and discards them.
func benchTransfer(b *testing.B, w, r net.Conn, size int) {
	done := make(chan int64)
	go func() {
		n, _ := io.CopyBuffer(io.Discard, r, make([]byte, 64<<10))
		done <- n
	}()
	buf := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := w.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	closeWrite(w)
	if n := <-done; n != int64(size)*int64(b.N) {
		b.Fatalf("reader got %d bytes, want %d", n, int64(size)*int64(b.N))
	}
}

func closeWrite(c net.Conn) {
	c.(interface{ CloseWrite() error }).CloseWrite()
}

// BenchmarkPingPong measures the round trip of a 64-byte echo on an open
// stream; ns/op is the round-trip time.
func BenchmarkPingPong(b *testing.B) {
	for _, kind := range kinds {
		b.Run(kind, func(b *testing.B) {
			c, s := benchPair(b, kind)
			go echo64(s)
			buf := make([]byte, 64)
			b.SetBytes(64)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			c.Close()
		})
	}
}

// echo64 echoes 64-byte messages on c until a Read or Write fails.
func echo64(c net.Conn) {
	buf := make([]byte, 64)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		if trace.IsEnabled() { // for benchmarks/pingtrace
			trace.Log(context.Background(), "echo", "got")
		}
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// BenchmarkOpenEchoClose opens a stream, echoes 64 bytes and closes it, on
// a session and through a Dialer; the baseline opens a new TCP connection
// per operation.
func BenchmarkOpenEchoClose(b *testing.B) {
	b.Run("tcp", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		defer func() {
			ln.Close()
			wg.Wait()
		}()
		wg.Go(func() { serveEchoOnce(ln) })
		benchOpenEchoClose(b, func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) })
	})
	b.Run("tcpchan", func(b *testing.B) {
		client, server := tcpSessions(b, nil, nil)
		go serveEchoOnce(server) // a Session is a net.Listener; ends with it
		benchOpenEchoClose(b, client.Dial)
	})
	// Through a Dialer's pooled session, as http.Transport dials: the
	// pool's bookkeeping on top of the stream's.
	b.Run("tcpchan-dialer", func(b *testing.B) {
		ln, err := Listen("tcp", "127.0.0.1:0", nil)
		if err != nil {
			b.Fatal(err)
		}
		shutdownListener(b, ln)
		go serveEchoOnce(ln)
		d := &Dialer{}
		defer d.Close()
		addr := ln.Addr().String()
		benchOpenEchoClose(b, func() (net.Conn, error) { return d.Dial("tcp", addr) })
	})
}

// serveEchoOnce answers each connection ln accepts with one 64-byte echo,
// until ln is closed.
func serveEchoOnce(ln net.Listener) {
	buf := make([]byte, 64)
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if _, err := io.ReadFull(c, buf); err == nil {
			c.Write(buf)
		}
		c.Close()
	}
}

// benchOpenEchoClose times open, one 64-byte echo, close.
func benchOpenEchoClose(b *testing.B, open func() (net.Conn, error)) {
	buf := make([]byte, 64)
	b.SetBytes(64)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c, err := open()
		if err != nil {
			b.Fatal(err)
		}
		c.Write(buf)
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkWriteRead is steady-state Write and Read of 1 KiB on an open
// stream: the target is 0 allocations per operation.
func BenchmarkWriteRead(b *testing.B) {
	for _, kind := range kinds {
		b.Run(kind, func(b *testing.B) {
			w, r := benchPair(b, kind)
			buf := make([]byte, 1024)
			rbuf := make([]byte, 1024)
			b.SetBytes(1024)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := w.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(r, rbuf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkIdleStreams opens 10,000 streams in one session, each after one
// small echo, and reports the heap bytes and goroutines per stream per end.
// The baseline opens as many TCP connections, each after one echo, or as
// many as half the open-file limit allows with some to spare (two
// descriptors per connection; "conns" reports the count): heap only, the
// kernel's socket memory is not in it.
func BenchmarkIdleStreams(b *testing.B) {
	const streams = 10000
	b.Run("tcp", func(b *testing.B) {
		n := streams
		if lim := openFileLimit(); lim > 0 {
			n = min(n, (lim-500)/2)
		}
		if n < 1000 {
			b.Skipf("the open-file limit (%d) allows too few connections", openFileLimit())
		}
		for range b.N {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			measureIdle(b, n, func() (open func() (net.Conn, error), serve func(func(net.Conn)), stop func()) {
				return func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) },
					func(keep func(net.Conn)) {
						for {
							c, err := ln.Accept()
							if err != nil {
								return
							}
							keep(c)
						}
					},
					func() { ln.Close() }
			})
			b.ReportMetric(float64(n), "conns")
		}
	})
	b.Run("tcpchan", func(b *testing.B) {
		for range b.N {
			cfg := &Config{MaxIncomingStreams: streams, AcceptBacklog: streams}
			client, server := tcpSessions(b, cfg, cfg)
			measureIdle(b, streams, func() (func() (net.Conn, error), func(func(net.Conn)), func()) {
				return client.Dial, func(keep func(net.Conn)) {
					for {
						st, err := server.Accept()
						if err != nil {
							return
						}
						keep(st)
					}
				}, func() {}
			})
		}
	})
}

// measureIdle opens n connections with the open function that setUp
// returns, each after one 64-byte echo that serve's connections answer,
// and reports the heap bytes and goroutines they keep per connection per
// end. Everything it opened is closed, and stop is called, before it
// returns.
func measureIdle(b *testing.B, n int, setUp func() (open func() (net.Conn, error), serve func(keep func(net.Conn)), stop func())) {
	open, serve, stop := setUp()
	accepted := make(chan net.Conn, n)
	go func() { // ends with the listener or session (stop, or the session's cleanup)
		buf := make([]byte, 64)
		serve(func(c net.Conn) {
			io.ReadFull(c, buf)
			c.Write(buf)
			accepted <- c
		})
	}()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		stop()
	}()
	// Allocated before the count: the connections' own memory is measured.
	opened := make([]net.Conn, 0, n)
	kept := make([]net.Conn, 0, n)
	buf := make([]byte, 64)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutinesBefore := runtime.NumGoroutine()
	for range n {
		c, err := open()
		if err != nil {
			b.Fatal(err)
		}
		opened = append(opened, c)
		c.Write(buf)
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
	for range n {
		kept = append(kept, <-accepted)
	}
	time.Sleep(10 * time.Millisecond) // let window updates settle
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n)/2, "heapB/stream/end")
	b.ReportMetric(float64(runtime.NumGoroutine()-goroutinesBefore)/float64(n), "goroutines/stream")
	conns = append(opened, kept...)
}

// BenchmarkBulkConcurrent runs 16 streams at once, each sending the same
// amount; it reports the aggregate throughput and how much later the
// slowest stream finished than the fastest (1.0 is perfectly fair). The
// baseline is 16 TCP connections.
func BenchmarkBulkConcurrent(b *testing.B) {
	const streams = 16
	const size = 32 << 10
	for _, kind := range kinds {
		b.Run(kind, func(b *testing.B) {
			var client, server *Session
			if kind == "tcpchan" {
				client, server = tcpSessions(b, nil, nil)
			}
			pairs := make([][2]net.Conn, streams)
			for i := range pairs {
				if kind == "tcp" {
					c1, c2 := tcpConnPair(b)
					b.Cleanup(func() { c1.Close(); c2.Close() })
					pairs[i] = [2]net.Conn{c1, c2}
				} else {
					c1, c2 := streamPair(b, client, server)
					pairs[i] = [2]net.Conn{c1, c2}
				}
			}
			per := max(b.N/streams, 1)
			b.SetBytes(size)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			finish := make([]time.Duration, streams)
			var wg sync.WaitGroup
			for i, p := range pairs {
				wg.Add(2)
				go func() {
					defer wg.Done()
					buf := make([]byte, size)
					for range per {
						if _, err := p[0].Write(buf); err != nil {
							b.Error(err)
							return
						}
					}
					closeWrite(p[0])
				}()
				go func() {
					defer wg.Done()
					n, _ := io.CopyBuffer(io.Discard, p[1], make([]byte, 64<<10))
					finish[i] = time.Since(start)
					if n != int64(per)*size {
						b.Errorf("stream %d: got %d bytes, want %d", i, n, int64(per)*size)
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(slices.Max(finish))/float64(slices.Min(finish)), "slowest/fastest")
		})
	}
}

// BenchmarkPingPongUnderBulk measures 64-byte echoes on one stream while
// another stream of the same session (for the baseline, another TCP
// connection) carries a bulk transfer: p50 and p99 round trips, and the
// bulk throughput meanwhile.
//
// The tcpchan cases vary the stream window (256 KiB is the default, 1 MiB
// what a stream alone in its session grows to on a short link): the ping
// waits behind at most one window of the bulk stream's frames, so its tail
// latency follows the window, while past 512 KiB the bulk rate rises little.
// On Linux it also reports how many bytes the ping's receiving socket held
// unread just before each ping was written (ahead-mean-KiB, ahead-p99-KiB):
// frames the ping arrives behind, which no scheduling at the sender can
// reorder (a lower bound: frames still in the sender's socket or read but
// not yet handled are not counted). Raw TCP's ping has a connection of its
// own. Reading it is a system call per ping, outside the timed round trip
// but within ns/op and the bulk rate's span.
//
// Run with -trace (one case per trace), it logs each round trip's steps,
// which benchmarks/pingtrace turns into where the round trips went.
func BenchmarkPingPongUnderBulk(b *testing.B) {
	for _, kib := range []int{0, 64, 128, 256, 512, 1024, 2048} {
		b.Run(underBulkName(kib), func(b *testing.B) { pingUnderBulk(b, kib, 0, nil) })
	}
}

// BenchmarkPacedPingUnderBulk is BenchmarkPingPongUnderBulk with a sleep
// of a millisecond before each echo instead of echoes back to back, and
// the bulk rate measured first for 200 ms with the ping stream quiet
// (quiet-bulk-MB/s), from 100 ms after its SYN. With the echoes' own work
// small, it shows what the window a bulk stream keeps beside an active
// stream costs it, and what a larger one costs the echoes: the default
// 256 KiB, or 1 MiB, which a stream alone (or beside quiet ones) gets on a
// short link.
func BenchmarkPacedPingUnderBulk(b *testing.B) {
	for _, kib := range []int{0, 256, 1024} {
		b.Run(underBulkName(kib), func(b *testing.B) { pingUnderBulk(b, kib, time.Millisecond, nil) })
	}
}

// underBulkName names pingUnderBulk's case for a stream window of kib KiB,
// 0 meaning raw TCP.
func underBulkName(kib int) string {
	if kib == 0 {
		return "tcp"
	}
	return fmt.Sprintf("tcpchan/window=%dKiB", kib)
}

// pingUnderBulk runs b.N echoes of 64 bytes, one every pace (0: back to
// back), beside a bulk transfer, and reports their p50 and p99 and the bulk
// rate meanwhile: on two streams of one session whose InitialStreamWindow
// is kib KiB, or for kib 0 on two TCP connections. With a pace, the bulk
// rate is also measured before the first echo, for 200 ms, once the ping
// stream counts as quiet. tune, if not nil, is applied to both ends of each
// TCP connection first.
func pingUnderBulk(b *testing.B, kib int, pace time.Duration, tune func(*testing.B, net.Conn)) {
	kind, cfg := "tcpchan", &Config{InitialStreamWindow: kib << 10}
	if kib == 0 {
		kind = "tcp"
	}
	ping, echo, bulkW, bulkR := twoPairs(b, kind, cfg, tune)
	go echo64(echo)
	stop := make(chan struct{})
	var bulkNow atomic.Int64 // bytes the bulk reader has received
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			select {
			case <-stop:
				closeWrite(bulkW)
				return
			default:
			}
			if _, err := bulkW.Write(buf); err != nil {
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		io.CopyBuffer(countWriter{&bulkNow}, bulkR, make([]byte, 64<<10))
	}()
	time.Sleep(20 * time.Millisecond) // let the bulk stream fill its window
	var quietRate float64             // reported at the end: ResetTimer drops metrics
	if pace > 0 {
		// The ping stream's SYN counts as data received: until activeSpan
		// after it, the bulk stream keeps the window it has beside an
		// active stream.
		time.Sleep(time.Duration(activeSpan) + 30*time.Millisecond)
		start, bulk0 := time.Now(), bulkNow.Load()
		time.Sleep(200 * time.Millisecond)
		quietRate = float64(bulkNow.Load()-bulk0) / time.Since(start).Seconds() / 1e6
	}
	lat := make([]time.Duration, 0, b.N)
	buf := make([]byte, 64)
	ahead := receiveQueueProbe(echo)
	queued := make([]int, 0, b.N)
	// step logs a round trip's step for benchmarks/pingtrace, when tracing.
	traced := trace.IsEnabled()
	step := func(msg string) {
		if traced {
			trace.Log(context.Background(), "ping", msg)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	bulk0 := bulkNow.Load()
	for range b.N {
		if pace > 0 {
			time.Sleep(pace)
		}
		if ahead != nil {
			queued = append(queued, ahead())
		}
		t := time.Now()
		step("start")
		if _, err := ping.Write(buf); err != nil {
			b.Fatal(err)
		}
		step("written")
		if _, err := io.ReadFull(ping, buf); err != nil {
			b.Fatal(err)
		}
		step("end")
		lat = append(lat, time.Since(t))
	}
	elapsed := time.Since(start)
	bulkIn := bulkNow.Load() - bulk0
	b.StopTimer()
	close(stop)
	wg.Wait()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(bulkIn)/elapsed.Seconds()/1e6, "bulk-MB/s")
	if pace > 0 {
		b.ReportMetric(quietRate, "quiet-bulk-MB/s")
	}
	if len(queued) > 0 {
		total := 0
		for _, q := range queued {
			total += q
		}
		slices.Sort(queued)
		b.ReportMetric(float64(total)/float64(len(queued))/1024, "ahead-mean-KiB")
		b.ReportMetric(float64(queued[len(queued)*99/100])/1024, "ahead-p99-KiB")
	}
	ping.Close()
}

// receiveQueueProbe returns a function that reports how many bytes the
// socket under echo (the ping's receiving end: its TCP connection, or its
// session's) holds unread, which a ping written then arrives behind; nil
// where that is not read (off Linux).
func receiveQueueProbe(echo net.Conn) func() int {
	conn := echo
	if st, ok := echo.(*Stream); ok {
		if conn, ok = st.sess.conn.(net.Conn); !ok {
			return nil
		}
	}
	return newBacklogProbe(exposedConn{conn})
}

// BenchmarkTLSStartupRTT starts a session over TLS on loopback and at once
// 16 streams that each send 4 MiB, as a receiving session's start-up pings
// meet a bulk transfer, and reports the fraction of receiving and sending
// sessions whose minimum round trip ended at minAutotuneRTT or more, which
// would take loopback for a long link:
//
//	go test -run '^$' -bench TLSStartupRTT -benchtime 30x .
func BenchmarkTLSStartupRTT(b *testing.B) {
	serverTLS, clientTLS := testTLSConfigs(b)
	const streams, size = 16, 4 << 20
	b.SetBytes(streams * size)
	b.ReportAllocs()
	var longRecv, longSend int
	for range b.N {
		c1, c2 := tcpConnPair(b)
		client, server := sessionPair(b, tls.Client(c1, clientTLS), tls.Server(c2, serverTLS), nil, nil)
		var wg sync.WaitGroup
		for range streams {
			wg.Go(func() {
				st, err := client.OpenStream()
				if err != nil {
					b.Error(err)
					return
				}
				defer st.Close()
				buf := make([]byte, 32<<10)
				for n := 0; n < size; n += len(buf) {
					if _, err := st.Write(buf); err != nil {
						b.Error(err)
						return
					}
				}
			})
			wg.Go(func() {
				st, err := server.AcceptStream()
				if err != nil {
					b.Error(err)
					return
				}
				defer st.Close()
				if n, err := io.Copy(io.Discard, st); err != nil || n != size {
					b.Errorf("received %d bytes (%v), want %d", n, err, size)
				}
			})
		}
		wg.Wait()
		if server.minRTT() >= minAutotuneRTT {
			longRecv++
		}
		if client.minRTT() >= minAutotuneRTT {
			longSend++
		}
		client.Close()
		server.Close()
	}
	b.ReportMetric(float64(longRecv)/float64(b.N), "long-recv/op")
	b.ReportMetric(float64(longSend)/float64(b.N), "long-send/op")
}

// countWriter discards what it is given and counts it.
type countWriter struct{ n *atomic.Int64 }

func (w countWriter) Write(p []byte) (int, error) { w.n.Add(int64(len(p))); return len(p), nil }

// BenchmarkTinyFramesSmallReads: the peer sends DATA in frames of 1 byte
// (a hostile peer, written by hand here, or one that frames every byte)
// and the application reads 4 bytes at a time; ns/op is per byte (B/op
// counts the peer's frames, built by the benchmark). The baseline reads
// raw TCP 4 bytes at a time. A Read holding the read token
// looks at the frames buffered behind its own (othersBuffered); that look
// stops after maxOwnFramesWalked headers, where it used to walk the whole
// read buffer, about 5,000 such frames, after every Read.
func BenchmarkTinyFramesSmallReads(b *testing.B) {
	// Rounds stay within the stream window less the credit a reader may
	// hold back (three quarters of it), so the peer never overruns it.
	const round = 60000
	b.Run("tcp", func(b *testing.B) {
		w, r := benchPair(b, "tcp")
		go func() {
			buf := make([]byte, 16<<10)
			for sent := 0; sent < b.N; sent += len(buf) {
				if _, err := w.Write(buf[:min(len(buf), b.N-sent)]); err != nil {
					return
				}
			}
		}()
		readSmall(b, r, 0, nil)
	})
	b.Run("tcpchan", func(b *testing.B) {
		victim, a := newAttack(b, nil, true)
		a.drain()
		st := a.openAccepted(b, victim, 1)
		if _, err := st.Read(make([]byte, 1)); err != nil { // the SYN's byte
			b.Fatal(err)
		}
		frame := dataFrame(0, 1, []byte{7})
		next := make(chan struct{}, 1)
		go func() {
			for sent := 0; sent < b.N; sent += round {
				a.send(bytes.Repeat(frame, min(round, b.N-sent)))
				if _, ok := <-next; !ok {
					return
				}
			}
		}()
		defer close(next)
		readSmall(b, st, round, func() { next <- struct{}{} })
	})
}

// readSmall reads b.N bytes from r 4 at a time, timing it, and calls
// roundDone, if not nil, after every round bytes.
func readSmall(b *testing.B, r io.Reader, round int, roundDone func()) {
	buf := make([]byte, 4)
	b.SetBytes(1)
	b.ReportAllocs()
	b.ResetTimer()
	for got := 0; got < b.N; {
		n, err := r.Read(buf[:min(len(buf), b.N-got)])
		if err != nil {
			b.Fatal(err)
		}
		if roundDone != nil && (got+n)/round > got/round {
			roundDone()
		}
		got += n
	}
}

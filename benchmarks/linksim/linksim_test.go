package linksim

import (
	"bytes"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// echoServer accepts connections and echoes until EOF, then half-closes.
func echoServer(t *testing.T) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String(), func() { ln.Close(); wg.Wait() }
}

func newLink(t *testing.T, target string, cfg Config) *Link {
	t.Helper()
	l, err := New(target, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestRTT(t *testing.T) {
	addr, stop := echoServer(t)
	defer stop()
	cfg := Config{Delay: 20 * time.Millisecond, Rate: 10e6}
	l := newLink(t, addr, cfg)
	defer l.Close()

	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 1)
	// First exchange includes the emulated handshake.
	start := time.Now()
	if _, err := c.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	first := time.Since(start)
	if first < 2*cfg.RTT() {
		t.Errorf("first echo took %v, want >= 2 RTT (%v)", first, 2*cfg.RTT())
	}
	var min time.Duration
	for i := 0; i < 5; i++ {
		start := time.Now()
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		if buf[0] != byte(i) {
			t.Fatalf("echo got %d want %d", buf[0], i)
		}
		d := time.Since(start)
		if d < cfg.RTT() {
			t.Errorf("echo %d took %v, less than RTT %v", i, d, cfg.RTT())
		}
		if min == 0 || d < min {
			min = d
		}
	}
	// Generous: a noisy 2-core machine may add scheduling delay.
	if min > cfg.RTT()+150*time.Millisecond {
		t.Errorf("best echo %v, far above RTT %v", min, cfg.RTT())
	}
	t.Logf("first echo %v, best echo %v (RTT %v)", first, min, cfg.RTT())
}

func TestFirstByteDelay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := Config{Delay: 25 * time.Millisecond}
	l := newLink(t, ln.Addr().String(), cfg)
	defer l.Close()

	got := make(chan time.Time, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(got)
			return
		}
		defer c.Close()
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil {
			close(got)
			return
		}
		got <- time.Now()
	}()
	start := time.Now()
	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{7}); err != nil {
		t.Fatal(err)
	}
	at, ok := <-got
	if !ok {
		t.Fatal("server did not receive the byte")
	}
	d := at.Sub(start)
	want := cfg.RTT() + cfg.Delay // 1.5 RTT
	if d < want {
		t.Errorf("first byte after %v, want >= %v", d, want)
	}
	if d > want+time.Second {
		t.Errorf("first byte after %v, far above %v", d, want)
	}
	t.Logf("first byte after %v (1.5 RTT = %v)", d, want)
}

func TestRateCap(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const rate = 20e6
	const total = 8 << 20
	cfg := Config{Delay: 2 * time.Millisecond, Rate: rate, NoHandshakeDelay: true}
	l := newLink(t, ln.Addr().String(), cfg)
	defer l.Close()

	type res struct {
		n   int64
		sum byte
		at  time.Time
	}
	done := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(done)
			return
		}
		defer c.Close()
		buf := make([]byte, 64<<10)
		var r res
		for {
			m, err := c.Read(buf)
			for _, b := range buf[:m] {
				r.sum ^= b
			}
			r.n += int64(m)
			if err != nil {
				break
			}
		}
		r.at = time.Now()
		done <- r
	}()
	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, total)
	var sum byte
	for i := range data {
		data[i] = byte(i * 7)
		sum ^= data[i]
	}
	start := time.Now()
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	r, ok := <-done
	if !ok {
		t.Fatal("server failed")
	}
	if r.n != total || r.sum != sum {
		t.Fatalf("received %d bytes (xor %x), want %d (xor %x)", r.n, r.sum, total, sum)
	}
	el := r.at.Sub(start)
	got := float64(total) / el.Seconds()
	if got > rate*1.05 {
		t.Errorf("throughput %.1f MB/s exceeds cap %.1f MB/s", got/1e6, rate/1e6)
	}
	if got < rate/4 {
		t.Errorf("throughput %.1f MB/s far below cap %.1f MB/s", got/1e6, rate/1e6)
	}
	t.Logf("throughput %.1f MB/s (cap %.1f MB/s)", got/1e6, rate/1e6)
}

// TestWindowLimit checks that an application that waits for an
// acknowledgement every W bytes gets about W/RTT, i.e. the link does not
// acknowledge on behalf of the far end.
func TestWindowLimit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const window = 64 << 10
	const rounds = 10
	cfg := Config{Delay: 10 * time.Millisecond, Rate: 100e6, NoHandshakeDelay: true}
	l := newLink(t, ln.Addr().String(), cfg)
	defer l.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, window)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write([]byte{1}); err != nil {
				return
			}
		}
	}()
	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, window)
	ack := make([]byte, 1)
	start := time.Now()
	for i := 0; i < rounds; i++ {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, ack); err != nil {
			t.Fatal(err)
		}
	}
	el := time.Since(start)
	if el < rounds*cfg.RTT() {
		t.Errorf("%d windows took %v, want >= %v", rounds, el, rounds*cfg.RTT())
	}
	t.Logf("%d windows of %d KiB in %v (%.1f MB/s, W/RTT = %.1f MB/s)", rounds, window>>10, el,
		float64(rounds*window)/el.Seconds()/1e6, float64(window)/cfg.RTT().Seconds()/1e6)
}

// TestInFlightBound checks that a stalled receiver stops the proxy reading:
// the sender can only push the in-flight bound plus socket buffers.
func TestInFlightBound(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := Config{Delay: time.Millisecond, MaxInFlight: 256 << 10, NoHandshakeDelay: true}
	l := newLink(t, ln.Addr().String(), cfg)
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.(*net.TCPConn).SetReadBuffer(64 << 10)
			accepted <- c // never read
		}
	}()
	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetWriteBuffer(64 << 10)
	srv := <-accepted
	defer srv.Close()

	buf := make([]byte, 16<<10)
	var n int
	for n < 64<<20 {
		c.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		m, err := c.Write(buf)
		n += m
		if err != nil {
			break
		}
	}
	// In-flight bound + four kernel socket buffers (each up to ~2x the
	// requested size, plus loopback's generous accounting).
	max := cfg.MaxInFlight + 4<<20
	if n > max {
		t.Errorf("sender pushed %d bytes into a stalled link, want <= %d", n, max)
	}
	if n < cfg.MaxInFlight {
		t.Errorf("sender pushed only %d bytes, want >= in-flight bound %d", n, cfg.MaxInFlight)
	}
	t.Logf("sender pushed %d KiB before blocking (bound %d KiB)", n>>10, cfg.MaxInFlight>>10)
}

func TestHalfCloseAndIntegrity(t *testing.T) {
	addr, stop := echoServer(t)
	defer stop()
	l := newLink(t, addr, Config{Delay: time.Millisecond, Rate: 50e6})
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i % 251)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		c.(*net.TCPConn).CloseWrite()
		errc <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echo mismatch: got %d bytes want %d", len(got), len(data))
	}
}

func TestCloseNoLeak(t *testing.T) {
	addr, stop := echoServer(t)
	defer stop()
	before := runtime.NumGoroutine()
	l := newLink(t, addr, Config{Delay: 5 * time.Millisecond, Rate: 10e6})
	var conns []net.Conn
	for i := 0; i < 5; i++ {
		c, err := net.Dial("tcp", l.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		go c.Write(make([]byte, 1<<20)) // leave data in flight
	}
	time.Sleep(50 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		c.Close()
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= before {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("goroutines: %d before, %d after Close\n%s", before, n, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := net.DialTimeout("tcp", l.Addr(), time.Second); err == nil {
		t.Error("dial succeeded after Close")
	}
}

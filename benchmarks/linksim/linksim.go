// Package linksim is a user-space long-link simulator: a loopback TCP proxy
// that adds a fixed one-way delay in each direction, caps the rate per
// direction, bounds the bytes in flight per direction, and delays the start
// of every new connection by one round trip to emulate the TCP handshake.
//
// It exists because the benchmark machines have no kernel netem. It is not a
// faithful TCP model (no loss, no congestion control), but it gives the two
// properties the benchmarks care about: a sender whose window is W sees at
// most W/RTT, and a fresh TCP connection costs an extra round trip before
// its first byte reaches the peer.
package linksim

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Config describes the simulated link. The same settings apply to both
// directions independently.
type Config struct {
	// Delay is the one-way propagation delay (RTT = 2*Delay).
	Delay time.Duration
	// Rate caps each direction, in bytes per second. 0 means unlimited.
	Rate float64
	// MaxInFlight bounds the bytes the proxy has read from one side and not
	// yet written to the other, per direction. 0 means the bandwidth-delay
	// product Rate*RTT (or 4 MiB when Rate is 0). When the bound is reached
	// the proxy stops reading from the source socket, so the sender is
	// pushed back by TCP flow control.
	MaxInFlight int
	// SocketBuffer is the SO_RCVBUF/SO_SNDBUF size set on the proxy's own
	// sockets, so the kernel buffers do not add much hidden in-flight
	// capacity. 0 means 64 KiB; negative leaves the kernel defaults.
	SocketBuffer int
	// NoHandshakeDelay disables the one-RTT delay before a new connection
	// starts forwarding.
	NoHandshakeDelay bool
}

// RTT returns the configured round-trip time.
func (c Config) RTT() time.Duration { return 2 * c.Delay }

func (c Config) inFlight() int {
	if c.MaxInFlight > 0 {
		return c.MaxInFlight
	}
	if c.Rate > 0 {
		n := int(c.Rate * c.RTT().Seconds())
		if n < 64<<10 {
			n = 64 << 10
		}
		return n
	}
	return 4 << 20
}

func (c Config) sockBuf() int {
	if c.SocketBuffer == 0 {
		return 64 << 10
	}
	return c.SocketBuffer
}

// Link is a running simulated link.
type Link struct {
	cfg    Config
	target string
	ln     net.Listener
	done   chan struct{}
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	once  sync.Once
}

// New starts a proxy listening on 127.0.0.1:0 that forwards each accepted
// connection to target through the simulated link.
func New(target string, cfg Config) (*Link, error) {
	if cfg.Delay < 0 || cfg.Rate < 0 {
		return nil, errors.New("linksim: negative delay or rate")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &Link{
		cfg:    cfg,
		target: target,
		ln:     ln,
		done:   make(chan struct{}),
		conns:  make(map[net.Conn]struct{}),
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// Addr is the proxy's listening address; dial it instead of the target.
func (l *Link) Addr() string { return l.ln.Addr().String() }

// Config returns the link's configuration.
func (l *Link) Config() Config { return l.cfg }

// Close stops the listener, tears down every proxied connection and waits
// for all of the link's goroutines to exit.
func (l *Link) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.ln.Close()
		l.mu.Lock()
		for c := range l.conns {
			c.Close()
		}
		l.mu.Unlock()
	})
	l.wg.Wait()
	return err
}

func (l *Link) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.done:
		return false
	default:
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *Link) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

func (l *Link) setBufs(c net.Conn) {
	n := l.cfg.sockBuf()
	if n <= 0 {
		return
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetReadBuffer(n)
		tc.SetWriteBuffer(n)
	}
}

func (l *Link) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		l.setBufs(c)
		if !l.track(c) {
			c.Close()
			return
		}
		l.wg.Add(1)
		go l.handle(c)
	}
}

// sleepUntil waits until t or until the link is closed; it reports whether
// the link is still open.
func (l *Link) sleepUntil(t time.Time, timer *time.Timer) bool {
	d := time.Until(t)
	if d <= 0 {
		select {
		case <-l.done:
			return false
		default:
			return true
		}
	}
	timer.Reset(d)
	select {
	case <-timer.C:
		return true
	case <-l.done:
		if !timer.Stop() {
			<-timer.C
		}
		return false
	}
}

func (l *Link) handle(client net.Conn) {
	defer l.wg.Done()
	defer l.untrack(client)
	defer client.Close()

	// Handshake: the client's SYN, the SYN-ACK and the client's ACK cost a
	// round trip before the client's first data goes out; that data then
	// takes one more one-way delay to arrive (1.5 RTT after dial).
	if !l.cfg.NoHandshakeDelay && l.cfg.Delay > 0 {
		t := time.NewTimer(l.cfg.RTT())
		select {
		case <-t.C:
		case <-l.done:
			t.Stop()
			return
		}
	}
	server, err := net.Dial("tcp", l.target)
	if err != nil {
		return
	}
	l.setBufs(server)
	if !l.track(server) {
		server.Close()
		return
	}
	defer l.untrack(server)
	defer server.Close()

	var kill sync.Once
	killBoth := func() {
		kill.Do(func() {
			client.Close()
			server.Close()
		})
	}
	var pw sync.WaitGroup
	pw.Add(2)
	go func() { defer pw.Done(); l.pump(client, server, killBoth) }()
	go func() { defer pw.Done(); l.pump(server, client, killBoth) }()
	pw.Wait()
}

type chunk struct {
	b       []byte
	deliver time.Time
}

// pipe is one direction of one proxied connection.
type pipe struct {
	mu     sync.Mutex
	cond   *sync.Cond
	queue  []chunk
	queued int
	eof    bool // source finished cleanly
	dead   bool // tear down without flushing
}

func (p *pipe) kill() {
	p.mu.Lock()
	p.dead = true
	p.mu.Unlock()
	p.cond.Broadcast()
}

// pump moves bytes from src to dst through the simulated link. On a clean
// EOF from src it delivers what is queued and half-closes dst; on any error
// it calls abort, which closes both connections.
func (l *Link) pump(src, dst net.Conn, abort func()) {
	p := &pipe{}
	p.cond = sync.NewCond(&p.mu)
	limit := l.cfg.inFlight()

	// Writer: delivers chunks when their time has come.
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		timer := time.NewTimer(time.Hour)
		timer.Stop()
		for {
			p.mu.Lock()
			for len(p.queue) == 0 && !p.eof && !p.dead {
				p.cond.Wait()
			}
			if p.dead {
				p.mu.Unlock()
				return
			}
			if len(p.queue) == 0 { // eof and drained
				p.mu.Unlock()
				if cw, ok := dst.(interface{ CloseWrite() error }); ok {
					if cw.CloseWrite() != nil {
						abort()
					}
				} else {
					abort()
				}
				return
			}
			c := p.queue[0]
			p.mu.Unlock()

			if !l.sleepUntil(c.deliver, timer) {
				p.kill()
				return
			}
			if _, err := dst.Write(c.b); err != nil {
				p.kill()
				abort()
				return
			}
			p.mu.Lock()
			p.queue[0] = chunk{}
			p.queue = p.queue[1:]
			p.queued -= len(c.b)
			p.mu.Unlock()
			p.cond.Broadcast()
		}
	}()

	// Reader: takes bytes from src only while the in-flight bound allows.
	var lastDepart time.Time
	const maxRead = 64 << 10
	for {
		p.mu.Lock()
		for p.queued >= limit && !p.dead {
			p.cond.Wait()
		}
		if p.dead {
			p.mu.Unlock()
			break
		}
		n := limit - p.queued
		p.mu.Unlock()
		if n > maxRead {
			n = maxRead
		}
		buf := make([]byte, n)
		m, err := src.Read(buf)
		if m > 0 {
			now := time.Now()
			depart := now
			if lastDepart.After(depart) {
				depart = lastDepart
			}
			if l.cfg.Rate > 0 {
				depart = depart.Add(time.Duration(float64(m) / l.cfg.Rate * float64(time.Second)))
			}
			lastDepart = depart
			p.mu.Lock()
			p.queue = append(p.queue, chunk{b: buf[:m], deliver: depart.Add(l.cfg.Delay)})
			p.queued += m
			p.mu.Unlock()
			p.cond.Broadcast()
		}
		if err != nil {
			p.mu.Lock()
			if isEOF(err) {
				p.eof = true
			} else {
				p.dead = true
			}
			dead := p.dead
			p.mu.Unlock()
			p.cond.Broadcast()
			if dead {
				abort()
			}
			break
		}
	}
	<-writerDone
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }

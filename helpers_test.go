package tcpchan

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// closeAndWait closes s and fails t if its goroutines do not exit.
func closeAndWait(t testing.TB, s *Session) {
	t.Helper()
	s.Close()
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Errorf("session goroutines did not exit after Close")
	}
}

// dialClient dials address over TCP and starts a client session with the
// default Config on the connection, closed when the test ends.
func dialClient(t testing.TB, address string) *Session {
	t.Helper()
	conn, err := net.Dial("tcp", address)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Client(conn, nil)
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { closeAndWait(t, s) })
	return s
}

// tcpConnPair returns the two ends of a real TCP loopback connection.
func tcpConnPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	return connPair(t, "tcp", "127.0.0.1:0")
}

// connPair returns the two ends of a connection through a listener on
// network and address.
func connPair(t testing.TB, network, address string) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen(network, address)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		ch <- result{c, err}
	}()
	c1, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return c1, r.c
}

// goIO starts op (a Stream's Read or Write) on a buffer of n bytes; its
// error arrives on the channel.
func goIO(op func([]byte) (int, error), n int) <-chan error {
	res := make(chan error, 1)
	go func() {
		_, err := op(make([]byte, n))
		res <- err
	}()
	return res
}

// exposedConn exposes a connection with NetConn, as a wrapper such as
// *tls.Conn does, for the functions that look for the socket under one.
type exposedConn struct{ net.Conn }

func (c exposedConn) NetConn() net.Conn { return c.Conn }

// sessionPair returns a client and a server session over the given
// connection ends, closed (and checked for leaks) when the test ends.
func sessionPair(t testing.TB, c1, c2 net.Conn, ccfg, scfg *Config) (*Session, *Session) {
	t.Helper()
	client, err := Client(c1, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	server, err := Server(c2, scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		closeAndWait(t, client)
		closeAndWait(t, server)
	})
	return client, server
}

func tcpSessions(t testing.TB, ccfg, scfg *Config) (*Session, *Session) {
	c1, c2 := tcpConnPair(t)
	return sessionPair(t, c1, c2, ccfg, scfg)
}

func pipeSessions(t testing.TB, ccfg, scfg *Config) (*Session, *Session) {
	c1, c2 := net.Pipe()
	return sessionPair(t, c1, c2, ccfg, scfg)
}

// streamPair opens a stream from a and accepts it on b.
func streamPair(t testing.TB, a, b *Session) (*Stream, *Stream) {
	t.Helper()
	s1, err := a.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := b.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	return s1, s2
}

// forceShortLink makes the sessions take their link for a short one
// whatever loopback measures under load, once their start-up round-trip
// samples are in: a later sample would otherwise replace the forced one.
func forceShortLink(t *testing.T, sessions ...*Session) {
	t.Helper()
	for _, s := range sessions {
		waitFor(t, "the start-up RTT samples", func() bool { return s.startupPingsDone() })
		s.rtt.Store(1)
	}
}

// relayPair joins a client and a server end through a relay in this
// process, which reads each direction in chunks and, before passing a chunk
// on, calls hold with the direction and the time the chunk was read (to
// delay it, or hold it back), propagating half-closes the same way.
func relayPair(t *testing.T, hold func(toServer bool, readAt time.Time)) (clientEnd, serverEnd net.Conn) {
	t.Helper()
	c1, p1 := tcpConnPair(t) // c1: client side, p1: relay's end towards the client
	p2, c2 := tcpConnPair(t) // p2: relay's end towards the server, c2: server side
	pipe := func(dst, src net.Conn, toServer bool) {
		type chunk struct {
			at  time.Time
			b   []byte
			eof bool
		}
		ch := make(chan chunk, 4096)
		go func() {
			for c := range ch {
				hold(toServer, c.at)
				if c.eof {
					dst.(*net.TCPConn).CloseWrite()
					return
				}
				if _, err := dst.Write(c.b); err != nil {
					return
				}
			}
		}()
		go func() {
			defer close(ch)
			for {
				buf := make([]byte, 32<<10)
				n, err := src.Read(buf)
				if n > 0 {
					ch <- chunk{at: time.Now(), b: buf[:n]}
				}
				if err != nil {
					ch <- chunk{at: time.Now(), eof: true}
					return
				}
			}
		}()
	}
	pipe(p2, p1, true)
	pipe(p1, p2, false)
	t.Cleanup(func() { p1.Close(); p2.Close() })
	return c1, c2
}

// delayProxy relays between a client and a server end with a fixed one-way
// delay in each direction, half-closes delayed too, like a long link.
func delayProxy(t *testing.T, delay time.Duration) (clientEnd, serverEnd net.Conn) {
	t.Helper()
	return relayPair(t, func(_ bool, readAt time.Time) { time.Sleep(time.Until(readAt.Add(delay))) })
}

// throttledPair returns client and server ends joined by a proxy that
// passes client->server at full speed and server->client at about
// rate bytes per second (an asymmetric link: a slow downlink).
func throttledPair(t *testing.T, rate int) (clientEnd, serverEnd net.Conn) {
	c1, p1 := tcpConnPair(t)
	p2, c2 := tcpConnPair(t)
	go func() { io.Copy(p2, p1); p2.(*net.TCPConn).CloseWrite() }()
	go func() {
		buf := make([]byte, 4096)
		tick := time.Duration(int64(time.Second) * 4096 / int64(rate))
		for {
			n, err := p2.Read(buf)
			if n > 0 {
				if _, werr := p1.Write(buf[:n]); werr != nil {
					return
				}
				time.Sleep(tick)
			}
			if err != nil {
				p1.(*net.TCPConn).CloseWrite()
				return
			}
		}
	}()
	t.Cleanup(func() { p1.Close(); p2.Close() })
	return c1, c2
}

// gatedRelay holds the client-to-server direction of a relayPair while
// closed (a network that delays one direction), so that frames the two
// sides send cross on the wire deterministically.
type gatedRelay struct {
	mu     sync.Mutex
	cond   *sync.Cond
	closed bool
}

func (g *gatedRelay) hold() { g.mu.Lock(); g.closed = true; g.mu.Unlock() }
func (g *gatedRelay) release() {
	g.mu.Lock()
	g.closed = false
	g.cond.Broadcast()
	g.mu.Unlock()
}
func (g *gatedRelay) wait() {
	g.mu.Lock()
	for g.closed {
		g.cond.Wait()
	}
	g.mu.Unlock()
}

// gatedPair is a relayPair whose client-to-server direction g holds.
func gatedPair(t *testing.T) (clientEnd, serverEnd net.Conn, g *gatedRelay) {
	t.Helper()
	g = &gatedRelay{}
	g.cond = sync.NewCond(&g.mu)
	c1, c2 := relayPair(t, func(toServer bool, _ time.Time) {
		if toServer {
			g.wait()
		}
	})
	t.Cleanup(g.release) // before the relay's ends close: its writer may be held
	return c1, c2, g
}

// sessionCreditSpent starts sessions over TCP whose server has scfg with
// 1 MiB stream and session windows, and fills them with one stream that
// the server accepts and never reads: the client has no session credit
// left.
func sessionCreditSpent(t *testing.T, scfg *Config) (client, server *Session) {
	t.Helper()
	scfg.InitialStreamWindow, scfg.SessionWindow = 1<<20, 1<<20
	client, server = tcpSessions(t, nil, scfg)
	a, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if _, err := server.AcceptStream(); err != nil {
		t.Fatal(err)
	}
	return client, server
}

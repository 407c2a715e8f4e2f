package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tcpchan/tcpchan"
)

// TestMain fails the run if any test leaves a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is a bytes.Buffer safe for concurrent use: a log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// recordingListener counts the connections it accepts, keeps them (so a
// test can cut one) and records the first bytes read from each.
type recordingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*recordingConn
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &recordingConn{Conn: c}
	l.mu.Lock()
	l.conns = append(l.conns, rc)
	l.mu.Unlock()
	return rc, nil
}

func (l *recordingListener) accepted() []*recordingConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*recordingConn(nil), l.conns...)
}

type recordingConn struct {
	net.Conn
	mu    sync.Mutex
	first []byte // up to 16 bytes first read
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	if k := min(n, 16-len(c.first)); k > 0 {
		c.first = append(c.first, p[:k]...)
	}
	c.mu.Unlock()
	return n, err
}

func (c *recordingConn) firstBytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.first...)
}

// tunnel is serve and forward running in this process on loopback.
type tunnel struct {
	t        *testing.T
	fwdAddr  string // where local clients connect
	serveLn  *recordingListener
	serveLog *syncBuffer
	fwdLog   *syncBuffer
	cancel   context.CancelFunc
	errs     chan error // runServe's and runForward's results
	dialer   *tcpchan.Dialer
	stopped  bool
}

type tunnelConfig struct {
	serverTLS *tls.Config   // serve's TLS; nil: plain TCP
	clientTLS *tls.Config   // forward's TLS; nil: plain TCP
	grace     time.Duration // 0: default
}

// startTunnel runs serve (to target) and forward, stopped and checked
// when the test ends.
func startTunnel(t *testing.T, target string, cfg tunnelConfig) *tunnel {
	t.Helper()
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		sl.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tu := &tunnel{
		t:        t,
		fwdAddr:  fl.Addr().String(),
		serveLn:  &recordingListener{Listener: sl},
		serveLog: &syncBuffer{},
		fwdLog:   &syncBuffer{},
		cancel:   cancel,
		errs:     make(chan error, 2),
	}
	slogger := newLogger(tu.serveLog, true)
	flogger := newLogger(tu.fwdLog, true)
	tu.dialer = newTunnelDialer(cfg.clientTLS, defaultDialTimeout, flogger)
	go func() {
		tu.errs <- runServe(ctx, tu.serveLn, target, serveOptions{
			tunnelOptions: tunnelOptions{Grace: cfg.grace, Log: slogger},
			TLS:           cfg.serverTLS,
		})
	}()
	go func() {
		tu.errs <- runForward(ctx, fl, tu.dialer, sl.Addr().String(), forwardOptions{
			tunnelOptions{Grace: cfg.grace, Log: flogger},
		})
	}()
	t.Cleanup(func() {
		st := time.Now()
		if !tu.stopped {
			tu.stop(20 * time.Second)
		}
		slow := time.Since(st) > 2*time.Second
		if slow {
			t.Logf("stopping the tunnel took %v", time.Since(st))
		}
		if t.Failed() || slow {
			t.Logf("serve log:\n%s", tu.serveLog)
			t.Logf("forward log:\n%s", tu.fwdLog)
		}
	})
	return tu
}

// stop cancels the tunnel's context and checks that serve and forward
// return nil within limit.
func (tu *tunnel) stop(limit time.Duration) {
	tu.t.Helper()
	tu.stopped = true
	tu.cancel()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	for range 2 {
		select {
		case err := <-tu.errs:
			if err != nil {
				tu.t.Errorf("tunnel end returned %v", err)
			}
		case <-timer.C:
			tu.t.Fatalf("serve or forward still running %v after cancel", limit)
		}
	}
	tu.dialer.Close()
}

// tunnelConns returns how many TCP connections serve has accepted.
func (tu *tunnel) tunnelConns() int { return len(tu.serveLn.accepted()) }

// noErrorLogs fails the test if serve or forward logged an error.
func (tu *tunnel) noErrorLogs() {
	tu.t.Helper()
	tu.noErrorLogsExcept(nil, 0)
}

// noErrorLogsExcept is noErrorLogs, but lets pass errors about the given
// local clients (by "client=ADDR"): connections a test made on purpose;
// and up to unnamed more of forward's errors for a stream the tunnel
// refused before a byte moved, from such connections whose address the
// test never learned (forward reset them before their Dial returned).
func (tu *tunnel) noErrorLogsExcept(clients []string, unnamed int) {
	tu.t.Helper()
	for name, b := range map[string]*syncBuffer{"serve": tu.serveLog, "forward": tu.fwdLog} {
	lines:
		for _, line := range strings.Split(b.String(), "\n") {
			if !strings.Contains(line, "level=ERROR") {
				continue
			}
			for _, c := range clients {
				if strings.Contains(line, "client="+c) {
					continue lines
				}
			}
			if name == "forward" && unnamed > 0 && strings.Contains(line, "bytes_up=0 bytes_down=0") &&
				strings.Contains(line, tcpchan.ErrStreamRefused.Error()) {
				unnamed--
				continue
			}
			tu.t.Errorf("%s logged an error: %s (excused clients: %q)", name, line, clients)
		}
	}
}

// startTCPTarget runs handle for every connection to a TCP server on
// loopback, all ended and waited for when the test ends.
func startTCPTarget(t *testing.T, handle func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

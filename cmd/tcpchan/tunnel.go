package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcpchan/tcpchan"
)

// Defaults shared by serve and forward.
const (
	defaultDialTimeout = 10 * time.Second
	defaultGrace       = 10 * time.Second

	// closeTimeout bounds the last step of a shutdown, after every
	// connection has been closed: the tcpchan sessions flushing and
	// closing (Session.Close takes at most about a second).
	closeTimeout = 5 * time.Second
)

// tunnelOptions are the settings serve and forward share.
type tunnelOptions struct {
	// DialTimeout bounds a dial: of the target (serve) or of a stream
	// through the tunnel, the tunnel connection included (forward).
	DialTimeout time.Duration
	// Grace is how long a shutdown lets connections in flight finish
	// before it closes them.
	Grace time.Duration
	// Log receives errors, and with level Debug one record per stream.
	// Nil discards.
	Log *slog.Logger
}

func (o *tunnelOptions) fill() {
	if o.DialTimeout <= 0 {
		o.DialTimeout = defaultDialTimeout
	}
	if o.Grace <= 0 {
		o.Grace = defaultGrace
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

// relay owns the goroutines that carry connections: it lets a shutdown
// wait for them and, past the grace period, cut them off.
type relay struct {
	wg  sync.WaitGroup // one per connection handler
	ctx context.Context
	cut context.CancelFunc // ends ctx: dials in progress fail

	mu     sync.Mutex
	conns  map[io.Closer]struct{}
	open   int // relayed connections: track calls not yet untracked
	cutOff bool
}

func newRelay() *relay {
	r := &relay{conns: make(map[io.Closer]struct{})}
	r.ctx, r.cut = context.WithCancel(context.Background())
	return r
}

// track registers conns to be aborted if the relay is cut off, or aborts
// them and returns false if it already is.
func (r *relay) track(conns ...io.Closer) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cutOff {
		for _, c := range conns {
			abort(c)
		}
		return false
	}
	for _, c := range conns {
		r.conns[c] = struct{}{}
	}
	r.open++
	return true
}

// untrack forgets conns, which the caller has closed, and reports whether
// the relay had cut them off (so that their failure was expected).
func (r *relay) untrack(conns ...io.Closer) (cutOff bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range conns {
		delete(r.conns, c)
	}
	r.open--
	return r.cutOff
}

// logStream logs the end of a relayed stream: at DEBUG (shown with -v), or
// at ERROR if the relay failed other than by being cut off at shutdown, so
// that a transfer cut short is never silent.
func logStream(log *slog.Logger, err error, cutOff bool, attrs ...any) {
	if err != nil && !cutOff {
		log.Error("stream failed", append(attrs, "err", err)...)
		return
	}
	log.Debug("stream closed", append(attrs, "err", err)...)
}

// drain waits for the handlers to finish for at most grace, then cuts the
// rest off (cancelling their dials and closing their connections) and
// waits for them to return, which they do at once. It reports how many
// relayed connections (each a pair of sockets: track's calls) were cut
// off. No handler may be started once drain is
// called.
func (r *relay) drain(grace time.Duration) int {
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
		r.cut()
		return 0
	case <-t.C:
	}
	r.cut()
	r.mu.Lock()
	r.cutOff = true
	n := r.open
	for c := range r.conns {
		// Cut off, not finished: the ends must see a reset, not a clean
		// end of stream that passes a truncated transfer off as whole.
		abort(c)
	}
	r.mu.Unlock()
	<-done
	return n
}

// closeWriter is a connection that can half-close: *net.TCPConn,
// *tls.Conn, *tcpchan.Stream.
type closeWriter interface {
	CloseWrite() error
}

// pipe copies between a and b both ways until both directions have ended,
// then closes both. When one direction ends cleanly (io.EOF from its
// source), it half-closes that direction's destination with CloseWrite, so
// the far end reads EOF and can still answer; if the destination cannot
// half-close, or a direction fails, both connections are closed at once,
// which ends the other direction too. pipe returns the bytes copied each
// way and the first error, if any, that was not caused by that closing,
// saying which connection (aName, bName) failed, reading or writing.
func pipe(a, b net.Conn, aName, bName string) (aToB, bToA int64, err error) {
	var first atomic.Pointer[error]
	end := func(dst, src net.Conn, dstName string, err error) {
		if err == nil {
			cw, ok := dst.(closeWriter)
			if !ok {
				err = fmt.Errorf("%s: %T cannot half-close", dstName, dst)
			} else if err = cw.CloseWrite(); err != nil {
				err = fmt.Errorf("half-closing %s: %w", dstName, err)
			} else {
				return
			}
		}
		first.CompareAndSwap(nil, &err)
		// The ends must see the failure, as they would over one TCP
		// connection, not a clean end of stream that passes a truncated
		// transfer off as whole.
		abort(dst)
		abort(src)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		aToB, err = copyNamed(b, a, bName, aName)
		end(b, a, bName, err)
	}()
	bToA, err = copyNamed(a, b, aName, bName)
	end(a, b, aName, err)
	<-done
	a.Close()
	b.Close()
	if p := first.Load(); p != nil {
		return aToB, bToA, *p
	}
	return aToB, bToA, nil
}

// copyNamed is io.Copy from src to dst, with an error that says which of
// them failed, by name. (io.Copy would hand a TCP destination the stream
// to read from, and the TCP connection reports the stream's failure as its
// own: "readfrom tcp client-address: tcpchan: connection closed".)
func copyNamed(dst, src net.Conn, dstName, srcName string) (int64, error) {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, fmt.Errorf("writing %s: %w", dstName, werr)
			}
		}
		switch {
		case rerr == io.EOF:
			return n, nil
		case rerr != nil:
			return n, fmt.Errorf("reading %s: %w", srcName, rerr)
		}
	}
}

// abort closes c so that its peer sees an error rather than an end of
// stream: a TCP reset (zero linger), a tcpchan stream reset.
func abort(c io.Closer) {
	switch c := c.(type) {
	case *tcpchan.Stream:
		c.Reset()
	case *net.TCPConn:
		c.SetLinger(0)
		c.Close()
	default:
		c.Close()
	}
}

// acceptLoop accepts connections from ln and hands each to handle in a
// goroutine counted in r.wg, until ln fails for good (returned) or is
// closed (returns an error matching net.ErrClosed). Temporary errors such
// as too many open files are retried with a backoff, as http.Server does.
func acceptLoop(ln net.Listener, r *relay, handle func(net.Conn)) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() && !errors.Is(err, net.ErrClosed) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		r.wg.Go(func() { handle(c) })
	}
}

// loggingListener logs every connection its inner listener accepts.
type loggingListener struct {
	net.Listener
	log *slog.Logger
	msg string
}

func (l loggingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.log.Info(l.msg, "remote", c.RemoteAddr().String())
	}
	return c, err
}

// serverTLSConfig loads the certificate (chain) and key of serve's TLS
// listener from PEM files.
func serverTLSConfig(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading TLS certificate: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// clientTLSConfig returns forward's TLS configuration: it trusts the CA
// certificates in the PEM file caFile if given (else the system's), or
// skips verification if insecure. serverName, if set, is the name the
// server's certificate must have (else the host of -via).
func clientTLSConfig(caFile string, insecure bool, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         serverName,
		InsecureSkipVerify: insecure,
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("reading TLS CA file %s: no PEM certificate found", caFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// checkHostPort rejects an address that net.Dial or net.Listen could not
// use: it must be host:port with a numeric or named port (the host may be
// empty for a listen address).
func checkHostPort(flagName, addr string, needHost bool) error {
	if addr == "" {
		return usageError("-%s is required", flagName)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return usageError("-%s %q: want host:port (%v)", flagName, addr, err)
	}
	if port == "" {
		return usageError("-%s %q: missing port", flagName, addr)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return usageError("-%s %q: %v", flagName, addr, err)
	}
	if needHost && host == "" {
		return usageError("-%s %q: missing host", flagName, addr)
	}
	return nil
}

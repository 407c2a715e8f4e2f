package main

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"

	hyamux "github.com/hashicorp/yamux"
	lyamux "github.com/libp2p/go-yamux/v5"
	"github.com/xtaci/smux"
)

// Session is one end of a multiplexed connection (or, for raw TCP, a
// dialer/listener pair that makes one TCP connection per stream).
type Session interface {
	Open() (net.Conn, error)
	Accept() (net.Conn, error)
	Close() error
}

// Mux builds a client/server session pair over an established connection.
type Mux interface {
	Name() string
	Pair(c1, c2 net.Conn) (client, server Session, err error)
}

// muxes lists the implementations in table order. Adapters in other files
// (tcpchan) append themselves from init.
var muxes = []Mux{rawTCP{}, hashicorpYamux{}, xtaciSmux{}, libp2pYamux{}}

// ---- raw TCP ----

// rawTCP is the baseline: every stream is its own TCP connection. Pair is
// not used; see newEnv.
type rawTCP struct{}

func (rawTCP) Name() string { return "tcp" }
func (rawTCP) Pair(c1, c2 net.Conn) (Session, Session, error) {
	return nil, nil, errors.New("raw tcp has no session pair")
}

type rawClient struct {
	addr    string
	mu      sync.Mutex
	open    map[net.Conn]struct{}
	noTrack bool // idle-mem: the caller closes the connections itself
}

func (s *rawClient) Open() (net.Conn, error) {
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		return nil, err
	}
	if s.noTrack {
		return c, nil
	}
	s.mu.Lock()
	s.open[c] = struct{}{}
	s.mu.Unlock()
	return &trackedConn{Conn: c, untrack: func() { s.mu.Lock(); delete(s.open, c); s.mu.Unlock() }}, nil
}
func (s *rawClient) Accept() (net.Conn, error) { return nil, errors.New("raw client cannot accept") }
func (s *rawClient) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.open {
		c.Close()
	}
	s.open = map[net.Conn]struct{}{}
	return nil
}

type rawServer struct {
	ln      net.Listener
	mu      sync.Mutex
	open    map[net.Conn]struct{}
	noTrack atomic.Bool // idle-mem: env.Close closes e.idle itself
}

func (s *rawServer) Open() (net.Conn, error) { return nil, errors.New("raw server cannot open") }
func (s *rawServer) Accept() (net.Conn, error) {
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	if s.noTrack.Load() {
		return c, nil
	}
	s.mu.Lock()
	s.open[c] = struct{}{}
	s.mu.Unlock()
	return &trackedConn{Conn: c, untrack: func() { s.mu.Lock(); delete(s.open, c); s.mu.Unlock() }}, nil
}
func (s *rawServer) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.open {
		c.Close()
	}
	s.open = map[net.Conn]struct{}{}
	return err
}

// trackedConn lets a raw session close its connections on teardown.
type trackedConn struct {
	net.Conn
	once    sync.Once
	untrack func()
}

func (c *trackedConn) Close() error {
	c.once.Do(c.untrack)
	return c.Conn.Close()
}

func (c *trackedConn) CloseWrite() error {
	return c.Conn.(*net.TCPConn).CloseWrite()
}

// ---- hashicorp/yamux ----

type hashicorpYamux struct{}

func (hashicorpYamux) Name() string { return "hashicorp/yamux" }

func (hashicorpYamux) Pair(c1, c2 net.Conn) (Session, Session, error) {
	cfg := func() *hyamux.Config {
		c := hyamux.DefaultConfig()
		c.LogOutput = io.Discard // default config, minus log noise on teardown
		return c
	}
	cl, err := hyamux.Client(c1, cfg())
	if err != nil {
		return nil, nil, err
	}
	sv, err := hyamux.Server(c2, cfg())
	if err != nil {
		cl.Close()
		return nil, nil, err
	}
	return hyamuxSession{cl}, hyamuxSession{sv}, nil
}

type hyamuxSession struct{ s *hyamux.Session }

func (s hyamuxSession) Open() (net.Conn, error)   { return s.s.OpenStream() }
func (s hyamuxSession) Accept() (net.Conn, error) { return s.s.AcceptStream() }
func (s hyamuxSession) Close() error              { return s.s.Close() }

// ---- xtaci/smux ----

type xtaciSmux struct{}

func (xtaciSmux) Name() string { return "xtaci/smux" }

func (xtaciSmux) Pair(c1, c2 net.Conn) (Session, Session, error) {
	cl, err := smux.Client(c1, nil)
	if err != nil {
		return nil, nil, err
	}
	sv, err := smux.Server(c2, nil)
	if err != nil {
		cl.Close()
		return nil, nil, err
	}
	return smuxSession{cl}, smuxSession{sv}, nil
}

type smuxSession struct{ s *smux.Session }

func (s smuxSession) Open() (net.Conn, error)   { return s.s.OpenStream() }
func (s smuxSession) Accept() (net.Conn, error) { return s.s.AcceptStream() }
func (s smuxSession) Close() error              { return s.s.Close() }

// ---- libp2p/go-yamux/v5 ----

type libp2pYamux struct{}

func (libp2pYamux) Name() string { return "go-yamux/v5" }

func (libp2pYamux) Pair(c1, c2 net.Conn) (Session, Session, error) {
	cfg := func() *lyamux.Config {
		c := lyamux.DefaultConfig()
		c.LogOutput = io.Discard
		// The default caps a session at 1000 inbound streams, which
		// idle-mem exceeds; this is the only limit changed.
		c.MaxIncomingStreams = 1 << 20
		return c
	}
	cl, err := lyamux.Client(c1, cfg(), nil)
	if err != nil {
		return nil, nil, err
	}
	sv, err := lyamux.Server(c2, cfg(), nil)
	if err != nil {
		cl.Close()
		return nil, nil, err
	}
	return lyamuxSession{cl}, lyamuxSession{sv}, nil
}

type lyamuxSession struct{ s *lyamux.Session }

func (s lyamuxSession) Open() (net.Conn, error)   { return s.s.OpenStream(context.Background()) }
func (s lyamuxSession) Accept() (net.Conn, error) { return s.s.AcceptStream() }
func (s lyamuxSession) Close() error              { return s.s.Close() }

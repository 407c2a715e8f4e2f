//go:build !notcpchan

package main

import (
	"net"

	"github.com/tcpchan/tcpchan"
)

// Build with -tags notcpchan to leave tcpchan out (e.g. while the core
// package does not compile).

func init() { muxes = append(muxes, tcpchanMux{}) }

type tcpchanMux struct{}

func (tcpchanMux) Name() string { return "tcpchan" }

func (tcpchanMux) Pair(c1, c2 net.Conn) (Session, Session, error) {
	// Both constructors are documented to return immediately; create the
	// server concurrently anyway so a handshake in either cannot deadlock.
	type res struct {
		s   *tcpchan.Session
		err error
	}
	cfg := func() *tcpchan.Config {
		c := tcpchan.DefaultConfig()
		// The default caps a session at 8192 inbound streams, which
		// idle-mem exceeds; this is the only setting changed.
		c.MaxIncomingStreams = 1 << 20
		return c
	}
	sc := make(chan res, 1)
	go func() {
		s, err := tcpchan.Server(c2, cfg())
		sc <- res{s, err}
	}()
	cl, err := tcpchan.Client(c1, cfg())
	sv := <-sc
	if err != nil || sv.err != nil {
		if cl != nil {
			cl.Close()
		}
		if sv.s != nil {
			sv.s.Close()
		}
		if err == nil {
			err = sv.err
		}
		return nil, nil, err
	}
	return tcpchanSession{cl}, tcpchanSession{sv.s}, nil
}

type tcpchanSession struct{ s *tcpchan.Session }

func (s tcpchanSession) Open() (net.Conn, error)   { return s.s.OpenStream() }
func (s tcpchanSession) Accept() (net.Conn, error) { return s.s.AcceptStream() }
func (s tcpchanSession) Close() error              { return s.s.Close() }

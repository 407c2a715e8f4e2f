package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	"github.com/tcpchan/tcpchan"
)

// The demo's wire protocol: a client's first byte picks what the server
// does with the connection (a TCP connection or a tcpchan stream alike).
const (
	tagEcho    = 'e' // echo everything until EOF, then close
	tagSink    = 's' // check the bytes against pattern until EOF, then reply with their count (8 bytes, big endian)
	tagOneShot = 'o' // echo oneShotSize bytes, then close (the server closes first)

	oneShotSize = 64
)

// pattern is the content of every byte the demo sends: a random block that
// data is sliced from, so that the receiver can check what arrived.
var pattern = func() []byte {
	b := make([]byte, 64<<10)
	rng := rand.NewChaCha8([32]byte{'t', 'c', 'p', 'c', 'h', 'a', 'n'})
	rng.Read(b)
	return b
}()

// matchPattern reports whether b is what the pattern holds at stream
// offset off, the pattern repeating endlessly.
func matchPattern(b []byte, off int64) bool {
	for len(b) > 0 {
		i := int(off % int64(len(pattern)))
		n := min(len(b), len(pattern)-i)
		if !bytes.Equal(b[:n], pattern[i:i+n]) {
			return false
		}
		b, off = b[n:], off+int64(n)
	}
	return true
}

// countingListener counts the connections its inner listener accepts.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// dialFunc opens a connection (TCP) or a stream (tcpchan) to the server.
type dialFunc func(ctx context.Context) (net.Conn, error)

// demoServer is one transport of the demo: a server on loopback and the
// way a client reaches it.
type demoServer struct {
	name     string
	accepted atomic.Int64 // TCP connections accepted by the server
	r        *relay       // the server's connection handlers
	ln       net.Listener // what the server accepts from
	loopDone chan error

	// newClient returns a fresh client (tcpchan: a new Dialer, so its TCP
	// connection is counted afresh) and the function that closes it.
	newClient func() (dialFunc, func())
}

// startTCPServer starts the raw TCP server: one connection per stream.
func startTCPServer() (*demoServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &demoServer{name: "raw TCP"}
	s.ln = countingListener{ln, &s.accepted}
	addr := ln.Addr().String()
	s.newClient = func() (dialFunc, func()) {
		var d net.Dialer
		return func(ctx context.Context) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}, func() {}
	}
	s.start()
	return s, nil
}

// startTcpchanServer starts the tcpchan server: a Listener whose clients
// are Dialers, each keeping one TCP connection.
func startTcpchanServer(streams int) (*demoServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &demoServer{name: "tcpchan"}
	// Let every stream of the first workload wait for Accept at once.
	cfg := &tcpchan.Config{
		AcceptBacklog:      max(1024, streams),
		MaxIncomingStreams: max(8192, 2*streams),
	}
	s.ln = tcpchan.NewListener(countingListener{ln, &s.accepted}, cfg)
	addr := ln.Addr().String()
	s.newClient = func() (dialFunc, func()) {
		d := &tcpchan.Dialer{}
		return func(ctx context.Context) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}, func() { d.Close() }
	}
	s.start()
	return s, nil
}

func (s *demoServer) start() {
	s.r = newRelay()
	s.loopDone = make(chan error, 1)
	go func() { s.loopDone <- acceptLoop(s.ln, s.r, s.handle) }()
}

// close stops the server and waits for its goroutines: the handlers end
// when their clients close, or are cut off after a second.
func (s *demoServer) close() {
	if tl, ok := s.ln.(*tcpchan.Listener); ok {
		tl.Close()
		<-s.loopDone
		s.r.drain(time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		tl.Shutdown(ctx)
		return
	}
	s.ln.Close()
	<-s.loopDone
	s.r.drain(time.Second)
}

// handle serves one connection according to its first byte.
func (s *demoServer) handle(c net.Conn) {
	if !s.r.track(c) {
		return
	}
	defer s.r.untrack(c)
	defer c.Close()
	var tag [1]byte
	if _, err := io.ReadFull(c, tag[:]); err != nil {
		return
	}
	switch tag[0] {
	case tagEcho:
		buf := make([]byte, 32<<10)
		// Hide ReaderFrom and WriterTo: a plain read-write loop.
		io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, buf)
	case tagSink:
		buf := make([]byte, 64<<10)
		var n int64
		for {
			m, err := c.Read(buf)
			if !matchPattern(buf[:m], n) {
				return // the client sees the connection close without a count
			}
			n += int64(m)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return
			}
		}
		var reply [8]byte
		binary.BigEndian.PutUint64(reply[:], uint64(n))
		c.Write(reply[:])
	case tagOneShot:
		var buf [oneShotSize]byte
		if _, err := io.ReadFull(c, buf[:]); err != nil {
			return
		}
		c.Write(buf[:])
	}
}

// errClosedEarly is a server that closed a connection before it should.
var errClosedEarly = fmt.Errorf("server closed the connection early: %w", io.ErrUnexpectedEOF)

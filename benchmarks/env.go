package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/tcpchan/tcpchan/benchmarks/linksim"
)

// Stream tags: the first byte a client writes on a new stream tells the
// server-side handler what to do with it.
const (
	tagDiscardN = 'D' // 8-byte big-endian n, then n bytes; server acks 1 byte
	tagMarker   = 'M' // server sends 1 ready byte; data (0x00) until a 0xFF marker; server acks 8-byte count
	tagEcho     = 'E' // echo 64-byte messages until EOF
	tagOnce     = 'O' // echo one 64-byte message, then wait for EOF and close
	tagIdle     = 'I' // echo one 64-byte message, then leave the stream open
)

const (
	msgSize   = 64
	writeSize = 32 << 10
	markByte  = 0xFF
)

type mark struct {
	n  int64
	at time.Time
}

// env is one measurement's world: a listener, optionally a simulated long
// link in front of it, and a client/server session pair whose server side
// runs the tag-dispatching handler.
type env struct {
	mux            Mux
	ln             net.Listener
	link           *linksim.Link
	c1, c2         net.Conn
	client, server Session

	marks chan mark

	idleMu sync.Mutex
	idle   []net.Conn
	idleWG sync.WaitGroup

	errMu sync.Mutex
	err   error

	loopDone  chan struct{}
	handlers  sync.WaitGroup
	closeOnce sync.Once
}

func newEnv(m Mux, lc *linksim.Config) (e *env, err error) {
	e = &env{mux: m, marks: make(chan mark, 4), loopDone: make(chan struct{})}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	e.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		close(e.loopDone)
		return e, err
	}
	addr := e.ln.Addr().String()
	if lc != nil {
		e.link, err = linksim.New(addr, *lc)
		if err != nil {
			close(e.loopDone)
			return e, err
		}
		addr = e.link.Addr()
	}
	if _, ok := m.(rawTCP); ok {
		e.client = &rawClient{addr: addr, open: map[net.Conn]struct{}{}}
		e.server = &rawServer{ln: e.ln, open: map[net.Conn]struct{}{}}
	} else {
		type acc struct {
			c   net.Conn
			err error
		}
		ac := make(chan acc, 1)
		go func() { c, err := e.ln.Accept(); ac <- acc{c, err} }()
		e.c1, err = net.Dial("tcp", addr)
		if err != nil {
			e.ln.Close()
			<-ac
			close(e.loopDone)
			return e, err
		}
		a := <-ac
		if a.err != nil {
			close(e.loopDone)
			return e, a.err
		}
		e.c2 = a.c
		e.client, e.server, err = m.Pair(e.c1, e.c2)
		if err != nil {
			close(e.loopDone)
			return e, err
		}
	}
	go e.acceptLoop()
	// Warm up: one stream round trip, so the session (or, for raw TCP,
	// the listener) is known to work and session setup is not measured.
	if err := e.onceEcho(); err != nil {
		return e, fmt.Errorf("warm-up: %w", err)
	}
	return e, nil
}

func (e *env) fail(err error) {
	e.errMu.Lock()
	if e.err == nil {
		e.err = err
	}
	e.errMu.Unlock()
}

func (e *env) firstErr() error {
	e.errMu.Lock()
	defer e.errMu.Unlock()
	return e.err
}

func (e *env) acceptLoop() {
	defer close(e.loopDone)
	for {
		c, err := e.server.Accept()
		if err != nil {
			return
		}
		e.handlers.Add(1)
		go func() {
			defer e.handlers.Done()
			e.handle(c)
		}()
	}
}

// Close tears everything down and waits (bounded) for the handlers.
func (e *env) Close() {
	e.closeOnce.Do(func() {
		if e.client != nil {
			e.client.Close()
		}
		if e.server != nil {
			e.server.Close()
		}
		if e.c1 != nil {
			e.c1.Close()
		}
		if e.c2 != nil {
			e.c2.Close()
		}
		if e.ln != nil {
			e.ln.Close()
		}
		if e.link != nil {
			e.link.Close()
		}
		e.idleMu.Lock()
		for _, c := range e.idle {
			c.Close()
		}
		e.idle = nil
		e.idleMu.Unlock()
		done := make(chan struct{})
		go func() {
			<-e.loopDone
			e.handlers.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			logf("warning: %s: handlers still running 5s after close", e.mux.Name())
		}
	})
}

func drainClose(c net.Conn) {
	buf := make([]byte, 512)
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
	}
	c.Close()
}

func (e *env) handle(c net.Conn) {
	var tag [1]byte
	if _, err := io.ReadFull(c, tag[:]); err != nil {
		c.Close()
		return
	}
	switch tag[0] {
	case tagDiscardN:
		var hdr [8]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			e.fail(fmt.Errorf("discard header: %w", err))
			c.Close()
			return
		}
		want := int64(binary.BigEndian.Uint64(hdr[:]))
		if _, err := c.Write([]byte{1}); err != nil { // ready
			e.fail(fmt.Errorf("discard ready: %w", err))
			c.Close()
			return
		}
		buf := make([]byte, 64<<10)
		var got int64
		for got < want {
			b := buf
			if rem := want - got; rem < int64(len(b)) {
				b = b[:rem]
			}
			n, err := c.Read(b)
			got += int64(n)
			if err != nil {
				e.fail(fmt.Errorf("discard: got %d of %d bytes: %w", got, want, err))
				c.Close()
				return
			}
		}
		if _, err := c.Write([]byte{1}); err != nil {
			e.fail(fmt.Errorf("discard ack: %w", err))
		}
		drainClose(c)
	case tagMarker:
		if _, err := c.Write([]byte{1}); err != nil {
			e.fail(fmt.Errorf("marker ready: %w", err))
			c.Close()
			return
		}
		buf := make([]byte, 64<<10)
		var got int64
		for {
			n, err := c.Read(buf)
			if i := bytes.IndexByte(buf[:n], markByte); i >= 0 {
				at := time.Now()
				if i != n-1 {
					e.fail(fmt.Errorf("marker: %d bytes after marker", n-1-i))
				}
				got += int64(i)
				e.marks <- mark{got, at}
				var ack [8]byte
				binary.BigEndian.PutUint64(ack[:], uint64(got))
				if _, err := c.Write(ack[:]); err != nil {
					e.fail(fmt.Errorf("marker ack: %w", err))
				}
				drainClose(c)
				return
			}
			got += int64(n)
			if err != nil {
				e.fail(fmt.Errorf("marker: read %d bytes, no marker: %w", got, err))
				c.Close()
				return
			}
		}
	case tagEcho:
		buf := make([]byte, msgSize)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				break
			}
			if _, err := c.Write(buf); err != nil {
				break
			}
		}
		c.Close()
	case tagOnce, tagIdle:
		buf := make([]byte, msgSize)
		if _, err := io.ReadFull(c, buf); err != nil {
			e.fail(fmt.Errorf("once read: %w", err))
			c.Close()
			if tag[0] == tagIdle {
				e.idleWG.Done()
			}
			return
		}
		if _, err := c.Write(buf); err != nil {
			e.fail(fmt.Errorf("once write: %w", err))
		}
		if tag[0] == tagOnce {
			drainClose(c)
			return
		}
		e.idleMu.Lock()
		e.idle = append(e.idle, c)
		e.idleMu.Unlock()
		e.idleWG.Done()
	default:
		e.fail(fmt.Errorf("unknown stream tag %q", tag[0]))
		c.Close()
	}
}

// ---- client-side helpers ----

func fillMsg(b []byte, i int) {
	for j := range b {
		b[j] = byte(i + j)
	}
}

// echoOn sends one tagged 64-byte message and checks the echo.
func echoOn(c net.Conn, tag byte, i int) error {
	out := make([]byte, 1+msgSize)
	out[0] = tag
	fillMsg(out[1:], i)
	if _, err := c.Write(out); err != nil {
		return err
	}
	in := make([]byte, msgSize)
	if _, err := io.ReadFull(c, in); err != nil {
		return err
	}
	if !bytes.Equal(in, out[1:]) {
		return errors.New("echo mismatch")
	}
	return nil
}

// onceEcho opens a stream, does one echo and closes it.
func (e *env) onceEcho() error {
	c, err := e.client.Open()
	if err != nil {
		return err
	}
	defer c.Close()
	return echoOn(c, tagOnce, 0)
}

// prepN tags c as discard-n for n bytes and waits for the server's ready
// byte, so that connection setup (on a simulated link, the handshake) is
// done before the caller starts its timer.
func prepN(c net.Conn, n int64) error {
	var hdr [9]byte
	hdr[0] = tagDiscardN
	binary.BigEndian.PutUint64(hdr[1:], uint64(n))
	if _, err := c.Write(hdr[:]); err != nil {
		return err
	}
	var ready [1]byte
	if _, err := io.ReadFull(c, ready[:]); err != nil {
		return fmt.Errorf("ready: %w", err)
	}
	return nil
}

// sendN writes n bytes on c (prepared by prepN) and waits for the ack.
func sendN(c net.Conn, n int64) error {
	buf := make([]byte, writeSize)
	for rem := n; rem > 0; {
		b := buf
		if rem < int64(len(b)) {
			b = b[:rem]
		}
		m, err := c.Write(b)
		rem -= int64(m)
		if err != nil {
			return err
		}
	}
	var ack [1]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return fmt.Errorf("waiting for ack: %w", err)
	}
	return nil
}

// bulkUntil streams data on a new stream until stop is closed or the
// deadline passes (whichever is set), then sends the marker. It returns
// the bytes delivered and the rate measured from the first write to the
// server's receipt of the marker.
func (e *env) bulkUntil(stop <-chan struct{}, deadline time.Time) (int64, float64, error) {
	c, err := e.client.Open()
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	if _, err := c.Write([]byte{tagMarker}); err != nil {
		return 0, 0, err
	}
	var ready [1]byte
	if _, err := io.ReadFull(c, ready[:]); err != nil {
		return 0, 0, fmt.Errorf("ready: %w", err)
	}
	buf := make([]byte, writeSize)
	start := time.Now()
	var sent int64
loop:
	for {
		if stop != nil {
			select {
			case <-stop:
				break loop
			default:
			}
		} else if !time.Now().Before(deadline) {
			break
		}
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			return sent, 0, err
		}
	}
	if _, err := c.Write([]byte{markByte}); err != nil {
		return sent, 0, err
	}
	var ack [8]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return sent, 0, fmt.Errorf("marker ack: %w", err)
	}
	if got := int64(binary.BigEndian.Uint64(ack[:])); got != sent {
		return sent, 0, fmt.Errorf("server counted %d bytes, client sent %d", got, sent)
	}
	var m mark
	select {
	case m = <-e.marks:
	case <-time.After(5 * time.Second):
		return sent, 0, errors.New("no marker record")
	}
	if m.n != sent {
		return sent, 0, fmt.Errorf("server marked %d bytes, client sent %d", m.n, sent)
	}
	return sent, float64(sent) / m.at.Sub(start).Seconds(), nil
}

package tcpchan

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestParkedStreamCloseSendsFIN: a stream parked for session credit (data
// pending, session window empty) that is then closed has abandoned its data
// and owes only a FIN, which needs no credit: the FIN must go out at once,
// not wait for session credit that may never come.
func TestParkedStreamCloseSendsFIN(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"Close", "CloseWrite after the Write gave up"} {
		t.Run(how, func(t *testing.T) {
			s := idleSession(t)
			st := offer(t, s, 100)
			s.sendWindow.Store(0)
			got := summarize(t, s.fillBatch(nil))
			if len(got) != 1 || got[0].Flags != flagSYN || got[0].Length != 0 {
				t.Fatalf("first batch %v, want the empty SYN only (the stream parks)", got)
			}
			if how == "Close" {
				st.Close()
			} else {
				st.mu.Lock() // as a Write whose deadline passed
				st.wbuf = nil
				st.state &^= stWriting
				st.mu.Unlock()
				st.CloseWrite()
			}
			got = summarize(t, s.fillBatch(nil))
			want := []frameSummary{{"DATA", flagFIN, st.id, 0}}
			if len(got) != 1 || got[0] != want[0] {
				t.Errorf("after %s with no session credit: batch %v, want %v (FIN stays parked)", how, got, want)
			}
		})
	}
}

// TestParkedStreamCloseEndToEnd: the same over TCP. Stream a uses the whole
// session window and the peer never reads it; stream b's Write times out
// while parked, then b is closed: the peer must read io.EOF on b.
func TestParkedStreamCloseEndToEnd(t *testing.T) {
	t.Parallel()
	client, server := sessionCreditSpent(t, &Config{})
	b, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	b.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := b.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write with no session credit: %v, want deadline exceeded", err)
	}
	b.Close()
	sb, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	sb.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := sb.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("peer Read after Close = %d, %v; want io.EOF (FIN parked behind session credit)", n, err)
	}
}

// xorConn is a connection wrapper that transforms the bytes, embedding
// *net.TCPConn for everything else (and so, by promotion, SyscallConn).
type xorConn struct{ *net.TCPConn }

func (c xorConn) Write(p []byte) (int, error) {
	q := bytes.Clone(p)
	for i := range q {
		q[i] ^= 0x5a
	}
	return c.TCPConn.Write(q)
}

func (c xorConn) Read(p []byte) (int, error) {
	n, err := c.TCPConn.Read(p)
	for i := range p[:n] {
		p[i] ^= 0x5a
	}
	return n, err
}

// TestWrappedConnWritesGoThroughWrapper: a conn type that embeds a
// *net.TCPConn (here one that XORs every byte) has SyscallConn by promotion;
// direct writes must still go through its Write, never to the socket
// underneath.
func TestWrappedConnWritesGoThroughWrapper(t *testing.T) {
	t.Parallel()
	c1, c2 := tcpConnPair(t)
	client, server := sessionPair(t, xorConn{c1.(*net.TCPConn)}, xorConn{c2.(*net.TCPConn)}, nil, nil)
	a, b := streamPair(t, client, server)
	// Let the writer goroutine go idle (preface and ping written through
	// the wrapper) so that the Write below writes directly.
	if _, err := client.Ping(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	b.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(b, buf); err != nil || string(buf) != "hello" {
		t.Errorf("peer read %q, %v; want \"hello\" (direct write bypassed the wrapper's Write; server: %v)", buf, err, server.Err())
	}
}

// TestLateWindowUpdatesAreNotGlitches: an honest reader credits every
// quarter window it reads until it has seen FIN, so up to four
// WINDOW_UPDATEs can cross the sender's FIN, after which the sender has
// forgotten the stream; they must be excused, not counted as glitches.
func TestLateWindowUpdatesAreNotGlitches(t *testing.T) {
	t.Parallel()
	server, a := newAttack(t, nil, true) // a client announcing a 256 KiB stream window
	a.send(dataFrame(flagSYN|flagFIN, 1, []byte("get")))
	st, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		st.Write(make([]byte, 256<<10))
		st.Close()
	}()
	// The response arrives, FIN last.
	if _, err := a.until(func(h frameHeader) bool { return h.typ == frameData && h.flags&flagFIN != 0 }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "stream removed", func() bool { return server.NumStreams() == 0 })
	// The client read the response a quarter window at a time and sent its
	// credit before the FIN reached it: the updates cross the FIN.
	for range 3 {
		a.send(hdr(frameWindowUpdate, 0, 1, 64<<10))
	}
	a.sync(t) // the updates were handled
	closeAndWait(t, server)
	if server.glitches != 0 {
		t.Errorf("honest late WINDOW_UPDATEs counted %d glitches", server.glitches)
	}
}

package tcpchan

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// readString reads from r until EOF or error.
func readAllString(t *testing.T, r io.Reader) string {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	return string(b)
}

func TestStreamErrorAfterLocalClose(t *testing.T) {
	t.Parallel()
	client, server := tcpSessions(t, nil, nil)
	a, _ := streamPair(t, client, server)
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: %v, want net.ErrClosed", err)
	}
	if _, err := a.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v, want net.ErrClosed", err)
	}
	if err := a.CloseWrite(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("CloseWrite after Close: %v, want net.ErrClosed", err)
	}
	if err := a.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
}

func TestStreamHalfClose(t *testing.T) {
	t.Parallel()
	for _, dir := range []string{"client closes first", "server closes first"} {
		t.Run(dir, func(t *testing.T) {
			t.Parallel()
			client, server := tcpSessions(t, nil, nil)
			a, b := streamPair(t, client, server)
			if dir == "server closes first" {
				a, b = b, a
			}
			if _, err := a.Write([]byte("request")); err != nil {
				t.Fatal(err)
			}
			if err := a.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Write([]byte("more")); !errors.Is(err, net.ErrClosed) {
				t.Errorf("Write after CloseWrite: %v, want net.ErrClosed", err)
			}
			if got := readAllString(t, b); got != "request" {
				t.Errorf("peer read %q, want %q", got, "request")
			}
			if n, err := b.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Errorf("Read after EOF = %d, %v; want 0, io.EOF", n, err)
			}
			// The half-closed side still reads what the peer writes back.
			if _, err := b.Write([]byte("response")); err != nil {
				t.Fatalf("peer Write after our CloseWrite: %v", err)
			}
			b.Close()
			if got := readAllString(t, a); got != "response" {
				t.Errorf("read %q after CloseWrite, want %q", got, "response")
			}
			a.Close()
			waitFor(t, "streams freed", func() bool { return client.NumStreams() == 0 && server.NumStreams() == 0 })
		})
	}
}

func TestStreamPeerClose(t *testing.T) {
	t.Parallel()
	client, server := tcpSessions(t, nil, nil)
	a, b := streamPair(t, client, server)
	if _, err := b.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if got := readAllString(t, a); got != "last words" {
		t.Errorf("read %q, want %q", got, "last words")
	}
}

func TestStreamPeerReset(t *testing.T) {
	t.Parallel()
	client, server := tcpSessions(t, nil, nil)
	a, b := streamPair(t, client, server)
	b.Close() // the peer closes without reading: more data gets RST
	buf := make([]byte, 4096)
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for err == nil && time.Now().Before(deadline) {
		_, err = a.Write(buf)
	}
	if !errors.Is(err, ErrStreamReset) {
		t.Fatalf("Write to a stream the peer closed: %v, want ErrStreamReset", err)
	}
	// The peer's FIN came before its RST: everything it wrote (nothing)
	// was delivered, so reading ends cleanly.
	if _, err := a.Read(buf); err != io.EOF {
		t.Errorf("Read after an RST that followed the peer's FIN: %v, want io.EOF", err)
	}
}

func TestStreamRefused(t *testing.T) {
	t.Parallel()
	client, server := tcpSessions(t, nil, &Config{AcceptBacklog: 1})
	first, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	second, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := second.Read(make([]byte, 1)); !errors.Is(err, ErrStreamRefused) {
		t.Errorf("Read on a stream past the peer's backlog: %v, want ErrStreamRefused", err)
	}
	if _, err := second.Write([]byte("x")); !errors.Is(err, ErrStreamRefused) {
		t.Errorf("Write on a refused stream: %v, want ErrStreamRefused", err)
	}
	// The first one was accepted and works.
	got, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	if got.ID() != first.ID() {
		t.Errorf("accepted stream %d, want %d", got.ID(), first.ID())
	}
	waitFor(t, "refused stream freed", func() bool { return client.NumStreams() == 1 })
}

func TestStreamLimit(t *testing.T) {
	t.Parallel()
	client, server := tcpSessions(t, nil, &Config{MaxIncomingStreams: 2})
	var streams []*Stream
	for range 2 {
		st, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	// The third is refused: by the peer (RST REFUSED) if its preface, which
	// announces the limit, has not arrived yet, or else by OpenStream.
	if third, err := client.OpenStream(); err != nil {
		if !errors.Is(err, ErrStreamRefused) {
			t.Errorf("OpenStream over a limit of 2: %v, want ErrStreamRefused", err)
		}
	} else if _, err := third.Read(make([]byte, 1)); !errors.Is(err, ErrStreamRefused) {
		t.Errorf("third stream over a limit of 2: %v, want ErrStreamRefused", err)
	}
	// Finishing one makes room for another.
	s0, _ := server.AcceptStream()
	server.AcceptStream()
	streams[0].Close()
	s0.Close()
	// Freed at both ends: the client counts the stream against the limit
	// until the server's FIN has reached it.
	waitFor(t, "stream freed", func() bool { return server.NumStreams() == 1 && client.NumStreams() == 1 })
	st, err := client.OpenStream()
	if err != nil {
		t.Fatalf("OpenStream after one of 2 streams finished: %v", err)
	}
	st.Write([]byte("hi"))
	acc, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	if acc.ID() != st.ID() {
		t.Errorf("accepted %d, want %d", acc.ID(), st.ID())
	}
}

func TestStreamErrorAfterSessionClose(t *testing.T) {
	t.Parallel()
	client, server := tcpSessions(t, nil, nil)
	a, b := streamPair(t, client, server)
	blocked := make(chan error, 1)
	go func() {
		_, err := a.Read(make([]byte, 1))
		blocked <- err
	}()
	client.Close()
	if err := <-blocked; !errors.Is(err, net.ErrClosed) {
		t.Errorf("blocked Read when the session closed: %v, want net.ErrClosed", err)
	}
	if _, err := a.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after session Close: %v, want net.ErrClosed", err)
	}
	if _, err := client.AcceptStream(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("AcceptStream after Close: %v, want net.ErrClosed", err)
	}
	if _, err := client.OpenStream(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("OpenStream after Close: %v, want net.ErrClosed", err)
	}
	// The peer's streams end with an error, never a clean io.EOF that
	// would pass truncated data off as complete.
	// Depending on timing the peer's kernel sees FIN or RST.
	dropped := func(err error) bool {
		return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
	}
	if _, err := io.ReadAll(b); !dropped(err) {
		t.Errorf("peer Read after the session dropped: %v, want io.ErrUnexpectedEOF or ECONNRESET", err)
	}
	<-server.Done()
	if _, err := server.AcceptStream(); !dropped(err) {
		t.Errorf("peer AcceptStream: %v, want io.ErrUnexpectedEOF or ECONNRESET", err)
	}
}

func TestStreamZeroLengthWrite(t *testing.T) {
	t.Parallel()
	client, server := pipeSessions(t, nil, nil)
	a, b := streamPair(t, client, server)
	for _, p := range [][]byte{nil, {}} {
		if n, err := a.Write(p); n != 0 || err != nil {
			t.Errorf("Write(%v) = %d, %v; want 0, nil", p, n, err)
		}
	}
	a.Write([]byte("x"))
	a.CloseWrite()
	if got := readAllString(t, b); got != "x" {
		t.Errorf("peer read %q, want %q", got, "x")
	}
	if n, err := a.Write(nil); !errors.Is(err, net.ErrClosed) {
		t.Errorf("zero-length Write after CloseWrite = %d, %v; want net.ErrClosed", n, err)
	}
	if n, err := b.Read(nil); n != 0 || err != io.EOF {
		t.Errorf("zero-length Read at EOF = %d, %v; want 0, io.EOF", n, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) && errors.As(err, &ne) && ne.Timeout()
}

func TestStreamDeadlines(t *testing.T) {
	t.Parallel()
	client, server := tcpSessions(t, nil, nil)
	a, b := streamPair(t, client, server)

	// A past write deadline sends nothing.
	a.SetWriteDeadline(time.Now().Add(-time.Second))
	if n, err := a.Write([]byte("lost")); n != 0 || !isTimeout(err) {
		t.Errorf("Write past deadline = %d, %v; want 0 and a timeout", n, err)
	}
	// A blocked Read is woken by a deadline set later.
	done := make(chan error, 1)
	go func() {
		_, err := b.Read(make([]byte, 10))
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	b.SetReadDeadline(time.Now())
	if err := <-done; !isTimeout(err) {
		t.Errorf("blocked Read after SetReadDeadline(now): %v, want a timeout", err)
	}
	// Timeouts leave the stream usable.
	a.SetWriteDeadline(time.Time{})
	b.SetReadDeadline(time.Time{})
	a.Write([]byte("kept"))
	a.CloseWrite()
	if got := readAllString(t, b); got != "kept" {
		t.Errorf("read %q after timeouts, want %q", got, "kept")
	}
}

func TestStreamWriteTimeoutPartial(t *testing.T) {
	t.Parallel()
	// The peer never reads: a big Write takes what the window allows, then
	// times out with an honest count, and that many bytes arrive.
	client, server := tcpSessions(t, nil, nil)
	a, b := streamPair(t, client, server)
	a.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	payload := bytes.Repeat([]byte{7}, 1<<20)
	n, err := a.Write(payload)
	if !isTimeout(err) {
		t.Fatalf("Write into a full window: %v, want a timeout", err)
	}
	if n != 256<<10 {
		t.Errorf("Write took %d bytes before timing out, want the window, %d", n, 256<<10)
	}
	a.SetWriteDeadline(time.Time{})
	a.CloseWrite()
	got, err := io.ReadAll(b)
	if err != nil || len(got) != n {
		t.Errorf("peer read %d bytes (%v), want %d", len(got), err, n)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestStreamAddrs(t *testing.T) {
	t.Parallel()
	c1, c2 := tcpConnPair(t)
	client, server := sessionPair(t, c1, c2, nil, nil)
	a, b := streamPair(t, client, server)
	if a.LocalAddr().String() != c1.LocalAddr().String() || a.RemoteAddr().String() != c1.RemoteAddr().String() {
		t.Errorf("stream addrs %v %v, want the connection's %v %v", a.LocalAddr(), a.RemoteAddr(), c1.LocalAddr(), c1.RemoteAddr())
	}
	if b.LocalAddr().String() != c2.LocalAddr().String() || server.Addr().String() != c2.LocalAddr().String() {
		t.Errorf("server addrs %v %v, want %v", b.LocalAddr(), server.Addr(), c2.LocalAddr())
	}
	if a.ID()%2 != 1 {
		t.Errorf("client stream ID %d is not odd", a.ID())
	}
	if !strings.Contains(a.LocalAddr().Network(), "tcp") {
		t.Errorf("network %q", a.LocalAddr().Network())
	}
}

// TestWriteAfterCloseWriteOnResetStream: CloseWrite promises net.ErrClosed
// to later Writes, also on a stream the peer has reset meanwhile (as Close
// does); the reset's ErrStreamReset won. (Found by a review helper's
// randomized lifecycle test.)
func TestWriteAfterCloseWriteOnResetStream(t *testing.T) {
	t.Parallel()
	client, server := tcpSessions(t, nil, nil)
	a, b := streamPair(t, client, server)
	b.Reset()
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, ErrStreamReset) {
		t.Fatalf("Read after the peer's RST: %v, want ErrStreamReset", err)
	}
	a.CloseWrite()
	if _, err := a.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after CloseWrite: %v, want net.ErrClosed", err)
	}
}

// TestCloseWriteDuringParkedWrite: CloseWrite while a Write waits for
// session credit sends the FIN at once (it needs no credit), not only once
// the peer grants session credit.
func TestCloseWriteDuringParkedWrite(t *testing.T) {
	t.Parallel()
	// Stream window larger than the session window: the session window
	// runs out first.
	victim, a := newAttackWith(t, nil, false, settings{streamWindow: 4 << 20, sessionWindow: 1 << 20, maxFrameSize: 1024, maxStreams: 100})
	if err := a.send(dataFrame(flagSYN, 1, []byte("hi"))); err != nil {
		t.Fatal(err)
	}
	st, err := victim.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	werr := make(chan error, 1)
	go func() {
		_, err := st.Write(make([]byte, 2<<20))
		werr <- err
	}()
	// Read the first MiB (the session credit), sending no WINDOW_UPDATE.
	got := 0
	for got < 1<<20 {
		h, err := a.readFrame()
		if err != nil {
			t.Fatal(err)
		}
		if h.typ == frameData && h.streamID == 1 {
			got += int(h.length)
		}
	}
	time.Sleep(100 * time.Millisecond) // the Write parks for session credit
	if err := st.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := recvErr(t, werr); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write: %v, want net.ErrClosed", err)
	}
	fin := make(chan error, 1)
	go func() {
		_, err := a.until(func(h frameHeader) bool { return h.typ == frameData && h.streamID == 1 && h.flags&flagFIN != 0 })
		fin <- err
	}()
	select {
	case err := <-fin:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Errorf("no FIN on stream 1 within 3s of CloseWrite (the stream stays parked for session credit it does not need)")
	}
}

// TestCloseWhilePeerSends: a stream closed while the peer still sends
// delivers what it wrote, then FIN, and only then stops the peer with RST:
// the peer reads the response up to io.EOF, and its Writes fail.
func TestCloseWhilePeerSends(t *testing.T) {
	t.Parallel()
	client, server := tcpSessions(t, nil, nil)
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	// The client uploads until the stream fails (e.g. a request body).
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		buf := make([]byte, 1024)
		for {
			if _, err := st.Write(buf); err != nil {
				return
			}
		}
	}()
	srv, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	// The server answers early and closes (like an HTTP 413).
	if _, err := srv.Write([]byte("response")); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	<-upDone                          // the client's Write failed: the RST arrived
	time.Sleep(50 * time.Millisecond) // nothing more in flight
	got, err := io.ReadAll(st)
	if string(got) != "response" || err != nil {
		t.Errorf("client read %q, %v; want \"response\", <nil> (written before Close and followed by FIN)", got, err)
	}
	st.Close()
}

// TestCloseStopsPeerWaitingForCredit: a stream closed with unread data
// while the peer's Write waits for stream credit stops that Write with
// ErrStreamReset (no DATA will come to trigger the reset), and the stream
// leaves the session, so Shutdown is not held up by it.
func TestCloseStopsPeerWaitingForCredit(t *testing.T) {
	t.Parallel()
	client, server := tcpSessions(t, nil, nil)
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	werr := make(chan error, 1)
	go func() {
		_, err := st.Write(make([]byte, 1<<20)) // more than the 256 KiB stream window
		werr <- err
	}()
	srv, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(srv, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the peer's credit used up", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.recvAvail == 0
	})
	srv.Close()
	select {
	case err := <-werr:
		if !errors.Is(err, ErrStreamReset) {
			t.Errorf("the peer's Write after Close: %v, want ErrStreamReset", err)
		}
	case <-time.After(5 * time.Second):
		st.Close()
		<-werr
		t.Fatal("the peer's Write still waited for credit 5 s after Close")
	}
	waitFor(t, "the closed stream to leave the session", func() bool { return server.NumStreams() == 0 })
}

// TestEarlyResponse: the client sends a 200 KiB body (within the window)
// and FIN, then reads the response; the server reads only the first bytes,
// answers and closes (an HTTP 413, say). Body frames still in flight when
// the server closes must not make the client lose the response.
func TestEarlyResponse(t *testing.T) {
	t.Parallel()
	lost := 0
	for i := 0; i < 10; i++ {
		func() {
			client, server := tcpSessions(t, nil, nil)
			st, err := client.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				st.Write(make([]byte, 200<<10))
				st.CloseWrite()
			}()
			srv, err := server.AcceptStream()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(srv, make([]byte, 10)); err != nil {
				t.Fatal(err)
			}
			srv.Write([]byte("413 too large"))
			srv.Close()
			got, err := io.ReadAll(st)
			if string(got) != "413 too large" || err != nil {
				lost++
				t.Logf("client read %q, %v", got, err)
			}
			st.Close()
		}()
	}
	if lost > 0 {
		t.Errorf("%d of 10 responses lost (written before Close, followed by FIN)", lost)
	}
}

// TestResetFollowsFIN: DATA that arrives for a stream closed here while its
// FIN still waits to go out makes the RST follow the FIN, never overtake it
// (an RST first would make the peer discard the response).
func TestResetFollowsFIN(t *testing.T) {
	t.Parallel()
	// net.Pipe: the victim's writer waits for the attacker to read, which
	// holds the FIN back until the attacker's DATA has arrived.
	victim, a := newAttack(t, nil, false)
	if _, err := a.until(func(h frameHeader) bool { return h.typ == framePing }); err != nil {
		t.Fatal(err)
	}
	if err := a.send(dataFrame(flagSYN, 1, []byte("request"))); err != nil {
		t.Fatal(err)
	}
	st, err := victim.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("response")); err != nil { // the writer blocks writing it
		t.Fatal(err)
	}
	st.Close()
	if err := a.send(dataFrame(0, 1, []byte("more of the request"))); err != nil {
		t.Fatal(err)
	}
	var order []string
	for len(order) == 0 || order[len(order)-1] != "RST" {
		h, err := a.readFrame()
		if err != nil {
			t.Fatalf("after %v: %v", order, err)
		}
		switch {
		case h.streamID != 1:
		case h.typ == frameData && h.flags&flagFIN != 0:
			order = append(order, "FIN")
		case h.typ == frameData:
			order = append(order, "DATA")
		case h.typ == frameReset:
			order = append(order, "RST")
		}
	}
	if got := strings.Join(order, " "); got != "DATA FIN RST" && got != "FIN RST" {
		t.Errorf("frames on the stream: %s, want the response, FIN, then RST", got)
	}
}

// TestCloseEarlyNoGlitches: clients upload and download bulk on each
// stream and close after reading about one window update's worth (so a
// WINDOW_UPDATE is queued just before Close, and their RST follows FIN);
// servers read everything, answer in bulk until the write fails, and close
// a little later. Neither side is charged a glitch: the frames that cross
// an RST are a correct peer's.
func TestCloseEarlyNoGlitches(t *testing.T) {
	client, server := tcpSessions(t, nil, nil)
	const workers = 48
	dur := 2 * time.Second
	pump := func(st *Stream) chan struct{} {
		d := make(chan struct{})
		go func() {
			defer close(d)
			chunk := make([]byte, 16<<10)
			for {
				if _, err := st.Write(chunk); err != nil {
					return
				}
			}
		}()
		return d
	}
	go func() {
		for {
			st, err := server.AcceptStream()
			if err != nil {
				return
			}
			go func(st *Stream) {
				go io.Copy(io.Discard, st)
				<-pump(st)
				time.Sleep(20 * time.Millisecond)
				st.Close()
			}(st)
		}
	}()
	done := make(chan struct{})
	stop := time.Now().Add(dur)
	var n atomic.Int64
	for w := 0; w < workers; w++ {
		go func(w int) {
			defer func() { done <- struct{}{} }()
			for r := 0; time.Now().Before(stop) && client.Err() == nil; r++ {
				st, err := client.OpenStream()
				if err != nil {
					return
				}
				d := pump(st)
				io.CopyN(io.Discard, st, int64(190<<10+(w*7+r*13)%17*1000))
				st.Close()
				<-d
				n.Add(1)
			}
		}(w)
	}
	for w := 0; w < workers; w++ {
		<-done
	}
	t.Logf("%d streams", n.Load())
	if err := client.Err(); err != nil {
		t.Fatalf("client session died: %v", err)
	}
	if err := server.Err(); err != nil {
		t.Fatalf("server session died: %v", err)
	}
	waitFor(t, "stream tables to empty", func() bool {
		return client.NumStreams() == 0 && server.NumStreams() == 0
	})
	client.Close()
	server.Close()
	// Close waited for the readers: glitches is safe to read now.
	if client.glitches != 0 || server.glitches != 0 {
		t.Errorf("a correct peer was charged glitches: client %d, server %d", client.glitches, server.glitches)
	}
}

// TestStreamReset: Reset aborts the stream: the peer's Read fails with
// ErrStreamReset instead of ending in io.EOF (what it received is no
// complete reply), its Write fails too, and this side's calls fail with
// net.ErrClosed. A stream reset right after OpenStream leaves the table at
// once, and the session goes on.
func TestStreamReset(t *testing.T) {
	t.Parallel()
	client, server := tcpSessions(t, nil, nil)
	a, b := streamPair(t, client, server)
	if _, err := b.Write([]byte("partial reply")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := io.ReadFull(a, buf[:len("partial reply")]); err != nil {
		t.Fatal(err)
	}
	if err := b.Reset(); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := a.Read(buf); !errors.Is(err, ErrStreamReset) {
		t.Errorf("peer's Read after Reset: %v, want ErrStreamReset", err)
	}
	if _, err := a.Write(buf); !errors.Is(err, ErrStreamReset) {
		t.Errorf("peer's Write after Reset: %v, want ErrStreamReset", err)
	}
	if _, err := b.Write(buf); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Reset: %v, want net.ErrClosed", err)
	}
	if err := b.Reset(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Reset: %v, want net.ErrClosed", err)
	}
	a.Close()
	waitFor(t, "both ends to forget the stream", func() bool { return client.NumStreams() == 0 && server.NumStreams() == 0 })

	unsent, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	unsent.Reset()
	if client.NumStreams() != 0 {
		t.Errorf("a stream reset before its SYN went out is still in the table")
	}
	// The peer never hears of it: a stream opened next works.
	c, d := streamPair(t, client, server)
	c.Write([]byte("x"))
	if _, err := io.ReadFull(d, buf[:1]); err != nil {
		t.Errorf("stream after the unsent reset one: %v", err)
	}
}

// TestCloseRead: after CloseRead, a blocked Read returns and later Reads
// fail with net.ErrClosed; what the peer sends, before and after, is
// discarded and credited back (its Writes of many windows' worth complete,
// and the session's other streams keep their credit); the stream's window
// does not grow for the discarded bytes; Write still works.
func TestCloseRead(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"tcp", "pipe"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			cfg := &Config{InitialStreamWindow: 64 << 10, SessionWindow: 1 << 20}
			var client, server *Session
			if kind == "tcp" {
				client, server = tcpSessions(t, cfg, cfg)
			} else {
				client, server = pipeSessions(t, cfg, cfg)
			}
			a, b := streamPair(t, client, server)

			// Unread data in b's buffer, and a Read blocked on it after.
			if _, err := a.Write([]byte("unread")); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the data to arrive", func() bool {
				b.mu.Lock()
				defer b.mu.Unlock()
				return b.buffered > 0
			})
			buf := make([]byte, 6)
			if _, err := io.ReadFull(b, buf); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Write([]byte("unread")); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "more data to arrive", func() bool {
				b.mu.Lock()
				defer b.mu.Unlock()
				return b.buffered > 0
			})
			rerr := make(chan error, 1)
			other := make([]byte, 1)
			c, d := streamPair(t, client, server)
			go func() {
				_, err := d.Read(other) // blocks: nothing sent on c yet
				rerr <- err
			}()

			if err := b.CloseRead(); err != nil {
				t.Fatalf("CloseRead: %v", err)
			}
			if err := b.CloseRead(); err != nil {
				t.Errorf("second CloseRead: %v, want nil", err)
			}
			if _, err := b.Read(buf); !errors.Is(err, net.ErrClosed) {
				t.Errorf("Read after CloseRead: %v, want net.ErrClosed", err)
			}

			// 48 stream windows, three session windows: without the
			// credit the Write would stall after the first window.
			a.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if n, err := a.Write(make([]byte, 3*cfg.SessionWindow)); err != nil {
				t.Fatalf("peer's Write after CloseRead: %d bytes, %v", n, err)
			}
			// The other stream still has session credit.
			if _, err := c.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			if err := recvErr(t, rerr); err != nil {
				t.Fatalf("Read on another stream: %v", err)
			}
			// Alone in its session, a stream that is read grows its
			// window; one nobody reads keeps it.
			c.Close()
			d.Close()
			waitFor(t, "the other stream to leave the session", func() bool { return server.numStreams.Load() == 1 })
			if n, err := a.Write(make([]byte, 3*cfg.SessionWindow)); err != nil {
				t.Fatalf("peer's Write after CloseRead: %d bytes, %v", n, err)
			}
			b.mu.Lock()
			win := b.recvWindow
			b.mu.Unlock()
			if win != int64(cfg.InitialStreamWindow) {
				t.Errorf("window of the read-closed stream %d, want %d", win, cfg.InitialStreamWindow)
			}

			// Writing back still works, up to the peer's EOF.
			if _, err := b.Write([]byte("reply")); err != nil {
				t.Fatalf("Write after CloseRead: %v", err)
			}
			if err := b.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(a)
			if err != nil || string(got) != "reply" {
				t.Fatalf("peer read %q, %v; want \"reply\", nil", got, err)
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the stream to leave the session", func() bool {
				b.mu.Lock()
				defer b.mu.Unlock()
				return b.has(stRemoved)
			})
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if err := b.CloseRead(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("CloseRead after Close: %v, want net.ErrClosed", err)
			}
		})
	}
}

// TestCloseReadUnblocksRead: CloseRead ends a Read blocked on an idle
// stream, waiting for the session's reader goroutine. (A Read holding the
// read token: TestReadTokenInterrupted.)
func TestCloseReadUnblocksRead(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"tcp", "pipe"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			var client, server *Session
			if kind == "tcp" {
				client, server = tcpSessions(t, nil, nil)
			} else {
				client, server = pipeSessions(t, nil, nil)
			}
			_, b := streamPair(t, client, server)
			rerr := make(chan error, 1)
			go func() {
				_, err := b.Read(make([]byte, 10))
				rerr <- err
			}()
			time.Sleep(20 * time.Millisecond) // let the Read block
			if err := b.CloseRead(); err != nil {
				t.Fatal(err)
			}
			if err := recvErr(t, rerr); !errors.Is(err, net.ErrClosed) {
				t.Errorf("blocked Read: %v, want net.ErrClosed", err)
			}
		})
	}
}

// TestHalfClosedStreamReleasesGrowth: on a long link, stream A uploads (its
// window grows), the client half-closes it, and the server reads it to
// io.EOF but keeps A open to reply (a long streamed response). The peer
// can send nothing more on A, so A gives its window growth back at the
// FIN, and a second upload on B grows its window as A's did. (Found by a
// review helper: A kept the growth until it was removed, and B crawled at
// InitialStreamWindow per round trip, 9.6 MB/s instead of 85-99.)
func TestHalfClosedStreamReleasesGrowth(t *testing.T) {
	t.Parallel()
	for _, closeA := range []bool{true, false} {
		name := "A finished"
		if !closeA {
			name = "A half-closed, reply pending"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c1, c2 := delayProxy(t, 20*time.Millisecond)
			client, server := sessionPair(t, c1, c2, nil, nil)
			waitFor(t, "the start-up RTT samples", func() bool { return server.startupPingsDone() })
			initial := int64(DefaultConfig().InitialStreamWindow)

			// largest reports the largest window st had while upload ran.
			largest := func(st *Stream, upload func()) int64 {
				done := make(chan struct{})
				most := make(chan int64)
				go func() {
					var m int64
					tick := time.NewTicker(time.Millisecond)
					defer tick.Stop()
					for {
						st.mu.Lock()
						m = max(m, st.recvWindow)
						st.mu.Unlock()
						select {
						case <-done:
							most <- m
							return
						case <-tick.C:
						}
					}
				}()
				upload()
				close(done)
				return <-most
			}
			transfer := func(w, r *Stream, size int) func() {
				return func() {
					go func() { w.Write(make([]byte, size)); w.CloseWrite() }()
					if _, err := io.Copy(io.Discard, r); err != nil {
						t.Error(err)
					}
				}
			}

			a, ar := streamPair(t, client, server)
			if most := largest(ar, transfer(a, ar, 24<<20)); most < 4*initial {
				t.Fatalf("A's window grew only to %d: the link does not look long", most)
			}
			if closeA {
				ar.Close()
				a.Close()
				waitFor(t, "A removed", func() bool { return server.NumStreams() == 0 })
			} else if g := server.windowGrowth.Load(); g != 0 {
				t.Errorf("A has the peer's FIN and still holds %d bytes of window growth", g)
			}
			b, br := streamPair(t, client, server)
			if most := largest(br, transfer(b, br, 16<<20)); most < 4*initial {
				t.Errorf("B's window grew only to %d (initial %d): the growth budget is still held by A, whose receive side has ended", most, initial)
			}
		})
	}
}

// TestCloseStopsPeerWaitingForSessionCredit: the peer's Write on a
// stream waits for session credit (other streams' unread data fill the
// session window) while it still has stream credit. This side closes the
// stream, discarding what it buffered. PROTOCOL.md: "Data discarded without
// being read (closed or reset streams, refused SYNs) is credited back to the
// session at once", and Close's doc: "if the peer keeps sending (or waits for
// credit to send more), the stream is reset right behind the FIN: the peer's
// Writes fail with ErrStreamReset". So the peer's Write must end. (Found by
// a review helper: discarded bytes waited for a quarter window's worth.)
func TestCloseStopsPeerWaitingForSessionCredit(t *testing.T) {
	t.Parallel()
	for _, closeRead := range []bool{false, true} {
		t.Run(map[bool]string{false: "Close", true: "CloseRead"}[closeRead], func(t *testing.T) {
			t.Parallel()
			testDiscardCreditsSession(t, closeRead)
		})
	}
}

func testDiscardCreditsSession(t *testing.T, closeRead bool) {
	scfg := &Config{SessionWindow: 1 << 20, InitialStreamWindow: 1 << 20}
	client, server := tcpSessions(t, nil, scfg)
	waitFor(t, "handshake", func() bool { return client.knowsPeer() && server.knowsPeer() })
	// Stream a: 900 KiB the server's application has not read yet.
	a, ar := streamPair(t, client, server)
	if _, err := a.Write(make([]byte, 900<<10)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a's data buffered", func() bool {
		ar.mu.Lock()
		defer ar.mu.Unlock()
		return ar.buffered+ar.rgot == 900<<10
	})
	// Stream b: the client writes 1 MiB; 124 KiB fit in the session window.
	b, br := streamPair(t, client, server)
	werr := make(chan error, 1)
	go func() {
		_, err := b.Write(make([]byte, 1<<20))
		werr <- err
	}()
	waitFor(t, "b's sender out of session credit", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return client.sendWindow.Load() == 0 && b.sendCredit > 0 && len(b.wbuf) > 0
	})
	waitFor(t, "b's data buffered", func() bool {
		br.mu.Lock()
		defer br.mu.Unlock()
		return br.buffered == 124<<10
	})
	// The server's application rejects b: Close discards what b buffered.
	if closeRead {
		// CloseRead: "what the peer sends afterwards, credited back to
		// it so that its Writes never wait for a reader that is gone".
		br.CloseRead()
	} else {
		br.Close()
	}
	returned := false
	select {
	case err := <-werr:
		returned = true
		if closeRead {
			if err != nil {
				t.Errorf("peer's Write after CloseRead: %v, want it to complete", err)
			}
		} else if !errors.Is(err, ErrStreamReset) {
			t.Errorf("peer's Write on the closed stream: %v, want ErrStreamReset", err)
		}
	case <-time.After(3 * time.Second):
		b.mu.Lock()
		t.Errorf("peer's Write on the closed (or read-closed) stream still blocked after 3s: stream credit %d, session credit %d; server holds %d bytes of discarded data uncredited (session window update threshold %d)",
			b.sendCredit, client.sendWindow.Load(), server.recvUnacked.Load(), server.cfg.SessionWindow/4)
		b.mu.Unlock()
	}
	// Unblock: read a.
	go io.Copy(io.Discard, ar)
	if !returned {
		select {
		case err := <-werr:
			t.Logf("after reading a, b's Write returned %v", err)
		case <-time.After(5 * time.Second):
		}
	}
}

// TestCloseStopsPeerStarvedOfSessionCredit: as above with nothing of
// the closed stream buffered: four streams whose application has not read
// yet fill the 1 MiB session window, so the peer's Write on a fifth stream
// cannot send a byte. This side's application closes that stream. The peer
// "waits for credit to send more", so Close's doc promises an RST; Close
// looks only at the stream's credit (256 KiB unused), sends FIN alone, and
// the peer's Write stayed blocked. (Found by a review helper.)
func TestCloseStopsPeerStarvedOfSessionCredit(t *testing.T) {
	t.Parallel()
	client, server := tcpSessions(t, nil, &Config{SessionWindow: 1 << 20})
	var unread []*Stream
	for range 4 {
		a, ar := streamPair(t, client, server)
		if _, err := a.Write(make([]byte, 256<<10)); err != nil {
			t.Fatal(err)
		}
		unread = append(unread, ar)
	}
	for _, ar := range unread {
		waitFor(t, "data buffered", func() bool {
			ar.mu.Lock()
			defer ar.mu.Unlock()
			return ar.buffered == 256<<10
		})
	}
	b, br := streamPair(t, client, server)
	werr := make(chan error, 1)
	go func() {
		_, err := b.Write(make([]byte, 64<<10))
		werr <- err
	}()
	waitFor(t, "b's Write waiting", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.wbuf) > 0 && client.sendWindow.Load() == 0
	})
	br.Close()
	returned := false
	select {
	case err := <-werr:
		returned = true
		if !errors.Is(err, ErrStreamReset) {
			t.Errorf("peer's Write on the closed stream: %v, want ErrStreamReset", err)
		}
	case <-time.After(3 * time.Second):
		b.mu.Lock()
		t.Errorf("peer's Write on the closed stream still blocked after 3s (session credit %d, stream credit %d)", client.sendWindow.Load(), b.sendCredit)
		b.mu.Unlock()
	}
	for _, ar := range unread {
		go io.Copy(io.Discard, ar)
	}
	if !returned {
		select {
		case <-werr:
		case <-time.After(5 * time.Second):
		}
	}
}

// TestCancelWhileStarvedNoRapidReset: an HTTP-style client has a few
// downloads it has not read yet, which use all the session credit it gave
// the server; meanwhile it cancels requests (Write request, Close before the
// reply). In 7d8e77b each such Close sent RST behind the FIN because
// peerStarved is set, and the server counts every one as a rapid reset (it
// sent no DATA on the stream: it could not, having no session credit), so
// the server ended the honest session with ErrProtocol. (Found by a review
// helper.)
func TestCancelWhileStarvedNoRapidReset(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		cfg       *Config
		downloads int // of 256 KiB: enough to use up the session window
	}{
		{"SessionWindow=1MiB", &Config{SessionWindow: 1 << 20}, 4},
		{"defaults", nil, 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testCancelWhileStarved(t, tc.cfg, tc.downloads)
		})
	}
}

func testCancelWhileStarved(t *testing.T, ccfg *Config, downloads int) {
	client, server := tcpSessions(t, ccfg, nil)
	var wg sync.WaitGroup
	defer func() {
		client.Close() // ends the accept loop and the handlers' Writes
		server.Close()
		wg.Wait()
	}()
	wg.Add(1) // the accept loop: later Adds happen while the count is above zero
	go func() {
		defer wg.Done()
		for {
			st, err := server.AcceptStream()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer st.Close()
				io.Copy(io.Discard, st) // the request
				st.Write(make([]byte, 256<<10))
			}()
		}
	}()
	var unread []*Stream
	for range downloads {
		st, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		st.Write([]byte("GET big"))
		st.CloseWrite()
		unread = append(unread, st)
	}
	waitFor(t, "the server out of session credit", func() bool { return server.sendWindow.Load() == 0 })
	deadline := time.Now().Add(5 * time.Second)
	n := 0
	for ; n < 1500 && time.Now().Before(deadline) && server.Err() == nil; n++ {
		st, err := client.OpenStream()
		if err != nil {
			t.Fatalf("OpenStream %d: %v", n, err)
		}
		st.Write([]byte("GET small"))
		st.Close() // cancelled
	}
	time.Sleep(200 * time.Millisecond)
	if err := server.Err(); err != nil {
		t.Errorf("after %d cancelled requests the server ended the session: %v", n, err)
	}
	if err := client.Err(); err != nil {
		t.Errorf("client: %v", err)
	}
	for _, st := range unread {
		st.Close()
	}
}

// TestReadAsCloseRunsGrowsNothing: a Read whose data the session reader
// delivered as Close ran credits it when it wakes, after Close gave the
// stream's window growth back. That credit must not grow the closed
// stream's window again: the growth would never be given back if the
// stream had left the table meanwhile, and later streams could grow less.
// (consumedLocked is called as that Read calls it: the interleaving is
// hard to bring about from outside.)
func TestReadAsCloseRunsGrowsNothing(t *testing.T) {
	t.Parallel()
	client, server := tcpSessions(t, nil, nil)
	forceShortLink(t, server) // a lone stream on a short link grows to loneStreamWindow
	_, b := streamPair(t, client, server)
	b.Close()
	initial := int64(server.cfg.InitialStreamWindow)
	b.mu.Lock()
	b.consumedLocked(int(initial))
	window := b.recvWindow
	b.mu.Unlock()
	if window != initial {
		t.Errorf("closed stream's window = %d after a Read's credit, want %d", window, initial)
	}
	if g := server.windowGrowth.Load(); g != 0 {
		t.Errorf("session window growth = %d with only a closed stream", g)
	}
}

// TestSteadyStateNoAllocs checks that Write and Read on an open stream
// allocate nothing: a Read that finds the data buffered, one that waits for
// it and reads the connection itself, and Writes that wait for credit.
// Not parallel: AllocsPerRun counts every goroutine's allocations.
func TestSteadyStateNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	type mode int
	const (
		writeRead mode = iota // Write, then Read in the same goroutine
		pingPong              // a round trip through an echoing goroutine
		bulk                  // 32 KiB Writes to a goroutine that reads
	)
	for _, tc := range []struct {
		name string
		pair func(testing.TB, *Config, *Config) (*Session, *Session)
		mode mode
	}{
		{"tcp/write-read", tcpSessions, writeRead},
		{"tcp/ping-pong", tcpSessions, pingPong},
		{"tcp/bulk", tcpSessions, bulk},
		{"pipe/write-read", pipeSessions, writeRead},
		{"pipe/ping-pong", pipeSessions, pingPong},
		{"pipe/bulk", pipeSessions, bulk},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := tc.pair(t, nil, nil)
			a, b := streamPair(t, client, server)
			var op func()
			switch tc.mode {
			case writeRead, pingPong:
				buf := make([]byte, 1024)
				far := b
				if tc.mode == pingPong {
					buf = buf[:64]
					go io.Copy(b, b)
					far = a
				}
				op = func() {
					if _, err := a.Write(buf); err != nil {
						t.Error(err)
					}
					if _, err := io.ReadFull(far, buf); err != nil {
						t.Error(err)
					}
				}
			case bulk:
				go func() {
					buf := make([]byte, 64<<10)
					for {
						if _, err := b.Read(buf); err != nil {
							return
						}
					}
				}()
				buf := make([]byte, 32<<10)
				op = func() {
					if _, err := a.Write(buf); err != nil {
						t.Error(err)
					}
				}
			}
			for range 100 { // past any first use and window growth
				op()
			}
			if n := testing.AllocsPerRun(1000, op); n != 0 {
				t.Errorf("%v allocations per operation, want 0", n)
			}
		})
	}
}

// TestReceiveBufferRandom drives a stream's receive buffer with random
// deliveries (1 byte to 64 KiB) and reads (1 byte to 20 KiB), checking
// after every step that the bytes come out in order and that the chunks
// hold at most twice what is buffered plus 1 KiB (SECURITY.md). Two small
// chunks, one partly read and one partly filled, held 2 KiB for 2 bytes
// (found by a review helper, whose test this is).
func TestReceiveBufferRandom(t *testing.T) {
	t.Parallel()
	for seed := range uint64(100) {
		r := rand.New(rand.NewPCG(seed, 0))
		st := &Stream{}
		st.rcond.L = &st.mu
		var in, out uint32
		for step := range 3000 {
			if r.IntN(2) == 0 {
				n := 1 + r.IntN([]int{16, 1024, 9000, 65536}[r.IntN(4)])
				if st.buffered+n > 1<<20 {
					n = 1
				}
				p := make([]byte, n)
				for i := range p {
					p[i] = byte(in * 2654435761 >> 24)
					in++
				}
				st.deliverLocked(p)
			} else if st.buffered > 0 {
				p := make([]byte, 1+r.IntN([]int{3, 1100, 20000}[r.IntN(3)]))
				n := st.readBufferedLocked(p)
				for i := range n {
					if want := byte(out * 2654435761 >> 24); p[i] != want {
						t.Fatalf("seed %d step %d: byte %d is %d, want %d", seed, step, out, p[i], want)
					}
					out++
				}
			}
			held := 0
			for c := st.rhead; c != nil; c = c.next {
				held += len(c.buf)
			}
			if bound := 2*st.buffered + smallChunkSize; held > bound {
				t.Fatalf("seed %d step %d: %d B of chunks for %d buffered (bound %d)", seed, step, held, st.buffered, bound)
			}
		}
	}
}

// TestRepackKeepsFullSmallChunks: a repack copies large chunks and small
// ones partly read or filled, never a full small one. It copied every
// small chunk after one partly read, so a peer keeping the buffer near
// 16 KiB with 1-byte frames made each 2-byte Read copy all of it (found by
// a review helper).
func TestRepackKeepsFullSmallChunks(t *testing.T) {
	t.Parallel()
	st := &Stream{}
	st.rcond.L = &st.mu
	for i := range 16 {
		st.deliverLocked(bytes.Repeat([]byte{byte(i)}, smallChunkSize))
	}
	st.deliverLocked([]byte{1}) // 16 KiB buffered already: a large chunk
	full := st.rhead.next       // all 1s
	if st.readBufferedLocked(make([]byte, 2)); len(st.rtail.buf) != smallChunkSize {
		t.Fatal("no repack: a large chunk is left below 16 KiB buffered")
	}
	// A chunk copied goes back to the pool, and the repack may take it
	// again: what it holds tells.
	if full.r != 0 || !bytes.Equal(full.buf[:full.w], bytes.Repeat([]byte{1}, smallChunkSize)) {
		t.Error("the repack copied a full small chunk")
	}
	for c := st.rhead; c != full; c = c.next {
		if c == nil {
			t.Fatal("the full small chunk left the buffer")
		}
	}
}

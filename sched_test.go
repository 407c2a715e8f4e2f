package tcpchan

import (
	"bytes"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// frameSummary is what the scheduler order tests compare.
type frameSummary struct {
	Type   string
	Flags  uint8
	Stream uint32
	Length uint32
}

func summarize(t *testing.T, b []byte) []frameSummary {
	t.Helper()
	var out []frameSummary
	for len(b) > 0 {
		h, err := decodeHeader(b, maxFrameSizeLimit)
		if err != nil {
			t.Fatalf("batch holds an invalid frame: %v", err)
		}
		out = append(out, frameSummary{h.typ.String(), h.flags, h.streamID, h.length})
		b = b[headerSize:]
		if h.typ == frameData {
			b = b[h.length:]
		}
	}
	return out
}

// idleSession returns a session whose goroutines are not running, so the
// writer's scheduling can be driven by hand.
func idleSession(t *testing.T) *Session {
	s, _, err := buildSession(nil, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func offer(t *testing.T, s *Session, n int) *Stream {
	st, err := s.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	st.state |= stWriting
	st.wbuf = make([]byte, n)
	s.scheduleLocked(st)
	st.mu.Unlock()
	return st
}

func TestSchedulerRoundRobin(t *testing.T) {
	t.Parallel()
	s := idleSession(t)
	a := offer(t, s, 3000)
	b := offer(t, s, 1500)
	c := offer(t, s, 500)
	c.mu.Lock()
	c.state |= stFinPending
	c.mu.Unlock()
	// Control frames queued last still go first.
	s.queueControl(frameHeader{typ: framePing, flags: flagACK, length: 42})
	s.queueControl(frameHeader{typ: frameWindowUpdate, streamID: 2, length: 100})

	got := summarize(t, s.fillBatch(nil))
	const syn, fin = flagSYN, flagFIN
	want := []frameSummary{
		{"PING", flagACK, 0, 42},
		{"WINDOW_UPDATE", 0, 2, 100},
		{"DATA", syn, a.id, 1024},
		{"DATA", syn, b.id, 1024},
		{"DATA", syn | fin, c.id, 500},
		{"DATA", 0, a.id, 1024},
		{"DATA", 0, b.id, 476},
		{"DATA", 0, a.id, 952},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("frame order (-want +got):\n%s", diff)
	}
	if s.fillBatch(nil) != nil {
		t.Errorf("second batch not empty")
	}
}

func TestSchedulerCredit(t *testing.T) {
	t.Parallel()
	s := idleSession(t)
	a := offer(t, s, 3000)
	a.mu.Lock()
	a.sendCredit = 1500 // stream window smaller than the data
	a.mu.Unlock()
	b := offer(t, s, 3000)
	s.sendWindow.Store(2600) // and a session window smaller than both

	got := summarize(t, s.fillBatch(nil))
	want := []frameSummary{
		{"DATA", flagSYN, a.id, 1024},
		{"DATA", flagSYN, b.id, 1024},
		{"DATA", 0, a.id, 476}, // a's stream credit ends here
		{"DATA", 0, b.id, 76},  // and the session's here: b is parked
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("frames (-want +got):\n%s", diff)
	}
	if s.sendWindow.Load() != 0 {
		t.Errorf("session window = %d, want 0", s.sendWindow.Load())
	}
	// Session credit unparks b; a still waits for stream credit.
	s.addSendWindow(10000)
	got = summarize(t, s.fillBatch(nil))
	want = []frameSummary{{"DATA", 0, b.id, 1024}, {"DATA", 0, b.id, 876}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after session credit (-want +got):\n%s", diff)
	}
	// Stream credit lets a finish.
	a.mu.Lock()
	a.sendCredit += 5000
	s.scheduleLocked(a)
	a.mu.Unlock()
	got = summarize(t, s.fillBatch(nil))
	want = []frameSummary{{"DATA", 0, a.id, 1024}, {"DATA", 0, a.id, 476}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after stream credit (-want +got):\n%s", diff)
	}
}

func TestSchedulerBatchLimit(t *testing.T) {
	t.Parallel()
	s := idleSession(t)
	s.sendWindow.Store(maxWindow)
	st := offer(t, s, 1<<20)
	st.mu.Lock()
	st.sendCredit = maxWindow
	st.mu.Unlock()
	b := s.fillBatch(nil)
	if len(b) < maxBatch || len(b) > maxBatch+headerSize+1024 {
		t.Errorf("batch of %d bytes, want about %d", len(b), maxBatch)
	}
	for _, f := range summarize(t, b) {
		if f.Length > 1024 {
			t.Fatalf("frame of %d bytes exceeds MaxFrameSize", f.Length)
		}
	}
}

// TestSchedulerCreditDuringBatch: session credit that arrives while a batch
// is being filled must be used (or the stream parked), never leave the
// writer re-queueing a stream that emits nothing.
func TestSchedulerCreditDuringBatch(t *testing.T) {
	t.Parallel()
	s := idleSession(t)
	a := offer(t, s, 4096)
	a.mu.Lock()
	a.sendCredit = maxWindow
	a.mu.Unlock()
	b := offer(t, s, 4096)
	b.mu.Lock()
	b.sendCredit = maxWindow
	b.mu.Unlock()
	s.sendWindow.Store(1024)
	// The peer's credit lands after the batch read the session window,
	// as when the reader handles a WINDOW_UPDATE meanwhile.
	a.mu.Lock()
	done := make(chan []byte)
	go func() { done <- s.fillBatch(nil) }()
	for {
		s.wmu.Lock()
		popped := !a.queued
		s.wmu.Unlock()
		if popped {
			break
		}
		runtime.Gosched()
	}
	s.sendWindow.Add(8192)
	a.mu.Unlock()
	var got []frameSummary
	select {
	case batch := <-done:
		got = summarize(t, batch)
	case <-time.After(10 * time.Second):
		t.Fatal("fillBatch spins when session credit arrives during a batch")
	}
	var sent uint32
	for _, f := range got {
		sent += f.Length
	}
	if sent != 8192 {
		t.Errorf("batch carried %d bytes, want all 8192 (1024 + 8192 credit, 8192 offered): %v", sent, got)
	}
}

// TestWriteAloneParks: a Write on the fast path (token free, nothing else
// queued) that finds the session window empty parks, and completes once the
// peer's reading returns session credit.
func TestWriteAloneParks(t *testing.T) {
	t.Parallel()
	scfg := &Config{InitialStreamWindow: 1 << 20, SessionWindow: 1 << 20}
	client, server := tcpSessions(t, nil, scfg)
	a, sa := streamPair(t, client, server)
	if _, err := a.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the writer idle", func() bool {
		client.wmu.Lock()
		defer client.wmu.Unlock()
		return !client.w.held && len(client.w.pending) == 0 && client.sendWindow.Load() == 0
	})
	b, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	sb, err := server.AcceptStream() // the SYN needs no credit
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the writer idle again", func() bool {
		client.wmu.Lock()
		defer client.wmu.Unlock()
		return !client.w.held && !b.queued
	})
	msg := bytes.Repeat([]byte("tcpchan "), 400)
	written := make(chan error, 1)
	go func() {
		_, err := b.Write(msg)
		written <- err
	}()
	waitFor(t, "the Write parked", func() bool {
		client.wmu.Lock()
		defer client.wmu.Unlock()
		return b.parked
	})
	select {
	case err := <-written:
		t.Fatalf("Write returned %v with no session credit", err)
	default:
	}
	if _, err := io.ReadFull(sa, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	sb.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(sb, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("peer read %d bytes, %v; want the message", len(got), err)
	}
	if err := <-written; err != nil {
		t.Errorf("Write: %v", err)
	}
}

// TestParkedStreamNotStarved: a stream that takes the last session credit
// must not park ahead of the streams still waiting for their turn, or a
// peer that returns session credit a frame at a time (as the protocol
// allows) hands every frame to the same bulk stream.
func TestParkedStreamNotStarved(t *testing.T) {
	t.Parallel()
	victim, a := newAttackWith(t, nil, true, settings{streamWindow: 16 << 20, sessionWindow: 1 << 20, maxFrameSize: 1024, maxStreams: 100})
	if err := a.send(dataFrame(flagSYN, 1, nil), dataFrame(flagSYN, 3, nil)); err != nil {
		t.Fatal(err)
	}
	bulk, err := victim.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	small, err := victim.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	go bulk.Write(make([]byte, 4<<20))
	for got := 0; got < 1<<20; { // the bulk stream takes the whole session window
		h, err := a.readFrame()
		if err != nil {
			t.Fatal(err)
		}
		if h.typ == frameData {
			if h.streamID != 1 {
				t.Fatalf("unexpected DATA on stream %d", h.streamID)
			}
			got += int(h.length)
		}
	}
	parked := func(st *Stream) func() bool {
		return func() bool {
			victim.wmu.Lock()
			defer victim.wmu.Unlock()
			return st.parked
		}
	}
	waitFor(t, "the bulk stream parked", parked(bulk))
	go small.Write([]byte("hello"))
	waitFor(t, "the small stream parked", parked(small))
	var order []uint32
	for range 32 {
		if err := a.send(hdr(frameWindowUpdate, 0, 0, 1024)); err != nil {
			t.Fatal(err)
		}
		h, err := a.until(func(h frameHeader) bool { return h.typ == frameData && h.length > 0 })
		if err != nil {
			t.Fatal(err)
		}
		order = append(order, h.streamID)
		if h.streamID == 3 {
			return
		}
	}
	t.Fatalf("the small stream sent nothing in 32 session credits of one frame each; frames went to streams %v", order)
}

// schedLen counts the streams in the write scheduler: the ring and the
// parked list.
func schedLen(s *Session) (ring, parked int) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for st := s.sched.head; st != nil; st = st.schedNext {
		ring++
	}
	for st := s.sched.parkedHead; st != nil; st = st.schedNext {
		parked++
	}
	return ring, parked
}

// TestResetParkedStreamLeaves: a stream parked for session credit (the
// peer's session window is full of unread data on another stream) that is
// then reset, by this side or by the peer, must leave the write scheduler
// as it leaves the session's table, or every such stream stays pinned for
// as long as session credit does not come back.
func TestResetParkedStreamLeaves(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"local Reset", "peer Reset"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			// MaxGlitches -1: resetting a stream the server sent nothing on
			// is a rapid reset there, which is not what is tested.
			client, server := sessionCreditSpent(t, &Config{MaxGlitches: -1})
			if how == "local Reset" {
				go func() { // ends when the server closes
					for {
						st, err := server.AcceptStream()
						if err != nil {
							return
						}
						go func() { // ends with the client's RST
							st.Read(make([]byte, 1))
							st.Close()
						}()
					}
				}()
			}
			waitFor(t, "the session credit used up", func() bool { return client.sendWindow.Load() == 0 })
			for range 200 {
				b, err := client.OpenStream()
				if err != nil {
					t.Fatal(err)
				}
				werr := make(chan error, 1)
				go func() { _, err := b.Write(make([]byte, 64)); werr <- err }()
				waitFor(t, "the stream parked", func() bool {
					b.mu.Lock()
					defer b.mu.Unlock()
					client.wmu.Lock()
					defer client.wmu.Unlock()
					return b.parked && !b.has(stSynPending)
				})
				if how == "local Reset" {
					b.Reset()
				} else {
					sb, err := server.AcceptStream()
					if err != nil {
						t.Fatal(err)
					}
					sb.Reset()
				}
				if err := <-werr; err == nil {
					t.Fatal("Write on a reset stream succeeded")
				}
				if how == "peer Reset" {
					waitFor(t, "the stream forgotten", func() bool { return client.NumStreams() == 1 })
					b.Close()
				}
			}
			waitFor(t, "the streams forgotten", func() bool { return client.NumStreams() == 1 && server.NumStreams() == 1 })
			if ring, parked := schedLen(client); ring+parked > 0 {
				t.Errorf("%d finished streams still in the write scheduler (ring %d, parked %d)", ring+parked, ring, parked)
			}
		})
	}
}

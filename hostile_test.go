package tcpchan

// The hostile-peer suite: every attack and fault of SECURITY.md, each with
// its exact outcome, the memory it can make a session hold, and a check that
// an honest session beside the attacked one is unaffected. The attacker
// speaks the wire protocol by hand.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

// hdr encodes a frame header.
func hdr(typ frameType, flags uint8, id, length uint32) []byte {
	return appendHeader(nil, frameHeader{typ: typ, flags: flags, streamID: id, length: length})
}

// dataFrame encodes a DATA frame carrying payload.
func dataFrame(flags uint8, id uint32, payload []byte) []byte {
	return append(hdr(frameData, flags, id, uint32(len(payload))), payload...)
}

// attackerSettings is what the attacker announces: generous windows, so
// that what the victim sends is never held back by credit unless a test
// wants it.
var attackerSettings = settings{streamWindow: 256 << 10, sessionWindow: 16 << 20, maxFrameSize: 1024, maxStreams: 100}

// attacker is a hostile peer. It plays the client, so its streams are odd.
type attacker struct {
	conn net.Conn
	br   *bufio.Reader
}

// newAttack starts a victim server session with cfg on one end of a
// connection (net.Pipe, or TCP loopback if tcp is set) and an attacker that
// has exchanged prefaces on the other. Both are closed when the test ends,
// and the victim's goroutines must exit.
func newAttack(t testing.TB, cfg *Config, tcp bool) (*Session, *attacker) {
	t.Helper()
	return newAttackWith(t, cfg, tcp, attackerSettings)
}

// newAttackWith is newAttack with an attacker announcing ps.
func newAttackWith(t testing.TB, cfg *Config, tcp bool, ps settings) (*Session, *attacker) {
	t.Helper()
	var c1, c2 net.Conn
	if tcp {
		c1, c2 = tcpConnPair(t)
	} else {
		c1, c2 = net.Pipe()
	}
	return newAttackOn(t, c1, c2, cfg, ps)
}

// newAttackOn is newAttackWith on a given connection: the victim on
// victimEnd, the attacker on attackerEnd.
func newAttackOn(t testing.TB, victimEnd, attackerEnd net.Conn, cfg *Config, ps settings) (*Session, *attacker) {
	t.Helper()
	victim, err := Server(victimEnd, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		attackerEnd.Close()
		closeAndWait(t, victim)
	})
	return victim, handshakeWith(t, attackerEnd, ps)
}

// handshake makes conn an attacker: it sends the preface and reads the
// victim's.
func handshake(t *testing.T, conn net.Conn) *attacker {
	t.Helper()
	return handshakeWith(t, conn, attackerSettings)
}

// newAttackTCP is newAttack with the default Config over TCP on loopback,
// inside TLS if overTLS.
func newAttackTCP(t testing.TB, overTLS bool) (*Session, *attacker) {
	t.Helper()
	if !overTLS {
		return newAttack(t, nil, true)
	}
	serverTLS, clientTLS := testTLSConfigs(t)
	c1, c2 := tcpConnPair(t)
	return newAttackOn(t, tls.Server(c1, serverTLS), tls.Client(c2, clientTLS), nil, attackerSettings)
}

// handshakeWith is handshake announcing ps instead of attackerSettings.
func handshakeWith(t testing.TB, conn net.Conn, ps settings) *attacker {
	t.Helper()
	a := &attacker{conn: conn, br: bufio.NewReaderSize(conn, 64<<10)}
	sent := make(chan error, 1)
	go func() { sent <- a.send(appendPreface(nil, ps)) }() // net.Pipe: the write blocks until read
	pre := make([]byte, prefaceSize)
	if _, err := io.ReadFull(a.br, pre); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if _, err := decodePreface(pre); err != nil {
		t.Fatal(err)
	}
	return a
}

func (a *attacker) send(frames ...[]byte) error {
	_, err := a.conn.Write(bytes.Join(frames, nil))
	return err
}

// flood sends frame(from), frame(from+1), … in 16 KiB writes until frame
// n-1 is sent (n <= 0: no limit) or a write fails, and returns how many
// frames went out whole.
func (a *attacker) flood(from, n int, frame func(i int) []byte) int {
	var buf []byte
	var ends []int // where each frame in buf ends
	sent := 0
	for i := from; n <= 0 || i < n; i++ {
		buf = append(buf, frame(i)...)
		ends = append(ends, len(buf))
		if len(buf) >= 16<<10 || i == n-1 || i-from >= 10_000_000 {
			w, err := a.conn.Write(buf)
			for _, e := range ends {
				if e <= w {
					sent++
				}
			}
			if err != nil || i-from >= 10_000_000 { // the latter: the defence failed; the caller reports it
				return sent
			}
			buf, ends = buf[:0], ends[:0]
		}
	}
	return sent
}

// openAccepted opens stream id with one byte of data and returns it as the
// victim's application accepted it.
func (a *attacker) openAccepted(t testing.TB, victim *Session, id uint32) *Stream {
	t.Helper()
	if err := a.send(dataFrame(flagSYN, id, []byte("x"))); err != nil {
		t.Fatal(err)
	}
	st, err := victim.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// openRead is openAccepted for stream 1 with the byte read by the
// victim's application, once the victim has handled everything sent.
func (a *attacker) openRead(t *testing.T, victim *Session) *Stream {
	t.Helper()
	st := a.openAccepted(t, victim, 1)
	if _, err := st.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	a.sync(t)
	return st
}

// freeToken is freeTokenAttacked with the attacker sending st (its stream
// 1) the byte.
func (a *attacker) freeToken(t *testing.T, victim *Session, st *Stream) {
	t.Helper()
	freeTokenAttacked(t, victim, st, func() { a.send(dataFrame(0, 1, []byte("x"))) })
}

// unknownFrame is a frame of type 9, which no version defines: a protocol
// error for the victim.
var unknownFrame = []byte{9, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}

// readFrame reads the victim's next frame, discarding DATA payloads.
func (a *attacker) readFrame() (frameHeader, error) {
	var b [headerSize]byte
	if _, err := io.ReadFull(a.br, b[:]); err != nil {
		return frameHeader{}, err
	}
	h, err := decodeHeader(b[:], maxFrameSizeLimit)
	if err != nil {
		return h, err
	}
	if h.typ == frameData {
		_, err = a.br.Discard(int(h.length))
	}
	return h, err
}

// collectToEnd reads the victim's frames in a goroutine until the
// connection ends, and then sends their headers on the returned channel.
func (a *attacker) collectToEnd() <-chan []frameHeader {
	ch := make(chan []frameHeader, 1)
	go func() {
		var hs []frameHeader
		for {
			h, err := a.readFrame()
			if err != nil {
				ch <- hs
				return
			}
			hs = append(hs, h)
		}
	}()
	return ch
}

// checkToldProtocolError fails t unless the last of the victim's frames hs
// is a GOAWAY with PROTOCOL_ERROR: a session that the peer's protocol error
// ends tells the peer why before it closes the connection.
func checkToldProtocolError(t *testing.T, hs []frameHeader) {
	t.Helper()
	if len(hs) == 0 || hs[len(hs)-1].typ != frameGoAway {
		var last any = "none"
		if len(hs) > 0 {
			last = hs[len(hs)-1]
		}
		t.Fatalf("the victim's last frame before closing: %v, want GOAWAY with PROTOCOL_ERROR", last)
	}
	if code := errCode(hs[len(hs)-1].length); code != codeProtocol {
		t.Fatalf("the victim's GOAWAY has code %v, want %v", code, codeProtocol)
	}
}

// until reads the victim's frames until one satisfies match.
func (a *attacker) until(match func(frameHeader) bool) (frameHeader, error) {
	for {
		h, err := a.readFrame()
		if err != nil || match(h) {
			return h, err
		}
	}
}

// sync makes sure the victim has processed everything sent so far: it
// pings and waits for the answer.
func (a *attacker) sync(t *testing.T) {
	t.Helper()
	if err := a.send(hdr(framePing, 0, 0, syncPing)); err != nil {
		t.Fatalf("attacker ping: %v", err)
	}
	if _, err := a.until(func(h frameHeader) bool { return h.typ == framePing && h.flags == flagACK && h.length == syncPing }); err != nil {
		t.Fatalf("waiting for the victim's answer to a ping: %v", err)
	}
}

// syncPing is the ping value sync and drain use; floods avoid it.
const syncPing = 0xfffffff0

// drain reads and discards whatever the victim sends until the connection
// closes, in a goroutine that the connection's closing ends. It returns a
// channel that receives when the victim answers a ping of value syncPing.
func (a *attacker) drain() <-chan struct{} {
	acked := make(chan struct{}, 1)
	go func() {
		for {
			h, err := a.readFrame()
			if err != nil {
				return
			}
			if h.typ == framePing && h.flags == flagACK && h.length == syncPing {
				acked <- struct{}{}
			}
		}
	}()
	return acked
}

// syncDrained is sync for an attacker whose drain goroutine reads.
func (a *attacker) syncDrained(t *testing.T, acked <-chan struct{}) {
	t.Helper()
	if err := a.send(hdr(framePing, 0, 0, syncPing)); err != nil {
		t.Fatalf("attacker ping: %v", err)
	}
	select {
	case <-acked:
	case <-time.After(30 * time.Second):
		t.Fatal("the victim did not answer a ping")
	}
}

// blockedRead opens a stream on s and starts a Read on it that blocks until
// data arrives or the stream fails: the "real stream in use" of an attacked
// session. The result arrives on the channel.
func blockedRead(t *testing.T, s *Session) (*Stream, <-chan error) {
	t.Helper()
	st, err := s.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	return st, goIO(st.Read, 64)
}

// waitDone waits for s to end, failing t after a generous timeout (a hang
// is the failure; no speed is asserted).
func waitDone(t *testing.T, s *Session) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("session still alive: %v", s.Err())
	}
}

func recvErr(t *testing.T, c <-chan error) error {
	t.Helper()
	select {
	case err := <-c:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("blocked call did not return")
		return nil
	}
}

// bystander starts an honest client/server pair over TCP, beside the
// attacked sessions, and returns a check that it still moves data intact
// and that honest traffic counted no glitches.
func bystander(t *testing.T) (check func()) {
	t.Helper()
	client, server := tcpSessions(t, nil, nil)
	go func() { // owned by server: ends when it closes
		for {
			st, err := server.AcceptStream()
			if err != nil {
				return
			}
			go func() { // ends with the stream
				io.Copy(st, st)
				st.Close()
			}()
		}
	}()
	return func() {
		t.Helper()
		st, err := client.OpenStream()
		if err != nil {
			t.Fatalf("bystander: %v", err)
		}
		msg := pattern(256<<10, 42)
		go func() {
			st.Write(msg)
			st.CloseWrite()
		}()
		got, err := io.ReadAll(st)
		if err != nil || !bytes.Equal(got, msg) {
			t.Errorf("bystander session echoed %d bytes (%v), want %d intact", len(got), err, len(msg))
		}
		st.Close()
		closeAndWait(t, client)
		closeAndWait(t, server)
		if g := client.glitches + server.glitches; g != 0 {
			t.Errorf("honest traffic counted %d glitches", g)
		}
	}
}

// pattern returns n pseudo-random bytes determined by seed.
func pattern(n int, seed uint32) []byte {
	b := make([]byte, n)
	x := seed*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// liveHeap returns the bytes of live heap after a full collection.
func liveHeap() int64 {
	runtime.GC()
	runtime.GC() // a second cycle frees what sync.Pools held
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// checkNoLeaks fails t if goroutines started during the test outlive it.
// Only for tests that do not run in parallel.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) }) // registered first, so it runs last
}

// TestOwnControlFramesNotCounted: MaxQueuedControlFrames bounds the
// answers queued for a peer that does not read them; this side's own
// control frames do not count. With three own pings queued behind a
// blocked writer, against a limit of 2, the answer to the peer's ping was
// refused and closed a session whose peer reads everything, with an error
// blaming the peer (found by review helper 86, with window updates and
// start-up pings filling the queue during a transfer).
func TestOwnControlFramesNotCounted(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		// net.Pipe: the victim's writes wait for the attacker's reads.
		victim, a := newAttack(t, &Config{MaxQueuedControlFrames: 2, KeepAliveInterval: -1}, false)
		ctx, cancel := context.WithCancel(context.Background())
		var pings sync.WaitGroup
		defer func() { cancel(); pings.Wait() }()
		ping := func() { pings.Go(func() { victim.PingContext(ctx) }) } // never answered: ends with ctx
		// The writer takes the first ping (if it is not writing
		// already) and waits for the attacker to read; the next three
		// stay queued.
		ping()
		synctest.Wait()
		for range 3 {
			ping()
		}
		synctest.Wait()
		victim.wmu.Lock()
		queued := len(victim.sched.ctrl)
		victim.wmu.Unlock()
		if queued < 3 {
			t.Fatalf("%d control frames queued, want the victim's 3 pings", queued)
		}
		if err := a.send(hdr(framePing, 0, 0, syncPing)); err != nil {
			t.Fatal(err)
		}
		acked := a.drain()
		select {
		case <-acked:
		case <-victim.Done():
			t.Fatalf("session ended instead of answering the peer's ping: %v", victim.Err())
		}
		if err := victim.Err(); err != nil {
			t.Errorf("session ended: %v", err)
		}
	})
}

// TestFloods sends each flood at a victim session until its defence trips
// (or, for floods it must survive, for many frames) and checks the outcome,
// the live heap the attack left, that the victim's goroutines exit, and
// that a bystander session is unaffected. It does not run in parallel, so
// that the heap it measures is its own.
func TestFloods(t *testing.T) {
	checkNoLeaks(t)
	check := bystander(t)
	syn := func(i int) uint32 { return uint32(2*i + 1) }
	hold := func(s *Session) { // an application that accepts streams and keeps them open
		for {
			if _, err := s.AcceptStream(); err != nil {
				return
			}
		}
	}
	tests := []struct {
		name  string
		cfg   Config
		setup []byte             // sent before the flood
		frame func(i int) []byte // the i-th frame of the flood
		n     int                // frames to send; 0: until the victim closes
		reads bool               // the attacker reads what the victim sends
		app   func(*Session)     // the victim's application, if any
		want  string             // in the protocol error; "" if the victim must survive
		bound int64              // live heap the attack may leave, in bytes
		min   int                // frames the victim must take before it closes
	}{
		{name: "ping flood, answers not read",
			frame: func(i int) []byte { return hdr(framePing, 0, 0, uint32(i)) },
			want:  "more than 10000 answers queued", bound: 512 << 10, min: 10000},
		{name: "ping flood, answers read",
			frame: func(i int) []byte { return hdr(framePing, 0, 0, uint32(i)) },
			n:     200_000, reads: true, bound: 512 << 10},
		{name: "window update flood on a stream",
			setup: dataFrame(flagSYN, 1, nil),
			frame: func(i int) []byte { return hdr(frameWindowUpdate, 0, 1, 1) },
			want:  "WINDOW_UPDATE on stream 1 beyond one per 1024 bytes of DATA sent on it (window update flood)", bound: 256 << 10, min: 1000},
		{name: "window update flood on the session",
			frame: func(i int) []byte { return hdr(frameWindowUpdate, 0, 0, 1) },
			want:  "session WINDOW_UPDATE beyond one per 1024 bytes of DATA sent (window update flood)", bound: 256 << 10, min: 1000},
		{name: "zero-length DATA flood",
			setup: dataFrame(flagSYN, 1, []byte("x")),
			frame: func(i int) []byte { return hdr(frameData, 0, 1, 0) },
			want:  "empty DATA frame without SYN or FIN on stream 1", bound: 256 << 10, min: 1000},
		{name: "RST flood",
			setup: append(dataFrame(flagSYN, 1, nil), hdr(frameReset, 0, 1, uint32(codeCancel))...),
			frame: func(i int) []byte { return hdr(frameReset, 0, 1, uint32(codeCancel)) },
			want:  "RST frame for stream 1, which had already finished or been reset", bound: 256 << 10, min: 999},
		{name: "rapid reset",
			frame: func(i int) []byte {
				return append(dataFrame(flagSYN, syn(i), nil), hdr(frameReset, 0, syn(i), uint32(codeCancel))...)
			},
			app:  hold,
			want: "which the peer opened and this side sent no DATA on (rapid reset)", bound: 1 << 20, min: 1000},
		{name: "SYN flood past MaxIncomingStreams",
			cfg:   Config{MaxIncomingStreams: 64},
			frame: func(i int) []byte { return dataFrame(flagSYN, syn(i), []byte("GET /")) },
			reads: true, app: hold,
			want: "refused: the peer has MaxIncomingStreams (64) open", bound: 1 << 20, min: 64 + 1000},
		// A full backlog is no fault of the peer (see
		// TestBacklogBurstNotAGlitch): each refusal costs an RST, as a
		// ping costs its answer, and MaxQueuedControlFrames stops a peer
		// that does not read them.
		{name: "SYN flood past AcceptBacklog, refusals read",
			cfg:   Config{AcceptBacklog: 16},
			frame: func(i int) []byte { return dataFrame(flagSYN, syn(i), []byte("GET /")) },
			n:     50_000, reads: true, bound: 1 << 20},
		// Each refusal excuses only the peer's own FIN or RST crossing
		// it: six excused frames each (as for a stream that ended)
		// let this flood run without end once these refusals stopped
		// being glitches. (Found by a review helper.)
		{name: "WINDOW_UPDATEs for streams refused into a full backlog",
			cfg: Config{AcceptBacklog: 1},
			frame: func(i int) []byte {
				b := dataFrame(flagSYN, syn(i), nil)
				for range 6 {
					b = append(b, hdr(frameWindowUpdate, 0, syn(i), 1)...)
				}
				return b
			},
			reads: true,
			want:  "which had already finished or been reset", bound: 1 << 20, min: 1000 / 4},
		{name: "SYN flood past AcceptBacklog, refusals not read",
			cfg:   Config{AcceptBacklog: 16},
			frame: func(i int) []byte { return dataFrame(flagSYN, syn(i), []byte("GET /")) },
			want:  "more than 10000 answers queued", bound: 1 << 20, min: 16 + 10000},
		{name: "unsolicited PING ACK flood",
			frame: func(i int) []byte { return hdr(framePing, flagACK, 0, uint32(1000+i)) },
			want:  "answering no ping", bound: 256 << 10, min: 1000},
		{name: "GOAWAY flood",
			// Last stream 2 keeps the victim's own stream open.
			frame: func(i int) []byte { return hdr(frameGoAway, 0, 2, uint32(codeNoError)) },
			want:  "repeated GOAWAY", bound: 256 << 10, min: 1001},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := liveHeap()
			victim, a := newAttack(t, &tc.cfg, false)
			var acked <-chan struct{}
			if tc.reads {
				acked = a.drain()
			}
			if tc.app != nil {
				go tc.app(victim) // ends when the victim does
			}
			_, readErr := blockedRead(t, victim)
			start := time.Now()
			if err := a.send(tc.setup); err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				// In rounds, each ended by a ping whose answer proves the
				// victim processed (and answered) the round.
				for sent := 0; sent < tc.n; {
					k := min(5000, tc.n-sent)
					if got := a.flood(sent, sent+k, tc.frame); got != k {
						t.Fatalf("the victim closed after %d of %d frames: %v", sent+got, tc.n, victim.Err())
					}
					sent += k
					a.syncDrained(t, acked)
				}
				if err := victim.Err(); err != nil {
					t.Fatalf("victim closed: %v", err)
				}
				victim.wmu.Lock()
				queued := len(victim.sched.ctrl)
				victim.wmu.Unlock()
				grown := liveHeap() - before
				t.Logf("survived %d frames; %d control frames queued; session and attack hold %d B of live heap", tc.n, queued, grown)
				if grown > tc.bound {
					t.Errorf("the session holds %d bytes of live heap, bound %d", grown, tc.bound)
				}
				runtime.KeepAlive(victim)
				return
			}
			sent := a.flood(0, tc.n, tc.frame)
			waitDone(t, victim)
			elapsed := time.Since(start)
			if sent < tc.min {
				t.Errorf("the victim closed after %d frames, want at least %d (its limit)", sent, tc.min)
			}
			err := victim.Err()
			if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("victim ended with %v\nwant ErrProtocol saying %q", err, tc.want)
			}
			if rerr := recvErr(t, readErr); !errors.Is(rerr, ErrProtocol) {
				t.Errorf("the victim's own stream: %v, want the session's protocol error", rerr)
			}
			grown := liveHeap() - before
			victim.smu.Lock()
			streams := len(victim.streams)
			victim.smu.Unlock()
			t.Logf("closed after %d frames in %v; %d streams held; session and attack hold %d B of live heap", sent, elapsed.Round(time.Millisecond), streams, grown)
			if grown > tc.bound {
				t.Errorf("the session holds %d bytes of live heap, bound %d", grown, tc.bound)
			}
			runtime.KeepAlive(victim)
		})
	}
	check()
}

// fill returns DATA frames carrying n bytes on stream id, the first with
// SYN, in frames of 1024 bytes.
func fill(id uint32, n int) []byte {
	var b []byte
	flags := flagSYN
	for n > 0 {
		k := min(n, 1024)
		b = append(b, dataFrame(flags, id, make([]byte, k))...)
		flags = 0
		n -= k
	}
	return b
}

// TestMalformedFrames sends each frame a correct peer never sends, with a
// stream of the victim's own blocked in Read, and checks the documented
// outcome: the session closes with an error naming the fault (which the
// blocked Read returns too), or, for frames that may be late, nothing
// happens and the session still works. Never a panic.
func TestMalformedFrames(t *testing.T) {
	t.Parallel()
	t.Cleanup(bystander(t)) // after the parallel subtests
	const maxW = maxWindow
	tests := []struct {
		name   string
		cfg    Config
		frames []byte
		eof    bool   // the attacker closes the connection after the frames
		want   string // in the error; "" if the frames must be ignored
		is     error  // what the error wraps
	}{
		{name: "frame longer than the maximum", frames: hdr(frameData, flagSYN, 1, 1025),
			want: "length 1025 exceeds the maximum frame size 1024"},
		{name: "frame longer than a larger maximum", cfg: Config{MaxFrameSize: 16 << 10}, frames: hdr(frameData, flagSYN, 1, 16<<10+1),
			want: "length 16385 exceeds the maximum frame size 16384"},
		{name: "length beyond the stream window", frames: append(fill(1, 256<<10), dataFrame(0, 1, []byte("x"))...),
			want: "DATA on stream 1 overruns the stream window: 1 bytes, 0 allowed"},
		{name: "length beyond the session window", cfg: Config{SessionWindow: 1 << 20},
			frames: bytes.Join([][]byte{fill(1, 256<<10), fill(3, 256<<10), fill(5, 256<<10), fill(7, 256<<10), dataFrame(flagSYN, 9, []byte("x"))}, nil),
			want:   "DATA on stream 9 overruns the session window by 1 bytes"},
		{name: "stream credit overflow", frames: hdr(frameWindowUpdate, 0, 2, maxW),
			want: "WINDOW_UPDATE of 2147483647 on stream 2 overflows the window"},
		{name: "session credit overflow", frames: hdr(frameWindowUpdate, 0, 0, maxW),
			want: "session WINDOW_UPDATE of 2147483647 overflows the window"},
		{name: "increment of zero", frames: hdr(frameWindowUpdate, 0, 2, 0),
			want: "increment 0 outside 1..2147483647"},
		{name: "DATA for a stream never opened", frames: dataFrame(0, 7, []byte("x")),
			want: "DATA frame for stream 7, which was never opened"},
		{name: "WINDOW_UPDATE for a stream never opened", frames: hdr(frameWindowUpdate, 0, 9, 1),
			want: "WINDOW_UPDATE frame for stream 9, which was never opened"},
		{name: "RST for a stream never opened", frames: hdr(frameReset, 0, 11, uint32(codeCancel)),
			want: "RST frame for stream 11, which was never opened"},
		{name: "frame for a stream of ours never opened", frames: hdr(frameWindowUpdate, 0, 4, 1),
			want: "WINDOW_UPDATE frame for stream 4, which was never opened"},
		{name: "SYN with our parity", frames: dataFrame(flagSYN, 4, nil),
			want: "SYN for stream 4, an ID of this side's parity"},
		{name: "SYN above the largest stream ID", frames: dataFrame(flagSYN, 1<<31+1, []byte("x")),
			want: "SYN for stream 2147483649, above the largest stream ID 2147483647"},
		{name: "SYN reusing an ID", frames: append(dataFrame(flagSYN, 5, nil), dataFrame(flagSYN, 3, nil)...),
			want: "SYN for stream 3, not above the peer's last stream 5"},
		{name: "DATA after FIN", frames: append(dataFrame(flagSYN|flagFIN, 1, []byte("a")), dataFrame(0, 1, []byte("b"))...),
			want: "DATA on stream 1 after its FIN"},
		{name: "unknown frame type", frames: unknownFrame,
			want: "unknown frame type 9"},
		{name: "reserved bytes set", frames: []byte{byte(framePing), 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
			want: "reserved bytes 0x0001 are not zero"},
		{name: "flag not allowed", frames: hdr(frameData, flagACK, 1, 0),
			want: "flags 0x4 not allowed"},
		{name: "PING on a stream", frames: hdr(framePing, 0, 3, 0),
			want: "PING frame on stream 3, want 0"},
		{name: "DATA on stream 0", frames: hdr(frameData, 0, 0, 0),
			want: "DATA frame on stream 0"},
		{name: "RST on stream 0", frames: hdr(frameReset, 0, 0, 0),
			want: "RST frame on stream 0"},
		{name: "truncated header at EOF", frames: hdr(frameData, flagSYN, 1, 10)[:7], eof: true,
			want: "connection closed in the middle of a frame", is: io.ErrUnexpectedEOF},
		{name: "truncated payload at EOF", frames: dataFrame(flagSYN, 1, make([]byte, 100))[:headerSize+50], eof: true,
			want: "connection closed in the middle of a frame", is: io.ErrUnexpectedEOF},
		{name: "EOF between frames", eof: true,
			want: "connection closed by peer", is: io.ErrUnexpectedEOF},
		{name: "GOAWAY with an error", frames: hdr(frameGoAway, 0, 2, uint32(codeProtocol)),
			want: "the peer is closing the session: protocol error", is: ErrGoAway},
		{name: "GOAWAY with an unknown code", frames: hdr(frameGoAway, 0, 2, 77),
			want: "the peer is closing the session: code 77", is: ErrGoAway},

		// Ignored: frames that may be late, a few glitches, a reset
		// stream's data.
		{name: "DATA for a stream it reset", frames: bytes.Join([][]byte{
			dataFrame(flagSYN, 1, []byte("a")), hdr(frameReset, 0, 1, uint32(codeCancel)), dataFrame(0, 1, []byte("late")), dataFrame(flagFIN, 1, nil)}, nil)},
		{name: "frames for a refused stream", cfg: Config{AcceptBacklog: 1}, frames: bytes.Join([][]byte{
			dataFrame(flagSYN, 1, nil), dataFrame(flagSYN, 3, []byte("a")), dataFrame(0, 3, []byte("late")), dataFrame(flagFIN, 3, nil), hdr(frameWindowUpdate, 0, 3, 10)}, nil)},
		{name: "RST with an unknown code", frames: append(dataFrame(flagSYN, 1, nil), hdr(frameReset, 0, 1, 1234)...)},
		{name: "PING ACK answering nothing", frames: hdr(framePing, flagACK, 0, 12345)},
		{name: "empty DATA", frames: append(dataFrame(flagSYN, 1, nil), hdr(frameData, 0, 1, 0)...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			victim, a := newAttack(t, &tc.cfg, false)
			own, readErr := blockedRead(t, victim)
			if own.ID() != 2 {
				t.Fatalf("the victim's stream is %d, want 2", own.ID())
			}
			// Frames for stream 2 are valid only once its SYN came.
			if _, err := a.until(func(h frameHeader) bool { return h.typ == frameData && h.streamID == 2 }); err != nil {
				t.Fatal(err)
			}
			if tc.eof {
				// Cut only once the victim's writer is idle, so that the
				// victim's reader, not its writer, meets the end first.
				a.sync(t)
			}
			var told <-chan []frameHeader
			if tc.want != "" && !tc.eof && tc.is == nil {
				told = a.collectToEnd()
			}
			a.send(tc.frames) // may fail once the victim closes
			if tc.eof {
				a.conn.Close()
			}
			if tc.want == "" {
				a.sync(t)
				if err := victim.Err(); err != nil {
					t.Fatalf("the session closed: %v", err)
				}
				// The victim's own stream still works.
				if err := a.send(dataFrame(0, 2, []byte("ok"))); err != nil {
					t.Fatal(err)
				}
				if err := recvErr(t, readErr); err != nil {
					t.Errorf("the victim's stream after the frames: %v", err)
				}
				return
			}
			waitDone(t, victim)
			is := tc.is
			if is == nil {
				is = ErrProtocol
			}
			err := victim.Err()
			if !errors.Is(err, is) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("session ended with %v\nwant an error wrapping %v saying %q", err, is, tc.want)
			}
			if rerr := recvErr(t, readErr); rerr == nil || rerr.Error() != err.Error() {
				t.Errorf("blocked Read: %v, want the session's error", rerr)
			}
			if told != nil {
				checkToldProtocolError(t, <-told)
			}
			// Accept may still hand out streams that arrived before the
			// end; then it fails with the session's error.
			for range 10 {
				if _, aerr := victim.AcceptStream(); aerr != nil {
					if aerr.Error() != err.Error() {
						t.Errorf("AcceptStream: %v, want the session's error", aerr)
					}
					break
				}
			}
		})
	}
}

// TestHugeDataLengthIsProtocolError: a DATA header claiming 2^32-16 bytes
// for an open stream, right behind a frame of that stream, where the
// reader's run of DATA frames for one stream, or a Read holding the token,
// looks at it before the header is decoded, closes the session with
// ErrProtocol. On 32-bit platforms the length read as an int was negative,
// and the process panicked (found by a review helper; checked with
// GOARCH=arm GOARM=7 go test -c and qemu-arm).
func TestHugeDataLengthIsProtocolError(t *testing.T) {
	t.Parallel()
	for _, reading := range []bool{false, true} {
		t.Run(fmt.Sprintf("Read holds the token=%v", reading), func(t *testing.T) {
			t.Parallel()
			victim, a := newAttack(t, nil, true)
			a.drain()
			st := a.openAccepted(t, victim, 1)
			if _, err := st.Read(make([]byte, 1)); err != nil { // the SYN's byte
				t.Fatal(err)
			}
			if reading {
				// A Read of one byte holds the token: it returns after the
				// first frame, looking at what follows.
				a.freeToken(t, victim, st)
				go st.Read(make([]byte, 1))
				waitFor(t, "the Read to hold the token", func() bool { return holderOf(victim) == st })
				victim.rt.mu.Lock()
				victim.rt.grace = 0 // freeTokenAttacked's long grace is a test's
				victim.rt.mu.Unlock()
			}
			if err := a.send(dataFrame(0, 1, []byte("ab")), hdr(frameData, 0, 1, 0xFFFFFFF0)); err != nil {
				t.Fatal(err)
			}
			waitDone(t, victim)
			if err := victim.Err(); !errors.Is(err, ErrProtocol) {
				t.Errorf("session ended with %v, want ErrProtocol", err)
			}
		})
	}
}

// TestProtocolErrorToldPeer: a session that the peer's protocol error ends
// tells the peer: its last frame is a GOAWAY with PROTOCOL_ERROR, also
// while one of its streams is sending (no DATA follows the GOAWAY, and the
// Write fails with the protocol error) and when a Read holding the read
// token meets the error. Before, the connection was closed without a word
// and the peer could not tell a protocol error from a crash.
func TestProtocolErrorToldPeer(t *testing.T) {
	t.Parallel()
	for _, reading := range []bool{false, true} {
		t.Run(fmt.Sprintf("Read holds the token=%v", reading), func(t *testing.T) {
			t.Parallel()
			victim, a := newAttack(t, nil, true)
			frames := a.collectToEnd()
			if err := a.send(hdr(frameWindowUpdate, 0, 0, maxWindow-attackerSettings.sessionWindow)); err != nil {
				t.Fatal(err)
			}
			st := a.openAccepted(t, victim, 1)
			if _, err := st.Read(make([]byte, 1)); err != nil { // the SYN's byte
				t.Fatal(err)
			}
			if err := a.send(hdr(frameWindowUpdate, 0, 1, 1<<30)); err != nil {
				t.Fatal(err)
			}
			var written atomic.Int64
			wrote := make(chan error, 1)
			go func() {
				buf := make([]byte, 64<<10)
				for {
					n, err := st.Write(buf)
					written.Add(int64(n))
					if err != nil {
						wrote <- err
						return
					}
				}
			}()
			if reading {
				a.freeToken(t, victim, st)
				go st.Read(make([]byte, 1))
				waitFor(t, "the Read to hold the token", func() bool { return holderOf(victim) == st })
				victim.rt.mu.Lock()
				victim.rt.grace = 0 // freeTokenAttacked's long grace is a test's
				victim.rt.mu.Unlock()
			}
			waitFor(t, "the victim to send", func() bool { return written.Load() >= 1<<20 })
			if err := a.send(unknownFrame); err != nil {
				t.Fatal(err)
			}
			waitDone(t, victim)
			if err := victim.Err(); !errors.Is(err, ErrProtocol) {
				t.Errorf("session ended with %v, want ErrProtocol", err)
			}
			if err := <-wrote; !errors.Is(err, ErrProtocol) {
				t.Errorf("the victim's Write: %v, want ErrProtocol", err)
			}
			checkToldProtocolError(t, <-frames)
		})
	}
}

// blockVictimWriter makes the victim's stream st write until the victim's
// writer goroutine is blocked in a write to the connection (the attacker
// reads nothing meanwhile). It returns the Write loop's error channel.
func blockVictimWriter(t *testing.T, victim *Session, a *attacker, st *Stream) <-chan error {
	t.Helper()
	if err := a.send(hdr(frameWindowUpdate, 0, 0, maxWindow-attackerSettings.sessionWindow), hdr(frameWindowUpdate, 0, st.id, 1<<30)); err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			if _, err := st.Write(buf); err != nil {
				wrote <- err
				return
			}
		}
	}()
	waitFor(t, "the victim's writer to block", func() bool {
		if !victim.wBusy.Load() {
			return false
		}
		time.Sleep(50 * time.Millisecond)
		return victim.wBusy.Load()
	})
	return wrote
}

// TestGoAwayLastDespiteActivityInWindow: the GOAWAY with PROTOCOL_ERROR
// that a session sends when the peer broke the protocol is its last frame
// (PROTOCOL.md, SECURITY.md), also when the application uses the session
// while the writer is still getting the GOAWAY out: a Ping, or a Read of
// data buffered before the error (its WINDOW_UPDATE), must not follow it.
func TestGoAwayLastDespiteActivityInWindow(t *testing.T) {
	t.Parallel()
	for _, act := range []string{"Ping", "Read"} {
		t.Run(act, func(t *testing.T) {
			t.Parallel()
			victim, a := newAttack(t, nil, true)
			st := a.openAccepted(t, victim, 1)
			if _, err := st.Read(make([]byte, 1)); err != nil {
				t.Fatal(err)
			}
			// Data the application has not read yet.
			if err := a.send(fill(1, 200<<10)[len(dataFrame(flagSYN, 1, make([]byte, 1024))):]); err != nil {
				t.Fatal(err)
			}
			a.sync(t)
			wrote := blockVictimWriter(t, victim, a, st)

			if err := a.send(unknownFrame); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the protocol error", func() bool { return victim.Err() != nil })
			queued := func() int {
				victim.wmu.Lock()
				defer victim.wmu.Unlock()
				return len(victim.sched.ctrl)
			}
			waitFor(t, "the GOAWAY to be queued", func() bool { return queued() >= 1 })
			switch act {
			case "Ping":
				go victim.Ping()
			case "Read":
				if n, err := st.Read(make([]byte, 256<<10)); n == 0 {
					t.Fatalf("Read of buffered data: %d, %v", n, err)
				}
			}
			waitFor(t, act+"'s frame to be queued", func() bool { return queued() >= 2 })
			hs := <-a.collectToEnd()
			waitDone(t, victim)
			<-wrote
			checkToldProtocolError(t, hs)
		})
	}
}

// TestNoDataAfterGoAwayDirectWrite: a Write's fast path (writeAloneLocked)
// that checked the session's error just before the reader's
// failTellingPeer stored it and queued the GOAWAY frames its data behind
// that GOAWAY. The interleaving is forced: the test holds wmu while the
// Write waits for it after its check, and meanwhile does what
// failTellingPeer does between its CompareAndSwap and its flush.
func TestNoDataAfterGoAwayDirectWrite(t *testing.T) {
	t.Parallel()
	victim, a := newAttack(t, nil, true)
	if err := a.send(hdr(frameWindowUpdate, 0, 0, maxWindow-attackerSettings.sessionWindow)); err != nil {
		t.Fatal(err)
	}
	st := a.openRead(t, victim)
	frames := a.collectToEnd()

	for { // the token free (the writer goroutine may still hold it after the ping's answer)
		victim.wmu.Lock()
		if !victim.w.held {
			break
		}
		victim.wmu.Unlock()
		time.Sleep(time.Millisecond)
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := st.Write([]byte("after"))
		wrote <- err
	}()
	waitFor(t, "the Write to wait for wmu in its fast path", func() bool {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		for _, g := range strings.Split(stacks, "\n\n") {
			if strings.Contains(g, "writeAloneLocked") && strings.Contains(g, "sync.(*Mutex).Lock") {
				return true
			}
		}
		return false
	})
	// failTellingPeer's steps: the error first, then the GOAWAY (queueReply
	// would take wmu, held here: append as it does).
	err := protocolErrorf("test")
	if !victim.err.CompareAndSwap(nil, &err) {
		t.Fatal("session already failed")
	}
	victim.sched.ctrl = append(victim.sched.ctrl, frameHeader{typ: frameGoAway, length: uint32(codeProtocol)})
	victim.wmu.Unlock()
	if werr := <-wrote; werr == nil {
		t.Log("the Write reported success although the session had failed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), errorGoAwayTimeout)
	victim.flush(ctx) // failTellingPeer's flush and fail
	cancel()
	victim.fail(err)
	hs := <-frames
	for i, h := range hs {
		if h.typ == frameGoAway && i != len(hs)-1 {
			t.Fatalf("frames after the GOAWAY: %v", hs[i:])
		}
	}
	checkToldProtocolError(t, hs)
}

// TestCloseInWindowSendsGoAway: Close lets the writer send what is
// queued, control frames included, within its second; called while the
// session that the peer's protocol error ended is still getting its GOAWAY
// out (an application that closes the session when a stream call fails
// with ErrProtocol does so then), it closed the connection at once and the
// GOAWAY was lost.
func TestCloseInWindowSendsGoAway(t *testing.T) {
	t.Parallel()
	victim, a := newAttack(t, nil, true)
	st := a.openRead(t, victim)
	wrote := blockVictimWriter(t, victim, a, st)
	if err := a.send(unknownFrame); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the protocol error", func() bool { return victim.Err() != nil })
	// What the application sees: a new call fails with the error at once.
	if _, err := st.Read(make([]byte, 1)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("Read: %v, want ErrProtocol", err)
	}
	closed := make(chan struct{})
	go func() {
		victim.Close()
		close(closed)
	}()
	waitFor(t, "Close to begin", victim.closing.Load)
	time.Sleep(50 * time.Millisecond)
	hs := <-a.collectToEnd()
	<-closed
	<-wrote
	checkToldProtocolError(t, hs)
}

// checkFailedInWindow checks that call, blocked on a stream of victim when
// the peer broke the protocol, returned err matching ErrProtocol while the
// session was still telling the peer, not only once it had ended.
func checkFailedInWindow(t *testing.T, victim *Session, call string, err error) {
	t.Helper()
	select {
	case <-victim.dying:
		t.Errorf("%s returned (%v) only once the session had ended", call, err)
	default:
	}
	if !errors.Is(err, ErrProtocol) {
		t.Errorf("%s: %v, want ErrProtocol", call, err)
	}
}

// TestTokenHoldingReadInWindow: a Read that holds the read token when it
// meets the peer's protocol error returns that error at once, while the
// session still tries to get its GOAWAY to a peer that does not read. It
// used to wait in failTellingPeer for the GOAWAY to go out, up to a
// second, which neither its stream's Close nor a deadline could shorten.
func TestTokenHoldingReadInWindow(t *testing.T) {
	t.Parallel()
	victim, a := newAttack(t, nil, true)
	st := a.openRead(t, victim)
	a.freeToken(t, victim, st)
	read := readHolding(t, victim, st, 1)
	wrote := blockVictimWriter(t, victim, a, st)
	if err := a.send(unknownFrame); err != nil {
		t.Fatal(err)
	}
	checkFailedInWindow(t, victim, "the Read", <-read)
	hs := <-a.collectToEnd()
	<-wrote
	checkToldProtocolError(t, hs)
}

// TestTurnAfterHandOffReadsNothing: a Read holding the read token that meets
// the peer's protocol error stores it and gives the token up with a kick; if
// the reader goroutine was at that moment woken by its timer with a turn due
// (it was not parked in its select, so the kick waits in the channel), it
// takes the token for readTurn, which reads on after the session's error.
// After a DATA frame whose header was consumed (a stream never opened), that
// is the frame's payload read as frames: a GOAWAY in it ends the session with
// ErrGoAway, and the GOAWAY telling the peer of its protocol error is never
// sent. The interleaving is forced: the test holds rt.mu while the Read
// gives the token up, and meanwhile makes the timer fire with a turn due.
func TestTurnAfterHandOffReadsNothing(t *testing.T) {
	t.Parallel()
	victim, a := newAttack(t, nil, true)
	st := a.openRead(t, victim)
	frames := a.collectToEnd()
	a.freeToken(t, victim, st)
	read := readHolding(t, victim, st, 1)

	rt := &victim.rt
	rt.mu.Lock()
	// Stream 99 was never opened: a protocol error once its header is
	// consumed; its payload, a GOAWAY with INTERNAL_ERROR, stays buffered.
	if err := a.send(dataFrame(0, 99, hdr(frameGoAway, 0, 0, uint32(codeInternal)))); err != nil {
		rt.mu.Unlock()
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for victim.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // the Read now waits for rt.mu to give the token up
	rt.turnDue = 0
	rt.drainedAt.Store(0) // a turn is due
	rt.armed = true
	rt.fireAt = victim.clock()
	rt.timer.Reset(time.Microsecond)
	time.Sleep(20 * time.Millisecond) // the reader goroutine, woken by the timer, waits for rt.mu
	rt.mu.Unlock()

	if err := <-read; !errors.Is(err, ErrProtocol) {
		t.Errorf("the Read: %v, want ErrProtocol", err)
	}
	waitDone(t, victim)
	if err := victim.Err(); !errors.Is(err, ErrProtocol) {
		t.Errorf("session ended with %v, want ErrProtocol", err)
	}
	checkToldProtocolError(t, <-frames)
}

// TestCloseFlushingMeetsProtocolError: Close that found the session alive
// and is flushing when the peer's protocol error comes sees the error in
// closeGracefully (which then skips the half-close) and closes the
// connection at once, while failTellingPeer has not yet got its GOAWAY out:
// the GOAWAY is lost although Close's second has not run out (Close's
// doc: "If the session is ending because the peer broke the protocol,
// Close waits, within the same second, for the GOAWAY"). The interleaving
// is forced: the test holds smu, which failTellingPeer takes between
// storing the error and queueing its GOAWAY.
func TestCloseFlushingMeetsProtocolError(t *testing.T) {
	t.Parallel()
	victim, a := newAttack(t, nil, true)
	st := a.openRead(t, victim)
	wrote := blockVictimWriter(t, victim, a, st)
	closed := make(chan struct{})
	go func() {
		victim.Close()
		close(closed)
	}()
	waitFor(t, "Close to begin", victim.closing.Load)
	time.Sleep(50 * time.Millisecond) // Close waits in its flush for the blocked writer

	victim.smu.Lock()
	if err := a.send(unknownFrame); err != nil {
		victim.smu.Unlock()
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for victim.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	frames := a.collectToEnd()         // the writer goes on: Close's flush ends
	time.Sleep(100 * time.Millisecond) // well within Close's second
	victim.smu.Unlock()
	hs := <-frames
	<-closed
	<-wrote
	if err := victim.Err(); !errors.Is(err, ErrProtocol) {
		t.Errorf("session ended with %v, want ErrProtocol", err)
	}
	checkToldProtocolError(t, hs)
}

// TestBlockedCallsInWindow: Reads and Writes blocked when the peer's
// protocol error comes (a Write waiting for the writer to frame its data,
// a Read waiting for data) fail with it at once, as a Read or Write holding
// the read token does, not only when the session ends: with a peer that
// does not read, that is errorGoAwayTimeout later (before the GOAWAY
// change, at once). Nothing can come for them once the error is the
// session's: no DATA is framed, nothing more is read.
func TestBlockedCallsInWindow(t *testing.T) {
	t.Parallel()
	victim, a := newAttack(t, nil, true)
	st := a.openRead(t, victim)
	wrote := blockVictimWriter(t, victim, a, st)
	read := goIO(st.Read, 1)
	waitFor(t, "the Read to wait", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.has(stReading)
	})
	if err := a.send(unknownFrame); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]<-chan error{"Write": wrote, "Read": read} {
		checkFailedInWindow(t, victim, "the blocked "+name, <-ch)
	}
	checkToldProtocolError(t, <-a.collectToEnd())
}

// TestGoAwaySurvivesUnreadInput: the session that the peer's protocol error
// ends stops reading at the bad frame, so whatever the peer sent after it
// stays unread in the socket's receive queue. Closing a TCP socket with
// unread input makes the kernel reset the connection at once, dropping what
// its send queue still holds: the GOAWAY just "flushed" (handed to the
// kernel) behind data the peer is still reading never reaches it, and a
// peer reading normally sees a reset instead. Here the victim is sending
// bulk data when the error comes (its writer blocked on a full socket), and
// the peer has sent one more frame behind the bad one (without it, the
// GOAWAY arrives); over TCP and over TLS.
func TestGoAwaySurvivesUnreadInput(t *testing.T) {
	t.Parallel()
	for _, overTLS := range []bool{false, true} {
		for _, behind := range []bool{false, true} {
			name := "nothing behind"
			if behind {
				name = "a PING behind"
			}
			if overTLS {
				name += ", TLS"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				victim, a := newAttackTCP(t, overTLS)
				st := a.openRead(t, victim)
				wrote := blockVictimWriter(t, victim, a, st)
				if err := a.send(unknownFrame); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "the protocol error", func() bool { return victim.Err() != nil })
				if behind {
					// More from the peer, which the victim no longer reads.
					if err := a.send(hdr(framePing, 0, 0, 42)); err != nil {
						t.Fatal(err)
					}
					time.Sleep(10 * time.Millisecond)
				}
				var end error
				done := make(chan []frameHeader, 1)
				go func() {
					var hs []frameHeader
					for {
						h, err := a.readFrame()
						if err != nil {
							end = err
							done <- hs
							return
						}
						hs = append(hs, h)
					}
				}()
				hs := <-done
				<-wrote
				if end != io.EOF {
					t.Logf("the peer's read ended with %v after %d frames", end, len(hs))
				}
				checkToldProtocolError(t, hs)
				a.conn.Close() // a tcpchan peer closes on the GOAWAY
				waitDone(t, victim)
			})
		}
	}
}

// TestCreditWaitingWriteMeetsProtocolError: a Write waiting for credit
// that holds the read token when it meets the peer's protocol error
// returns that error, and the peer is told.
func TestCreditWaitingWriteMeetsProtocolError(t *testing.T) {
	t.Parallel()
	victim, a := newAttack(t, nil, true)
	st := a.openRead(t, victim)
	frames := a.collectToEnd()
	a.freeToken(t, victim, st)
	wrote := goIO(st.Write, 300<<10) // beyond the stream window
	waitFor(t, "the Write to hold the token", func() bool {
		victim.rt.mu.Lock()
		defer victim.rt.mu.Unlock()
		return holderOf(victim) == st && victim.rt.holderWrite
	})
	if err := a.send(unknownFrame); err != nil {
		t.Fatal(err)
	}
	if err := <-wrote; !errors.Is(err, ErrProtocol) {
		t.Errorf("Write: %v", err)
	}
	waitDone(t, victim)
	checkToldProtocolError(t, <-frames)
}

// TestPeerStreamLimit: the max streams a peer announces bounds the
// streams OpenStream opens, 0 meaning none (read as "no limit", it let
// OpenStream send SYNs the peer must refuse), and 2^31 or more meaning
// more than can be used (on 32-bit platforms the limit read as an int was
// negative, and every OpenStream was refused). (Found by a review helper.)
func TestPeerStreamLimit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		limit uint32
		want  error
	}{{0, ErrStreamRefused}, {1, nil}, {1 << 31, nil}, {1<<32 - 1, nil}} {
		t.Run(fmt.Sprint(tc.limit), func(t *testing.T) {
			t.Parallel()
			ps := attackerSettings
			ps.maxStreams = tc.limit
			victim, a := newAttackWith(t, nil, false, ps)
			a.sync(t) // the victim has read the attacker's preface
			a.drain()
			st, err := victim.OpenStream()
			if !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
				t.Fatalf("OpenStream with the peer allowing %d streams: %v, want %v", tc.limit, err, tc.want)
			}
			if st != nil {
				st.Close()
			}
		})
	}
}

// TestFrameForStreamBeforeItsSYN: a frame for a stream of this side whose
// SYN has not gone out is for a stream the peer cannot know of: "a frame
// other than a SYN for a stream ID never opened is a protocol error"
// (PROTOCOL.md). It was applied (an RST even kept the SYN from ever going
// out). (Found by a review helper.)
func TestFrameForStreamBeforeItsSYN(t *testing.T) {
	t.Parallel()
	for _, frame := range [][]byte{
		hdr(frameWindowUpdate, 0, 4, 1000),
		hdr(frameReset, 0, 4, uint32(codeCancel)),
		dataFrame(0, 4, []byte("x")),
	} {
		t.Run(frameType(frame[0]).String(), func(t *testing.T) {
			t.Parallel()
			victim, a := newAttack(t, nil, false)
			a.sync(t)
			// The attacker reads no more (net.Pipe): once the victim's
			// writer has framed stream 2's SYN, it blocks writing that
			// batch, and stream 4's SYN stays queued behind it.
			st2, err := victim.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the writer to frame stream 2's SYN", func() bool {
				st2.mu.Lock()
				defer st2.mu.Unlock()
				return !st2.has(stSynPending)
			})
			st4, err := victim.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			st4.mu.Lock()
			pending := st4.has(stSynPending)
			st4.mu.Unlock()
			if !pending || st4.ID() != 4 {
				t.Fatalf("stream %d: SYN pending %v, want stream 4 with its SYN queued", st4.ID(), pending)
			}
			if err := a.send(frame); err != nil {
				t.Fatal(err)
			}
			waitDone(t, victim)
			if err := victim.Err(); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "stream 4, whose SYN this side has not sent") {
				t.Errorf("session ended with %v, want ErrProtocol: stream 4's SYN not sent", err)
			}
		})
	}
}

// TestFramesForFinishedStreams finishes a stream normally, then sends what
// may still be in flight for it: all of it is ignored.
func TestFramesForFinishedStreams(t *testing.T) {
	t.Parallel()
	victim, a := newAttack(t, nil, false)
	go func() { // the victim's application: read one stream, answer, close
		st, err := victim.AcceptStream()
		if err != nil {
			return
		}
		io.ReadAll(st)
		st.Write([]byte("bye"))
		st.Close()
	}()
	if err := a.send(dataFrame(flagSYN|flagFIN, 1, []byte("hi"))); err != nil {
		t.Fatal(err)
	}
	if _, err := a.until(func(h frameHeader) bool { return h.typ == frameData && h.streamID == 1 && h.flags&flagFIN != 0 }); err != nil {
		t.Fatal(err)
	}
	a.send(dataFrame(0, 1, []byte("late")), hdr(frameWindowUpdate, 0, 1, 100), hdr(frameReset, 0, 1, uint32(codeCancel)))
	a.sync(t)
	if err := victim.Err(); err != nil {
		t.Fatalf("frames for a finished stream closed the session: %v", err)
	}
	if n := victim.NumStreams(); n != 0 {
		t.Errorf("%d streams open, want 0", n)
	}
}

// TestRapidResetHoldsStreamSlots opens streams and resets each once the
// application has accepted it (the HTTP/2 rapid reset): the streams keep
// their places under MaxIncomingStreams until the application closes them,
// so the application never works on more than that many at once, and the
// excess is refused. The glitch budget is off to test this alone.
func TestRapidResetHoldsStreamSlots(t *testing.T) {
	t.Parallel()
	const limit = 8
	victim, a := newAttack(t, &Config{MaxIncomingStreams: limit, MaxGlitches: -1}, false)
	accepted := make(chan *Stream)
	go func() { // the victim's application: accept, and keep every stream
		for {
			st, err := victim.AcceptStream()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- st
		}
	}()
	var held []*Stream
	for i := range limit {
		id := uint32(2*i + 1)
		if err := a.send(dataFrame(flagSYN, id, []byte("work"))); err != nil {
			t.Fatal(err)
		}
		held = append(held, <-accepted)
		if err := a.send(hdr(frameReset, 0, id, uint32(codeCancel))); err != nil {
			t.Fatal(err)
		}
	}
	a.sync(t)
	// The next stream is refused: the reset ones still count.
	if err := a.send(dataFrame(flagSYN, 2*limit+1, []byte("work"))); err != nil {
		t.Fatal(err)
	}
	h, err := a.until(func(h frameHeader) bool { return h.typ == frameReset })
	if err != nil || h.streamID != 2*limit+1 || errCode(h.length) != codeRefused {
		t.Fatalf("after %d reset streams the application still holds, got %v (%v), want RST REFUSED for stream %d", limit, h, err, 2*limit+1)
	}
	for _, st := range held {
		if _, err := st.Read(make([]byte, 8)); !errors.Is(err, ErrStreamReset) {
			t.Errorf("Read on a stream the peer reset: %v, want ErrStreamReset", err)
		}
	}
	// The application closing one frees its place.
	held[0].Close()
	if err := a.send(dataFrame(flagSYN, 2*limit+3, []byte("work"))); err != nil {
		t.Fatal(err)
	}
	if st := <-accepted; st == nil || st.ID() != 2*limit+3 {
		t.Errorf("after a Close, accepted %v, want stream %d", st, 2*limit+3)
	}
	if n := victim.NumStreams(); n != limit {
		t.Errorf("NumStreams = %d, want %d", n, limit)
	}
}

// TestResetBeforeAcceptSkipped: a stream reset before the application
// accepted it is never returned by Accept, and its place is freed.
func TestResetBeforeAcceptSkipped(t *testing.T) {
	t.Parallel()
	victim, a := newAttack(t, &Config{MaxIncomingStreams: 1}, false)
	a.send(dataFrame(flagSYN, 1, []byte("x")), hdr(frameReset, 0, 1, uint32(codeCancel)))
	a.sync(t)
	type accepted struct {
		st  *Stream
		err error
	}
	got := make(chan accepted, 1)
	go func() {
		st, err := victim.AcceptStream()
		got <- accepted{st, err}
	}()
	// Stream 3 is accepted only if Accept skipped stream 1 and freed its
	// place; sent before that, it would be refused. (The send ends when
	// the victim has read it, or at cleanup.)
	waitFor(t, "Accept to skip stream 1", func() bool { return victim.NumStreams() == 0 })
	go a.send(dataFrame(flagSYN, 3, []byte("y")))
	r := <-got
	if r.err != nil || r.st.ID() != 3 {
		t.Fatalf("AcceptStream = %v, %v; want stream 3 (stream 1 was reset before it was accepted)", r.st, r.err)
	}
}

// TestFinishedThenResetBeforeAcceptKept: a stream the peer finished with
// FIN and then reset before the application accepted it is still returned
// by Accept, as a Read keeps what the FIN completed: a request sent whole,
// then abandoned by its sender (Reset after CloseWrite), is not lost.
func TestFinishedThenResetBeforeAcceptKept(t *testing.T) {
	t.Parallel()
	victim, a := newAttack(t, nil, false)
	a.send(dataFrame(flagSYN|flagFIN, 1, []byte("whole request")), hdr(frameReset, 0, 1, uint32(codeCancel)))
	a.sync(t)
	st, err := victim.AcceptStream()
	if err != nil {
		t.Fatalf("AcceptStream: %v", err)
	}
	defer st.Close()
	if st.ID() != 1 {
		t.Fatalf("accepted stream %d, want 1", st.ID())
	}
	got, err := io.ReadAll(st)
	if err != nil || string(got) != "whole request" {
		t.Errorf("ReadAll = %q, %v; want the whole request and io.EOF", got, err)
	}
	if _, err := st.Write([]byte("reply")); !errors.Is(err, ErrStreamReset) {
		t.Errorf("Write after the peer's RST: %v, want ErrStreamReset", err)
	}
}

// TestHandshakeAttacks: what a peer that is not a tcpchan peer of our
// version sends fails the handshake at once, or at HandshakeTimeout for
// one that sends too little; the session ends with ErrHandshake saying why.
func TestHandshakeAttacks(t *testing.T) {
	t.Parallel()
	preface := func(mutate func([]byte)) []byte {
		b := appendPreface(nil, attackerSettings)
		mutate(b)
		return b
	}
	tests := []struct {
		name    string
		send    []byte
		hangUp  bool
		elapsed time.Duration
		want    string
	}{
		{"TLS ClientHello", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}, false, 0, `did not send the tcpchan preface (got "\x16")`},
		{"SSH banner", []byte("SSH-2.0-OpenSSH_9.6\r\n"), false, 0, `(got "S")`},
		{"magic cut short by a wrong byte", []byte("TCPCHAT"), false, 0, `(got "TCPCHAT")`},
		{"wrong byte, then silence", []byte("TCX"), false, 0, `(got "TCX")`},
		{"wrong version, then silence", []byte("TCPCHAN\x02"), false, 0, "protocol version 2, want 1"},
		{"version 0", preface(func(b []byte) { b[7] = 0 }), false, 0, "protocol version 0, want 1"},
		{"version 255", preface(func(b []byte) { b[7] = 255 }), false, 0, "protocol version 255, want 1"},
		{"stream window too small", preface(func(b []byte) { binary.BigEndian.PutUint32(b[8:], 65535) }), false, 0, "stream window 65535 outside"},
		{"stream window too large", preface(func(b []byte) { binary.BigEndian.PutUint32(b[8:], 1<<31) }), false, 0, "stream window 2147483648 outside"},
		{"session window too small", preface(func(b []byte) { binary.BigEndian.PutUint32(b[12:], 1<<20-1) }), false, 0, "session window 1048575 outside"},
		{"frame size too small", preface(func(b []byte) { binary.BigEndian.PutUint32(b[16:], 1023) }), false, 0, "max frame size 1023 outside"},
		{"frame size too large", preface(func(b []byte) { binary.BigEndian.PutUint32(b[16:], 1<<16+1) }), false, 0, "max frame size 65537 outside"},
		{"preface cut by EOF", appendPreface(nil, attackerSettings)[:20], true, time.Millisecond, "reading the preface: unexpected EOF"},
		{"preface trickled too slowly", nil, false, 3 * time.Second, "no preface from the peer within 3s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				c1, c2 := net.Pipe()
				var peer sync.WaitGroup
				defer peer.Wait()
				defer c2.Close()
				peer.Go(func() { io.Copy(io.Discard, c2) }) // the peer reads all; ends when c2 closes
				peer.Go(func() {                            // the peer writes; ends when c2 closes
					if tc.send == nil { // one byte of the preface a second
						for _, c := range appendPreface(nil, attackerSettings) {
							if _, err := c2.Write([]byte{c}); err != nil {
								return
							}
							time.Sleep(time.Second)
						}
					}
					c2.Write(tc.send)
					if tc.hangUp {
						// A moment later, so that the victim's own preface
						// has gone out and its reader meets the EOF first.
						time.Sleep(time.Millisecond)
						c2.Close()
					}
				})
				start := time.Now()
				s, err := Server(c1, &Config{HandshakeTimeout: 3 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				<-s.Done()
				if got := time.Since(start); got != tc.elapsed {
					t.Errorf("handshake failed after %v, want %v", got, tc.elapsed)
				}
				if err := s.Err(); !errors.Is(err, ErrHandshake) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Err() = %v\nwant ErrHandshake saying %q", err, tc.want)
				}
			})
		})
	}
}

// TestPeerStopsReading: the peer completes the handshake and then never
// reads. Writes block (nothing piles up on our side beyond the one batch
// the writer holds), a write deadline returns on time with an honest
// count, and WriteTimeout closes the session exactly WriteTimeout after the
// stuck write began.
func TestPeerStopsReading(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		defer c2.Close()
		go func() { // the peer: preface, reads ours and our first ping, then never again
			c2.Write(appendPreface(nil, attackerSettings))
			io.ReadFull(c2, make([]byte, prefaceSize+headerSize))
		}()
		s, err := Client(c1, &Config{WriteTimeout: 10 * time.Second, KeepAliveInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		start := time.Now()
		type result struct {
			n   int
			err error
			at  time.Duration
		}
		results := make(chan result, 4)
		for i := range 4 {
			st, err := s.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				st.SetWriteDeadline(start.Add(2 * time.Second))
			}
			go func() {
				n, err := st.Write(make([]byte, 1<<20))
				results <- result{n, err, time.Since(start)}
			}()
		}
		synctest.Wait()
		s.wmu.Lock()
		queued := len(s.sched.ctrl)
		s.wmu.Unlock()
		if queued != 0 {
			t.Errorf("%d control frames queued for a peer that does not read", queued)
		}
		taken := 0
		for range 4 {
			r := <-results
			taken += r.n
			switch {
			case r.at == 2*time.Second:
				if !isTimeout(r.err) {
					t.Errorf("Write with a deadline: %v, want a timeout", r.err)
				}
			case r.at == 10*time.Second:
				if !errors.Is(r.err, ErrWriteTimeout) {
					t.Errorf("stuck Write: %v, want ErrWriteTimeout", r.err)
				}
			default:
				t.Errorf("a Write returned after %v (%v), want 2s (deadline) or 10s (WriteTimeout)", r.at, r.err)
			}
		}
		// Writes hand their data to the writer only as it frames it: at
		// most one batch was taken from them.
		if max := maxBatch + minFrameSize + headerSize; taken > max {
			t.Errorf("Writes returned %d bytes taken, more than the writer's one batch (%d)", taken, max)
		}
		<-s.Done()
		if got := time.Since(start); got != 10*time.Second {
			t.Errorf("session closed after %v, want WriteTimeout = 10s", got)
		}
		if err := s.Err(); !errors.Is(err, ErrWriteTimeout) {
			t.Errorf("Err() = %v, want ErrWriteTimeout", err)
		}
	})
}

// TestSlowReaderIsolation: one stream's reader trickles; its window fills
// and stays within InitialStreamWindow while four other streams of the
// same session receive data (once they are quiet it may grow: see
// activeSpan), and they each move 8 MiB to completion. No speed is
// asserted.
func TestSlowReaderIsolation(t *testing.T) {
	t.Parallel()
	check := bystander(t)
	client, server := tcpSessions(t, nil, nil)
	slowW, slowR := streamPair(t, client, server)
	go slowW.Write(make([]byte, 16<<20)) // ends when the stream is closed
	stop := make(chan struct{})
	trickled := make(chan int)
	go func() { // the slow reader: 1 KiB per millisecond until stopped
		n := 0
		buf := make([]byte, 1024)
		for {
			select {
			case <-stop:
				trickled <- n
				return
			case <-time.After(time.Millisecond):
			}
			k, err := slowR.Read(buf)
			n += k
			if err != nil {
				trickled <- n
				return
			}
		}
	}()
	const size = 8 << 20
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	received := make(chan struct{}) // one of the four has all its data
	var receivedOnce sync.Once
	for range 4 {
		a, b := streamPair(t, client, server)
		wg.Go(func() {
			go func() {
				a.Write(pattern(size, a.ID()))
				a.CloseWrite()
			}()
			got, err := io.ReadAll(b)
			receivedOnce.Do(func() { close(received) })
			if err == nil && !bytes.Equal(got, pattern(size, a.ID())) {
				err = fmt.Errorf("stream %d: %d bytes, corrupted", a.ID(), len(got))
			}
			errs <- err
			a.Close()
			b.Close()
		})
	}
	peak := 0
	sample := func() {
		slowR.mu.Lock()
		defer slowR.mu.Unlock()
		peak = max(peak, slowR.buffered)
		if slowR.recvWindow != int64(DefaultConfig().InitialStreamWindow) {
			t.Errorf("the slow stream's window grew to %d", slowR.recvWindow)
		}
	}
	for done := false; !done; {
		select {
		case <-received:
			done = true
		case <-time.After(time.Millisecond):
			sample()
		}
	}
	wg.Wait()
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	close(stop)
	n := <-trickled
	if n >= 16<<20 {
		t.Fatalf("the slow reader read everything (%d bytes) before the others finished", n)
	}
	if peak > DefaultConfig().InitialStreamWindow {
		t.Errorf("the slow stream buffered %d bytes, over its window %d", peak, DefaultConfig().InitialStreamWindow)
	}
	t.Logf("4 x %d MiB moved while the slow stream read %d bytes; it buffered at most %d bytes (window %d)", size>>20, n, peak, DefaultConfig().InitialStreamWindow)
	slowR.Close()
	slowW.Close()
	check()
}

// TestConnectionCut cuts the connection under a session in the middle of
// a transfer: closed, reset (RST via SetLinger(0)), or closed halfway
// through a frame. Every pending Read, Write and Accept returns an error
// wrapping the cause, and the session's goroutines exit.
// errReset matches the errors a reset connection gives: ECONNRESET, or
// EPIPE for a write.
var errReset = errors.New("connection reset (ECONNRESET, or EPIPE for a write)")

// isCause reports whether err wraps want, where want may be errReset.
func isCause(err, want error) bool {
	if want == errReset {
		return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
	}
	return errors.Is(err, want)
}

func TestConnectionCut(t *testing.T) {
	t.Parallel()
	t.Cleanup(bystander(t)) // after the parallel subtests
	tests := []struct {
		name string
		cut  func(a *attacker)
		is   error
		want string
	}{
		// A clean close (FIN); Close itself would send RST if the
		// victim's latest bytes were still unread.
		{"closed", func(a *attacker) { a.conn.(*net.TCPConn).CloseWrite() }, io.ErrUnexpectedEOF, "connection closed by peer"},
		{"reset", func(a *attacker) {
			a.conn.(*net.TCPConn).SetLinger(0)
			a.conn.Close()
		}, errReset, ""}, // ECONNRESET, or EPIPE if a write sees the reset first
		{"half-written frame", func(a *attacker) {
			a.send(dataFrame(0, 1, make([]byte, 1000))[:500])
			a.conn.(*net.TCPConn).CloseWrite()
		}, io.ErrUnexpectedEOF, "connection closed in the middle of a frame"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			victim, a := newAttack(t, nil, true)
			acked := a.drain()
			// A transfer in progress: the attacker's stream 1 half-sent
			// into the victim's application, which reads it.
			if err := a.send(fill(1, 100<<10)); err != nil {
				t.Fatal(err)
			}
			in, err := victim.AcceptStream()
			if err != nil {
				t.Fatal(err)
			}
			pending := make(chan error, 4)
			go func() {
				_, err := io.Copy(io.Discard, in)
				pending <- err
			}()
			// The victim's own streams: one waits to read, one to write
			// (the attacker gives no credit beyond its 256 KiB window).
			_, readErr := blockedRead(t, victim)
			out, err := victim.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				_, err := out.Write(make([]byte, 1<<20))
				pending <- err
			}()
			go func() {
				_, err := victim.AcceptStream()
				pending <- err
			}()
			a.syncDrained(t, acked)
			tc.cut(a)
			waitDone(t, victim)
			err = victim.Err()
			if !isCause(err, tc.is) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("session ended with %v\nwant an error wrapping %v saying %q", err, tc.is, tc.want)
			}
			if rerr := recvErr(t, readErr); !isCause(rerr, tc.is) {
				t.Errorf("pending Read: %v, want one wrapping %v", rerr, tc.is)
			}
			for _, what := range []string{"Read", "Write", "Accept"} { // in any order
				if perr := recvErr(t, pending); !isCause(perr, tc.is) {
					t.Errorf("pending %s call: %v, want one wrapping %v", what, perr, tc.is)
				}
			}
		})
	}
}

// link is one end of a net.Pipe that a test can slow down or cut. With
// pace set, it writes 4 KiB at a time, pace apart: a saturated link that
// still delivers bytes steadily. Once cut, it is a black hole: writes are
// swallowed, reads wait for Close, and Close reaches only this end, as
// across a network path that drops everything. The test closes the pipe.
type link struct {
	net.Conn
	pace time.Duration
	cut  sync.Mutex // guards gone
	gone bool
}

func (l *link) Close() error {
	l.cut.Lock()
	gone := l.gone
	l.cut.Unlock()
	if gone {
		return l.Conn.SetReadDeadline(time.Unix(1, 0)) // wakes this end's Read only
	}
	return l.Conn.Close()
}

func (l *link) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := len(p)
		if l.pace > 0 {
			k = min(k, 4<<10)
			time.Sleep(l.pace)
		}
		l.cut.Lock()
		gone := l.gone
		l.cut.Unlock()
		if gone {
			return n + len(p), nil
		}
		w, err := l.Conn.Write(p[:k])
		n += w
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

func (l *link) blackHole() {
	l.cut.Lock()
	l.gone = true
	l.cut.Unlock()
}

// TestKeepAliveBlackHole: an honest pair whose link silently starts
// dropping everything in both directions. Each side closes with
// ErrKeepAliveTimeout exactly KeepAliveInterval+KeepAliveTimeout after it
// last heard from the other, so within that sum of the cut, and pending
// Reads fail with it.
func TestKeepAliveBlackHole(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const interval, timeout = 10 * time.Second, 5 * time.Second
		c1, c2 := net.Pipe()
		defer c1.Close()
		defer c2.Close()
		l1, l2 := &link{Conn: c1}, &link{Conn: c2}
		cfg := &Config{KeepAliveInterval: interval, KeepAliveTimeout: timeout}
		client, _ := Client(l1, cfg)
		server, _ := Server(l2, cfg)
		a, b := streamPair(t, client, server)
		for range 3 { // some traffic, some idle time with keepalive pings
			a.Write([]byte("hello"))
			b.Read(make([]byte, 5))
			time.Sleep(13 * time.Second)
		}
		synctest.Wait()
		l1.blackHole()
		l2.blackHole()
		cut := time.Now()
		reads := make(chan error, 2)
		for _, st := range []*Stream{a, b} {
			go func() {
				_, err := st.Read(make([]byte, 1))
				reads <- err
			}()
		}
		type end struct {
			s  *Session
			at time.Time
		}
		ended := make(chan end, 2)
		for _, s := range []*Session{client, server} {
			go func() {
				<-s.Done()
				ended <- end{s, time.Now()}
			}()
		}
		for range 2 {
			e := <-ended
			heard := e.s.start.Add(time.Duration(e.s.lastRecv.Load()))
			if got := e.at.Sub(heard); got != interval+timeout {
				t.Errorf("closed %v after it last heard from the peer, want KeepAliveInterval+KeepAliveTimeout = %v", got, interval+timeout)
			}
			if after := e.at.Sub(cut); after <= 0 || after > interval+timeout {
				t.Errorf("closed %v after the cut, want within %v", after, interval+timeout)
			}
			if err := e.s.Err(); !errors.Is(err, ErrKeepAliveTimeout) {
				t.Errorf("Err() = %v, want ErrKeepAliveTimeout", err)
			}
			t.Logf("black hole detected %v after the cut", e.at.Sub(cut))
		}
		for range 2 {
			if err := <-reads; !errors.Is(err, ErrKeepAliveTimeout) {
				t.Errorf("pending Read: %v, want ErrKeepAliveTimeout", err)
			}
		}
	})
}

// TestKeepAliveUnderBulk saturates a slow link (40 KiB/s, so a 64 KiB
// batch takes 1.6 s, more than the 1 s keepalive interval) in both
// directions for about half a minute: keepalive never fires, because bytes
// keep arriving, and every byte arrives intact.
func TestKeepAliveUnderBulk(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		l1, l2 := &link{Conn: c1, pace: 100 * time.Millisecond}, &link{Conn: c2, pace: 100 * time.Millisecond}
		cfg := &Config{KeepAliveInterval: time.Second, KeepAliveTimeout: time.Second}
		client, _ := Client(l1, cfg)
		server, _ := Server(l2, cfg)
		const size = 512 << 10
		start := time.Now()
		var wg sync.WaitGroup
		for _, dir := range [][2]*Session{{client, server}, {server, client}, {client, server}, {server, client}} {
			a, b := streamPair(t, dir[0], dir[1])
			wg.Go(func() {
				a.Write(pattern(size, a.ID()))
				a.CloseWrite()
			})
			wg.Go(func() {
				got, err := io.ReadAll(b)
				if err != nil || !bytes.Equal(got, pattern(size, a.ID())) {
					t.Errorf("stream %d: %d bytes, %v", a.ID(), len(got), err)
				}
			})
		}
		wg.Wait()
		if err := errors.Join(client.Err(), server.Err()); err != nil {
			t.Errorf("keepalive fired under bulk: %v", err)
		}
		t.Logf("moved 2 x %d KiB each way in %v of link time", size>>10, time.Since(start))
		client.Close()
		server.Close()
	})
}

// TestGlitchBudget checks the token bucket exactly: MaxGlitches at once,
// then GlitchesPerSecond; one more closes the session.
func TestGlitchBudget(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		defer c2.Close()
		victim, err := Server(c1, &Config{MaxGlitches: 10, GlitchesPerSecond: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer victim.Close()
		a := handshake(t, c2)
		acked := a.drain()
		a.send(dataFrame(flagSYN, 1, []byte("x")))
		empty := hdr(frameData, 0, 1, 0)
		a.flood(0, 10, func(int) []byte { return empty })
		a.syncDrained(t, acked)
		if err := victim.Err(); err != nil {
			t.Fatalf("closed within the budget: %v", err)
		}
		time.Sleep(500 * time.Millisecond) // regains one
		a.send(empty)
		a.syncDrained(t, acked)
		if err := victim.Err(); err != nil {
			t.Fatalf("closed within the regained budget: %v", err)
		}
		a.send(empty)
		<-victim.Done()
		if err := victim.Err(); !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "glitch budget (10, regaining 2 per second)") {
			t.Errorf("Err() = %v, want ErrProtocol naming the glitch budget", err)
		}
		if victim.glitches != 12 {
			t.Errorf("counted %d glitches, want 12", victim.glitches)
		}
	})
}

// TestUnansweredPingsForgotten: a peer that never answers pings but stays
// alive (it sends a frame now and then) does not make the session's table
// of pings awaiting an answer grow.
func TestUnansweredPingsForgotten(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		defer c2.Close()
		s, err := Client(c1, &Config{KeepAliveInterval: 10 * time.Second, KeepAliveTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		a := handshake(t, c2)
		a.drain()
		for range 100 { // 20 minutes: a keepalive ping every 12 s, never answered
			time.Sleep(12 * time.Second)
			a.send(hdr(framePing, 0, 0, 1))
		}
		synctest.Wait()
		if err := s.Err(); err != nil {
			t.Fatalf("session closed: %v", err)
		}
		s.pingMu.Lock()
		n := len(s.pings)
		s.pingMu.Unlock()
		if n > len(s.ownPings) {
			t.Errorf("%d unanswered pings remembered, want at most %d", n, len(s.ownPings))
		}
	})
}

// TestGracefulCloseLosesNothing: 1,000 streams each write a checksummed
// payload and Close at once; the peer reads every byte of every stream,
// then io.EOF. Either the session stays open, or it is shut down
// (Shutdown) the moment the last Close returns.
func TestGracefulCloseLosesNothing(t *testing.T) {
	t.Parallel()
	for _, shutdown := range []bool{false, true} {
		t.Run(fmt.Sprintf("shutdown=%v", shutdown), func(t *testing.T) {
			t.Parallel()
			testGracefulClose(t, shutdown)
		})
	}
}

func testGracefulClose(t *testing.T, shutdown bool) {
	const streams = 1000
	cfg := &Config{MaxIncomingStreams: streams, AcceptBacklog: streams}
	client, server := tcpSessions(t, cfg, cfg)
	// Payload: 4-byte index, body, SHA-256 of both.
	payload := func(i int) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(i))
		b = append(b, pattern(500+i*37%20000, uint32(i))...)
		sum := sha256.Sum256(b)
		return append(b, sum[:]...)
	}
	results := make(chan error, 2*streams) // the writer and the reader may each fail
	go func() {                            // owned by server: ends when it has ended and its backlog is drained
		for {
			st, err := server.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				got, err := io.ReadAll(st)
				switch {
				case err != nil:
				case len(got) < 36:
					err = fmt.Errorf("stream %d: %d bytes", st.ID(), len(got))
				case !bytes.Equal(got, payload(int(binary.BigEndian.Uint32(got)))):
					err = fmt.Errorf("stream %d: %d bytes, corrupted", st.ID(), len(got))
				}
				results <- err
				st.Close()
			}()
		}
	}()
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() {
			st, err := client.OpenStream()
			if err != nil {
				results <- err
				return
			}
			if _, err := st.Write(payload(i)); err != nil {
				results <- err
			}
			st.Close()
		})
	}
	wg.Wait()
	shut := make(chan error, 1)
	if shutdown {
		go func() { shut <- client.Shutdown(context.Background()) }()
	}
	for i := range streams {
		if err := recvErr(t, results); err != nil {
			t.Fatalf("stream %d of %d: %v", i, streams, err)
		}
	}
	if shutdown {
		if err := recvErr(t, shut); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	}
}

// TestReceiveMemory measures what a peer can make a session hold in
// receive buffers: streams nobody reads (here waiting in the accept
// backlog), each sent a little more than 1 KiB, the worst case for the
// buffer chunks. Not parallel: it measures the heap.
func TestReceiveMemory(t *testing.T) {
	checkNoLeaks(t)
	for _, tc := range []struct {
		name    string
		streams int
		each    int
		read    int // bytes the application reads from each stream
		more    int // bytes the peer sends on each after that
		frame   int // MaxFrameSize, if not the default: the payload goes in one frame
	}{
		{"1000 streams x 1025 bytes", 1000, 1025, 0, 0, 0},
		{"1000 streams x 16385 bytes", 1000, 16385, 0, 0, 0},
		{"64 streams x 256 KiB", 64, 256 << 10, 0, 0, 0},
		// A body of known length read exactly: the last byte, in a
		// 16 KiB chunk, must not pin it.
		{"1000 streams x 16385 bytes, 16384 read", 1000, 16385, 16384, 0, 0},
		{"400 streams x 32769 bytes, 24576 read", 400, 32769, 24576, 0, 0},
		// Read to 1 byte into the second large chunk, then 1 byte more
		// in a third: 48 KiB of chunks held 16386 bytes (found by a
		// review helper).
		{"300 streams x 48 KiB, 32767 read, 1 more", 300, 48 << 10, 32<<10 - 1, 1, 0},
		// One frame of 1025 bytes on a fresh stream: it took a 16 KiB
		// chunk (found by a review helper).
		{"1000 streams x 1025 bytes in one frame, 64 KiB frames allowed", 1000, 1025, 0, 0, 64 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := liveHeap()
			var cfg *Config
			if tc.frame > 0 {
				cfg = &Config{MaxFrameSize: tc.frame}
			}
			victim, a := newAttack(t, cfg, false)
			acked := a.drain()
			for i := range tc.streams {
				// The payload in two frames: the first fills the 1 KiB
				// chunk a fresh stream starts with.
				frames := [][]byte{fill(uint32(2*i+1), tc.each-1), dataFrame(0, uint32(2*i+1), []byte{1})}
				if tc.frame > 0 {
					frames = [][]byte{dataFrame(flagSYN, uint32(2*i+1), make([]byte, tc.each))}
				}
				if err := a.send(frames...); err != nil {
					t.Fatal(err)
				}
			}
			a.syncDrained(t, acked)
			var streams []*Stream
			if tc.read > 0 {
				buf := make([]byte, tc.read)
				for range tc.streams {
					st, err := victim.AcceptStream()
					if err != nil {
						t.Fatal(err)
					}
					if _, err := io.ReadFull(st, buf); err != nil {
						t.Fatal(err)
					}
					streams = append(streams, st)
				}
				a.syncDrained(t, acked) // the window updates
			}
			if tc.more > 0 {
				for i := range tc.streams {
					if err := a.send(dataFrame(0, uint32(2*i+1), make([]byte, tc.more))); err != nil {
						t.Fatal(err)
					}
				}
				a.syncDrained(t, acked)
			}
			if err := victim.Err(); err != nil {
				t.Fatal(err)
			}
			held := liveHeap() - before
			data := int64(tc.streams * (tc.each - tc.read + tc.more))
			t.Logf("%d bytes of unread data held in %d B of live heap (%.2fx)", data, held, float64(held)/float64(data))
			// Bound: SECURITY.md, receive buffers.
			if bound := 2*data + int64(tc.streams)*smallChunkSize + 2<<20; held > bound {
				t.Errorf("held %d bytes, bound %d", held, bound)
			}
			runtime.KeepAlive(victim)
			runtime.KeepAlive(streams)
		})
	}
}

// TestFramesCrossingOwnReset: a WINDOW_UPDATE, an RST or an empty FIN that
// arrives for a stream this side has just reset (still in the table while
// the goroutine that reset it lets go of it) may have crossed the RST on
// the wire: a correct peer's, it is not a glitch. For a stream the peer
// reset, it is.
func TestFramesCrossingOwnReset(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		frame  []byte
		byPeer bool
		glitch bool
	}{
		{"WINDOW_UPDATE", hdr(frameWindowUpdate, 0, 1, 1024), false, false},
		{"RST", hdr(frameReset, 0, 1, uint32(codeCancel)), false, false},
		{"empty FIN", hdr(frameData, flagFIN, 1, 0), false, false},
		{"WINDOW_UPDATE after the peer's RST", hdr(frameWindowUpdate, 0, 1, 1024), true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			victim, a := newAttack(t, nil, false) // net.Pipe: the sync orders the glitch count
			acked := a.drain()
			st := a.openAccepted(t, victim, 1)
			st.Write([]byte("y")) // the peer is sent data: its RST is no rapid reset
			if tc.byPeer {
				a.send(hdr(frameReset, 0, 1, uint32(codeCancel)))
			} else {
				st.mu.Lock()
				st.state |= stClosed
				st.resetLocked(0) // not yet removed, as in the goroutine that reset it
				st.mu.Unlock()
			}
			a.syncDrained(t, acked)
			a.send(tc.frame)
			a.syncDrained(t, acked)
			if got := victim.glitches; (got != 0) != tc.glitch {
				t.Errorf("%d glitches, want a glitch: %v", got, tc.glitch)
			}
			if err := victim.Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// collect is sync that returns the victim's frames read on the way. Two
// in a row return everything the victim had queued before the first: an
// update queued beside the first answer may go out after it.
func (a *attacker) collect(t *testing.T) []frameHeader {
	t.Helper()
	if err := a.send(hdr(framePing, 0, 0, syncPing)); err != nil {
		t.Fatalf("attacker ping: %v", err)
	}
	var got []frameHeader
	for {
		h, err := a.readFrame()
		if err != nil {
			t.Fatalf("waiting for the victim's answer to a ping: %v", err)
		}
		if h.typ == framePing && h.flags == flagACK && h.length == syncPing {
			return got
		}
		got = append(got, h)
	}
}

// finishedStreamData sends n bytes on a new stream id, the last frame with
// FIN, in frames of 1024 bytes.
func finishedStreamData(id uint32, n int) []byte {
	b := fill(id, n-1024)
	return append(b, dataFrame(flagFIN, id, make([]byte, 1024))...)
}

// TestUnreadAfterFINAndRSTCredited: data the peer finished with FIN stays
// readable when it resets the stream afterwards. Whatever drops it unread
// (CloseRead, Reset, a StreamListener's Close refusing it in the backlog)
// must give its session credit back, or every such stream shrinks the
// peer's session window for good.
func TestUnreadAfterFINAndRSTCredited(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		accept bool
		drop   func(t *testing.T, victim *Session, st *Stream)
	}{
		{"CloseRead", true, func(t *testing.T, _ *Session, st *Stream) {
			if err := st.CloseRead(); !errors.Is(err, ErrStreamReset) {
				t.Errorf("CloseRead after the peer's RST: %v, want ErrStreamReset", err)
			}
		}},
		{"Reset", true, func(t *testing.T, _ *Session, st *Stream) {
			st.Reset()
			st.Close()
		}},
		{"refused from the backlog", false, func(t *testing.T, victim *Session, _ *Stream) {
			victim.StreamListener().Close()
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			victim, a := newAttack(t, nil, false)
			// An accepted stream left open, so that the listener's Close
			// waits for it rather than closing the session.
			keep := a.openAccepted(t, victim, 1)
			defer keep.Close()
			const n = 256 << 10 // the whole stream window: four discard batches
			a.send(finishedStreamData(3, n))
			var st *Stream
			if tc.accept {
				var err error
				if st, err = victim.AcceptStream(); err != nil {
					t.Fatal(err)
				}
				defer st.Close()
			}
			a.send(hdr(frameReset, 0, 3, uint32(codeCancel)))
			a.collect(t)
			tc.drop(t, victim, st)
			credit := 0
			for _, h := range append(a.collect(t), a.collect(t)...) {
				if h.typ == frameWindowUpdate && h.streamID == 0 {
					credit += int(h.length)
				}
			}
			if credit != n {
				t.Errorf("session credit given back for the unread data: %d bytes, want %d", credit, n)
			}
		})
	}
}

// TestCloseReadNoUpdateAfterFIN: a read-closed stream discards what
// arrives and credits the stream so the peer never waits, but the frame
// that carries FIN ends the peer's sending: crediting it is a wasted
// frame.
func TestCloseReadNoUpdateAfterFIN(t *testing.T) {
	t.Parallel()
	victim, a := newAttack(t, nil, false)
	st := a.openAccepted(t, victim, 1)
	defer st.Close()
	if err := st.CloseRead(); err != nil {
		t.Fatal(err)
	}
	a.collect(t)
	// 192 KiB in all is a multiple of the stream's update batch, a
	// quarter or three quarters of its 256 KiB window: the frame with FIN
	// is the one that reaches a batch.
	const n = 192<<10 - 1
	var b []byte
	for sent := 1; sent < n; {
		k := min(n-sent, 1024)
		b = append(b, dataFrame(0, 1, make([]byte, k))...)
		sent += k
	}
	a.send(b)
	a.collect(t)
	a.collect(t)
	a.send(dataFrame(flagFIN, 1, []byte("x")))
	for _, h := range append(a.collect(t), a.collect(t)...) {
		if h.typ == frameWindowUpdate && h.streamID == 1 {
			t.Errorf("stream WINDOW_UPDATE of %d bytes after the peer's FIN", h.length)
		}
	}
	if err := victim.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestRefusalsExcused: a stream refused at MaxIncomingStreams is a glitch,
// except where a peer that keeps to the limit could not help it: before it
// answered a ping (it may not have read the preface, which announces the
// limit), or when the limit is reached only by streams it reset that the
// application has not closed (it no longer counts them).
func TestRefusalsExcused(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		answer   bool // the attacker answers the victim's first ping
		resetOne bool // it resets its first stream, which the application keeps open
		glitches int
	}{
		{"before the peer answered a ping", false, false, 0},
		{"after it answered", true, false, 3},
		{"at the limit by a stream the peer reset", true, true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			victim, a := newAttack(t, &Config{MaxIncomingStreams: 1}, false)
			ping, err := a.until(func(h frameHeader) bool { return h.typ == framePing && h.flags == 0 })
			if err != nil {
				t.Fatal(err)
			}
			acked := a.drain()
			if tc.answer {
				a.send(hdr(framePing, flagACK, 0, ping.length))
			}
			st := a.openAccepted(t, victim, 1)
			defer st.Close()
			if tc.resetOne {
				st.Write([]byte("y")) // data sent: no rapid reset
				a.syncDrained(t, acked)
				a.send(hdr(frameReset, 0, 1, uint32(codeCancel)))
			}
			for id := uint32(3); id <= 7; id += 2 {
				a.send(dataFrame(flagSYN, id, []byte("x")))
			}
			a.syncDrained(t, acked)
			if got := victim.glitches; got != tc.glitches {
				t.Errorf("%d glitches for 3 refused streams, want %d", got, tc.glitches)
			}
		})
	}
}

// TestBacklogBurstNotAGlitch: a client that opens far more streams than the
// server's AcceptBacklog before the server's application accepts any has the
// excess refused (ErrStreamRefused, safe to retry), and the session lives
// on. The client cannot see the backlog, so these refusals are no glitches;
// counted as glitches, 2100 of them closed the session with every stream in
// it.
func TestBacklogBurstNotAGlitch(t *testing.T) {
	t.Parallel()
	const backlog, burst = 16, 16 + 2100
	client, server := tcpSessions(t, nil, &Config{AcceptBacklog: backlog})
	streams := make([]*Stream, burst)
	for i := range streams {
		st, err := client.OpenStream()
		if err != nil {
			t.Fatalf("stream %d of the burst: %v", i, err)
		}
		// OpenStream queues the SYN at once: the refusal may arrive
		// before the Write, which then fails with it (Read below
		// counts it).
		if _, err := st.Write([]byte("x")); err != nil && !errors.Is(err, ErrStreamRefused) {
			t.Fatalf("stream %d of the burst: %v", i, err)
		}
		streams[i] = st
	}
	// The ping goes out behind every SYN: once it is answered, the server
	// has refused all it will, and accepting now takes only the backlog.
	if _, err := client.Ping(); err != nil {
		t.Fatalf("session ended during the burst: %v", err)
	}
	go func() {
		for range backlog {
			st, err := server.AcceptStream()
			if err != nil {
				return
			}
			st.Write([]byte("y"))
			st.Close()
		}
	}()
	accepted, refused := 0, 0
	buf := make([]byte, 1)
	for i, st := range streams {
		_, err := st.Read(buf)
		switch {
		case err == nil && buf[0] == 'y':
			accepted++
		case errors.Is(err, ErrStreamRefused):
			refused++
		default:
			t.Fatalf("stream %d of the burst: read %q, %v; want the answer or ErrStreamRefused", i, buf, err)
		}
		st.Close()
	}
	if accepted != backlog || refused != burst-backlog {
		t.Errorf("%d streams accepted and %d refused, want %d and %d", accepted, refused, backlog, burst-backlog)
	}
	c, s := streamPair(t, client, server)
	if _, err := c.Write([]byte("z")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, buf); err != nil || buf[0] != 'z' {
		t.Fatalf("a stream after the burst read %q, %v", buf, err)
	}
	if err := server.Err(); err != nil {
		t.Fatalf("the server's session ended: %v", err)
	}
}

// slowReader is a peer on c that sends its preface and then reads 1 KiB
// every pause, until c is closed; the channel is closed as it returns.
func slowReader(c net.Conn, pause time.Duration) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Write(appendPreface(nil, settings{streamWindow: maxWindow, sessionWindow: maxWindow, maxFrameSize: 1024, maxStreams: 100}))
		buf := make([]byte, 1024)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			time.Sleep(pause)
		}
	}()
	return done
}

// TestWriteTimeoutSlowReader: the peer reads steadily, 1 KiB
// every 100 ms (10 KiB/s), never stalling for anywhere near WriteTimeout.
// Config.WriteTimeout and SECURITY.md promise to close only a session whose
// write "makes no progress" for WriteTimeout; every write here makes
// progress every 100 ms, so the session must survive and the Write finish.
func TestWriteTimeoutSlowReader(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		peerDone := slowReader(c2, 100*time.Millisecond)
		defer func() { <-peerDone }()
		defer c2.Close()
		s, err := Client(c1, &Config{WriteTimeout: 3 * time.Second, KeepAliveInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		synctest.Wait()
		st, _ := s.OpenStream()
		start := time.Now()
		n, err := st.Write(make([]byte, 256<<10))
		if errors.Is(err, ErrWriteTimeout) || errors.Is(s.Err(), ErrWriteTimeout) {
			t.Fatalf("peer reading 10 KiB/s (progress every 100 ms) killed by WriteTimeout=3s after %v: Write = %d, %v; Err() = %v",
				time.Since(start), n, err, s.Err())
		}
		if err != nil {
			t.Fatalf("Write: %d, %v", n, err)
		}
	})
}

// TestWriteTimeoutSlowReaderSocket is the same over a socket, where the
// writer goroutine sees progress at each system call: the peer reads 1 KiB
// every 20 ms through small buffers (a 64 KiB batch takes 1.3 s to go),
// WriteTimeout is 1 s. (A Unix socket: on loopback TCP reopens a closed
// window only in steps of its 64 KiB MSS, so progress there is as coarse
// as a batch.)
func TestWriteTimeoutSlowReaderSocket(t *testing.T) {
	t.Parallel()
	c1, c2 := connPair(t, "unix", filepath.Join(t.TempDir(), "s"))
	c1.(*net.UnixConn).SetWriteBuffer(4096)
	c2.(*net.UnixConn).SetReadBuffer(4096)
	defer c2.Close()
	slowReader(c2, 20*time.Millisecond)
	s, err := Client(c1, &Config{WriteTimeout: time.Second, KeepAliveInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer closeAndWait(t, s)
	st, _ := s.OpenStream()
	start := time.Now()
	if n, err := st.Write(make([]byte, 96<<10)); err != nil {
		t.Fatalf("peer reading 50 KiB/s (progress every 20 ms), WriteTimeout 1s: after %v, Write = %d, %v; Err() = %v",
			time.Since(start), n, err, s.Err())
	}
}

// TestKeepAliveWhileWriteBlocked: the peer goes silent and stops
// reading (a real black hole on TCP: the send buffer fills, so writes block
// rather than vanish) while this side has data to send. SECURITY.md: a
// silent peer closes the session "exactly KeepAliveInterval +
// KeepAliveTimeout after the last byte heard". Here that is 4 s; the
// session must not live until WriteTimeout (30 s by default), nor forever
// with WriteTimeout disabled. (Found by a review helper: keepalive ran in
// the writer goroutine, blocked in that write.)
func TestKeepAliveWhileWriteBlocked(t *testing.T) {
	t.Parallel()
	for _, wt := range []time.Duration{0, -1} {
		t.Run("WriteTimeout="+wt.String(), func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				c1, c2 := net.Pipe()
				defer c2.Close()
				go func() { // the peer: preface, reads ours and our ping, then black hole
					c2.Write(appendPreface(nil, attackerSettings))
					io.ReadFull(c2, make([]byte, prefaceSize+headerSize))
				}()
				s, err := Client(c1, &Config{KeepAliveInterval: 2 * time.Second, KeepAliveTimeout: 2 * time.Second, WriteTimeout: wt})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				synctest.Wait()
				start := time.Now()
				st, _ := s.OpenStream()
				go st.Write(make([]byte, 256<<10)) // ends with the session
				select {
				case <-s.Done():
				case <-time.After(time.Minute):
				}
				if got := time.Since(start); got > 4*time.Second || !errors.Is(s.Err(), ErrKeepAliveTimeout) {
					t.Errorf("silent, non-reading peer: session ended after %v with %v; want ErrKeepAliveTimeout after 4s (KeepAliveInterval+KeepAliveTimeout)", got, s.Err())
				}
			})
		})
	}
}

// TestKeepAliveAfterAnsweredPing: Config.KeepAliveInterval (updated
// doc): "The session closes a peer silent for KeepAliveInterval +
// KeepAliveTimeout"; SECURITY.md: "closes exactly KeepAliveInterval +
// KeepAliveTimeout after the last byte heard". The peer answers the first
// keepalive ping, then goes silent (still reading). With KeepAliveInterval
// 1s and KeepAliveTimeout 5s the session must close 6s after that answer;
// it closed only ~10s after it (KeepAliveTimeout - KeepAliveInterval late;
// found by a review helper).
func TestKeepAliveAfterAnsweredPing(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		defer c2.Close()
		start := time.Now()
		answered := make(chan time.Time, 1)
		done := false
		// Answer the first keepalive ping (sent at 1s; the start-up RTT
		// pings at 0 go unanswered), then silence.
		go pingAnswerer(c2, func(since time.Duration) time.Duration {
			if done || since < time.Second {
				return -1
			}
			done = true
			answered <- time.Now()
			return 0
		})
		s := keepaliveClient(t, c1)
		defer s.Close()
		select {
		case <-s.Done():
		case <-time.After(time.Minute):
		}
		last := <-answered
		got := time.Since(last)
		t.Logf("last byte heard at %v; session ended %v later: %v", last.Sub(start), got, s.Err())
		if !errors.Is(s.Err(), ErrKeepAliveTimeout) || got > 6*time.Second {
			t.Errorf("peer silent since its ping answer: session ended %v after it (%v); want ErrKeepAliveTimeout after 6s (KeepAliveInterval+KeepAliveTimeout)", got, s.Err())
		}
	})
}

// keepaliveClient is a client session on c with KeepAliveInterval 1s and
// KeepAliveTimeout 5s, for a peer played by the test.
func keepaliveClient(t *testing.T, c net.Conn) *Session {
	t.Helper()
	s, err := Client(c, &Config{KeepAliveInterval: time.Second, KeepAliveTimeout: 5 * time.Second, HandshakeTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pingAnswerer plays a peer on c: it sends its preface, reads everything,
// and answers each ping after the delay that delay returns for it, given
// the time since pingAnswerer started (0: at once; negative: never).
func pingAnswerer(c net.Conn, delay func(since time.Duration) time.Duration) {
	start := time.Now()
	c.Write(appendPreface(nil, attackerSettings))
	io.ReadFull(c, make([]byte, prefaceSize))
	hdr := make([]byte, headerSize)
	for {
		if _, err := io.ReadFull(c, hdr); err != nil {
			return
		}
		h, err := decodeHeader(hdr, 1<<20)
		if err != nil {
			return
		}
		if h.typ == frameData && h.length > 0 {
			io.ReadFull(c, make([]byte, h.length))
		}
		if h.typ != framePing || h.flags&flagACK != 0 {
			continue
		}
		ack := appendHeader(nil, frameHeader{typ: framePing, flags: flagACK, length: h.length})
		switch d := delay(time.Since(start)); {
		case d == 0:
			c.Write(ack)
		case d > 0:
			time.AfterFunc(d, func() { c.Write(ack) })
		}
	}
}

// TestKeepAliveNextPingAfterAnswer: with KeepAliveInterval 1s and
// KeepAliveTimeout 5s, a peer that answers every keepalive ping within 3s
// is never closed. The ping after an answered one went out only when the
// tick set for the answered one's timeout came (5s late), and the peer,
// silent until pinged, was closed at 7s. (Found by a review helper.)
func TestKeepAliveNextPingAfterAnswer(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		defer c2.Close()
		start := time.Now()
		first := true
		// Start-up RTT pings (at 0) and the first keepalive ping (at 1s)
		// are answered at once, later keepalive pings after 3s.
		go pingAnswerer(c2, func(since time.Duration) time.Duration {
			if since < time.Second || first {
				first = first && since < time.Second
				return 0
			}
			return 3 * time.Second
		})
		s := keepaliveClient(t, c1)
		defer s.Close()
		select {
		case <-s.Done():
			t.Errorf("session closed after %v with %v, though the peer answered every keepalive ping within 3s", time.Since(start), s.Err())
		case <-time.After(time.Minute):
		}
	})
}

// TestKeepAliveLongTimeout: any positive KeepAliveTimeout is valid, and a
// huge one ("ping, but never give up") must not close a live session:
// KeepAliveInterval + KeepAliveTimeout overflowed, and the first tick
// closed it. (Found by a review helper.)
func TestKeepAliveLongTimeout(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		client, err := Client(c1, &Config{KeepAliveInterval: time.Second, KeepAliveTimeout: math.MaxInt64})
		if err != nil {
			t.Fatal(err)
		}
		server, err := Server(c2, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer closeAndWait(t, server)
		defer closeAndWait(t, client)
		a, b := streamPair(t, client, server)
		for range 10 { // a live, chatty peer
			b.Write([]byte("x"))
			a.Read(make([]byte, 1))
			time.Sleep(500 * time.Millisecond)
		}
		if err := client.Err(); err != nil {
			t.Errorf("live session closed: %v", err)
		}
	})
}

// TestKeepAliveTinyInterval: a tiny KeepAliveInterval (valid: the
// Config accepts any positive duration) fires the keepalive timer before
// startKeepalive has stored it in s.ka.timer; keepaliveTick then calls
// Reset on a nil *time.Timer and the process panicked. (Found by a review
// helper.)
func TestKeepAliveTinyInterval(t *testing.T) {
	t.Parallel()
	for i := 0; i < 300; i++ {
		c1, c2 := net.Pipe()
		cfg := &Config{KeepAliveInterval: time.Nanosecond, KeepAliveTimeout: time.Hour}
		a, err := Client(c1, cfg)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Server(c2, cfg)
		if err != nil {
			t.Fatal(err)
		}
		a.Close()
		b.Close()
	}
}

// TestWriteTimeoutSlowReaderTCP: over TCP with default buffers, a peer
// reading steadily (1 KiB every 4 ms at most, 250 KB/s) keeps a blocked
// write from timing out: the kernel wakes the writer only once a third of
// the megabytes of send buffer is free (here after 1.3 MB, over 5 s), but
// the send queue shrinks all along, which the write timer watches on
// Linux. The Write ends at its own deadline, the session alive. (Found by
// a review helper: the session failed with ErrWriteTimeout. On loopback
// the receiver reopens its window in steps, about 95 KB here, so the queue
// shrinks in such steps: the reader must take one well within WriteTimeout
// even on a loaded machine. With 1 KiB every 2 ms and a WriteTimeout of
// 2 s, the test failed under two race-enabled test runs at once.)
func TestWriteTimeoutSlowReaderTCP(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("the send queue is watched on Linux only")
	}
	c1, c2 := tcpConnPair(t)
	defer c2.Close()
	slowReader(c2, 4*time.Millisecond)
	s, err := Client(c1, &Config{WriteTimeout: 4 * time.Second, KeepAliveInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer closeAndWait(t, s)
	st, _ := s.OpenStream()
	st.SetWriteDeadline(time.Now().Add(5 * time.Second))
	n, err := st.Write(make([]byte, 32<<20))
	if !errors.Is(err, os.ErrDeadlineExceeded) || s.Err() != nil {
		t.Errorf("Write = %d, %v, want its deadline; session error %v, want none", n, err, s.Err())
	}
}

// TestCrossingResetsManyStreams: both applications reset the same 6000
// streams at once, so each side's RST crosses the other's on the wire:
// frames for finished streams that an honest peer could not help. All
// must be excused, however many streams end in one burst.
func TestCrossingResetsManyStreams(t *testing.T) {
	t.Parallel()
	const n = 6000 // under MaxIncomingStreams (8192)
	c1, c2, gate := gatedPair(t)
	client, server := sessionPair(t, c1, c2, nil, nil)

	accepted := make(chan *Stream, n)
	go func() {
		for {
			st, err := server.AcceptStream()
			if err != nil {
				return
			}
			accepted <- st
		}
	}()
	cs := make([]*Stream, 0, n)
	ss := make([]*Stream, 0, n)
	buf := make([]byte, 1)
	for len(cs) < n {
		// In batches, so that the accept backlog never fills.
		for i := 0; i < 256 && len(cs) < n; i++ {
			st, err := client.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := st.Write([]byte("q")); err != nil {
				t.Fatal(err)
			}
			cs = append(cs, st)
		}
		for len(ss) < len(cs) {
			st := <-accepted
			if _, err := io.ReadFull(st, buf); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Write([]byte("r")); err != nil { // data sent: no rapid reset
				t.Fatal(err)
			}
			ss = append(ss, st)
		}
	}
	for _, st := range cs {
		if _, err := io.ReadFull(st, buf); err != nil {
			t.Fatal(err)
		}
	}

	gate.hold() // the client's RSTs are in flight while the server resets too
	for _, st := range cs {
		st.Reset()
	}
	waitFor(t, "the client to forget its streams", func() bool { return client.NumStreams() == 0 })
	for _, st := range ss {
		st.Reset()
	}
	// A stream the server opens now reaches the client after every RST.
	marker, err := server.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	marker.Write([]byte("m"))
	got := make(chan error, 1)
	go func() {
		st, err := client.AcceptStream()
		if err == nil {
			st.Close()
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("client session ended: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("marker stream never arrived")
	}
	gate.release()
	time.Sleep(500 * time.Millisecond)
	marker.Close()
	for name, s := range map[string]*Session{"client": client, "server": server} {
		if err := s.Err(); err != nil {
			t.Errorf("%s session ended: %v (ErrProtocol: %v)", name, err, errors.Is(err, ErrProtocol))
		}
	}
}

// TestWindowUpdatesJoin: credit counts as given when its WINDOW_UPDATE is
// queued, so a peer that never reads (or reads a trickle, which
// WriteTimeout tolerates) can keep sending at the pace the application
// reads. Each batch the application consumes must join the update still
// queued, or the control queue grows with the bytes sent, without end.
func TestWindowUpdatesJoin(t *testing.T) {
	t.Parallel()
	cfg := &Config{MaxFrameSize: 64 << 10, InitialStreamWindow: 64 << 10, SessionWindow: 1 << 20, MaxQueuedControlFrames: 100}
	victim, a := newAttack(t, cfg, false) // the attacker never reads
	read := make(chan int, 1)
	go func() {
		st, err := victim.AcceptStream()
		if err != nil {
			return
		}
		buf := make([]byte, 64<<10)
		for {
			n, err := st.Read(buf)
			if err != nil {
				return
			}
			read <- n
		}
	}()
	chunk := make([]byte, 16<<10)
	if err := a.send(dataFrame(flagSYN, 1, chunk[:1])); err != nil {
		t.Fatal(err)
	}
	<-read
	// Send a window's worth... then wait for the application to read it:
	// what it read it credits back without the attacker seeing a byte.
	const total = 256 << 20
	for sent := 0; sent < total; sent += len(chunk) {
		if err := a.send(dataFrame(0, 1, chunk)); err != nil {
			t.Fatalf("after %d bytes: %v (session: %v)", sent, err, victim.Err())
		}
		for got := 0; got < len(chunk); {
			select {
			case n := <-read:
				got += n
			case <-time.After(10 * time.Second):
				t.Fatalf("application stalled after %d bytes (session: %v)", sent, victim.Err())
			}
		}
	}
	victim.wmu.Lock()
	queued := len(victim.sched.ctrl)
	victim.wmu.Unlock()
	t.Logf("session error: %v", victim.Err())
	if victim.Err() == nil && queued > cfg.MaxQueuedControlFrames {
		t.Errorf("%d control frames queued for a peer that read nothing, session alive (MaxQueuedControlFrames %d; one per %d KiB sent, without bound)", queued, cfg.MaxQueuedControlFrames, total/1024/queued)
	}
}

// unlimitedPeer returns a client session whose peer is an attacker that
// announces no stream limit and reads what the client sends (see drain).
func unlimitedPeer(t *testing.T) (*Session, *attacker, <-chan struct{}) {
	t.Helper()
	c1, c2 := net.Pipe()
	victim, err := Client(c1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c2.Close(); closeAndWait(t, victim) })
	a := handshakeWith(t, c2, settings{streamWindow: 256 << 10, sessionWindow: 16 << 20, maxFrameSize: 1024, maxStreams: 1<<32 - 1})
	return victim, a, a.drain()
}

// TestRepeatedGoAwayRefusesAbove: each GOAWAY that lowers the ID refuses
// exactly this side's streams above it, whether the session finds them by
// looking up the IDs in the range (a dense table) or by walking the table
// (a sparse one), and whatever the parity of the IDs the peer names. (A
// repeated GOAWAY used to walk the whole table each time: 990 of them
// beside 200,000 streams took a victim 1.4 s.)
func TestRepeatedGoAwayRefusesAbove(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		streams int      // opened, IDs 1, 3, ...
		resetTo uint32   // the peer resets streams up to this ID first: a sparse table
		goAways []uint32 // IDs of successive GOAWAYs
		left    []int    // streams left after each
	}{
		{"dense", 200, 0, []uint32{maxStreamID, 100, 51, 0}, []int{200, 50, 26, 0}},
		{"same ID again", 20, 0, []uint32{20, 20, 21, 11}, []int{10, 10, 10, 6}},
		{"sparse", 10, 15, []uint32{0}, []int{0}},
		{"sparse then lower", 50, 79, []uint32{90, 84, 1}, []int{5, 2, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			victim, a, acked := unlimitedPeer(t)
			var streams []*Stream
			for range tc.streams {
				st, err := victim.OpenStream()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := st.Write([]byte("x")); err != nil { // its SYN goes out
					t.Fatal(err)
				}
				streams = append(streams, st)
			}
			a.syncDrained(t, acked)
			var resets []byte
			for id := uint32(1); id <= tc.resetTo; id += 2 {
				resets = append(resets, hdr(frameReset, 0, id, uint32(codeCancel))...)
			}
			if err := a.send(resets); err != nil {
				t.Fatal(err)
			}
			lowest := uint32(maxStreamID)
			for i, id := range tc.goAways {
				if err := a.send(hdr(frameGoAway, 0, id, uint32(codeNoError))); err != nil {
					t.Fatal(err)
				}
				lowest = min(lowest, id)
				a.syncDrained(t, acked)
				if got := victim.NumStreams(); got != tc.left[i] {
					t.Errorf("after GOAWAY %d (%d): %d streams left, want %d", i, id, got, tc.left[i])
				}
				for _, st := range streams {
					if st.id <= tc.resetTo {
						continue
					}
					_, err := st.Write([]byte("x"))
					if refused := errors.Is(err, ErrStreamRefused); refused != (st.id > lowest) {
						t.Errorf("after GOAWAY %d (%d): stream %d Write: %v", i, id, st.id, err)
					}
				}
			}
			if err := victim.Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestOrphansBounded: a peer that announces no stream limit and never
// finishes a stream (no FIN, no RST) cannot make this side keep every
// stream it opened and closed: past maxOrphans, Close resets the stream
// right behind its FIN. Each stream the peer finishes makes room again.
// (Before the bound, 100,000 closed streams stayed in the table with 34 MB
// of heap: found by a review helper.)
func TestOrphansBounded(t *testing.T) {
	t.Parallel()
	victim, a, acked := unlimitedPeer(t)
	closeOne := func() uint32 {
		t.Helper()
		st, err := victim.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write([]byte("req")); err != nil {
			t.Fatal(err)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		return st.id
	}
	for range maxOrphans + 500 {
		closeOne()
	}
	a.syncDrained(t, acked)
	if n, o := victim.NumStreams(), victim.orphans.Load(); n != maxOrphans || o != maxOrphans {
		t.Fatalf("%d streams closed, the peer finishing none: %d kept, %d counted; want %d", maxOrphans+500, n, o, maxOrphans)
	}
	// The peer finishes the first stream: the next one closed waits for
	// the peer again.
	if err := a.send(dataFrame(flagFIN, 1, nil)); err != nil {
		t.Fatal(err)
	}
	a.syncDrained(t, acked)
	if n := victim.NumStreams(); n != maxOrphans-1 {
		t.Fatalf("after the peer's FIN: %d streams kept, want %d", n, maxOrphans-1)
	}
	closeOne()
	a.syncDrained(t, acked)
	if n := victim.NumStreams(); n != maxOrphans {
		t.Errorf("a stream closed after room was made: %d kept, want %d", n, maxOrphans)
	}
	if err := victim.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestOrphanResetsNoGlitch: a client that sends requests and closes its
// streams without waiting for the answers, to a server whose application
// is slow to answer and allows more streams than maxOrphans, resets the
// streams past maxOrphans right behind their FINs. The server gets every
// request whole, and does not count those RSTs as rapid resets (past the
// glitch budget they closed the session).
func TestOrphanResetsNoGlitch(t *testing.T) {
	t.Parallel()
	const requests = maxOrphans + 2000
	// A backlog for all: a stream refused for a full backlog never
	// reaches Accept.
	client, server := pipeSessions(t, nil, &Config{MaxIncomingStreams: 2 * requests, AcceptBacklog: requests})
	got := make(chan []*Stream, 1)
	errc := make(chan error, 1)
	go func() {
		var held []*Stream
		for range requests {
			st, err := server.AcceptStream()
			if err != nil {
				errc <- err
				return
			}
			b, err := io.ReadAll(st)
			if err != nil || string(b) != fmt.Sprint(st.id) {
				errc <- fmt.Errorf("stream %d read %q, %v", st.id, b, err)
				return
			}
			held = append(held, st) // not answered yet
		}
		got <- held
	}()
	for range requests {
		st, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write([]byte(fmt.Sprint(st.id))); err != nil {
			t.Fatal(err)
		}
		st.Close()
	}
	var held []*Stream
	select {
	case held = <-got:
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(30 * time.Second):
		t.Fatalf("the server accepted fewer than %d streams in 30 s (client %v, server %v)", requests, client.Err(), server.Err())
	}
	if err := server.Err(); err != nil {
		t.Fatalf("server: %v", err)
	}
	if n := client.NumStreams(); n > maxOrphans {
		t.Errorf("the client keeps %d streams closed, want at most %d", n, maxOrphans)
	}
	for _, st := range held {
		st.Close()
	}
	waitFor(t, "the streams to finish", func() bool { return client.NumStreams() == 0 && server.NumStreams() == 0 })
	if err := client.Err(); err != nil {
		t.Fatalf("client: %v", err)
	}
}

// TestPingContext: against a peer that never answers pings, PingContext
// gives up when its ctx ends. The peer's late answer to that ping costs it
// no glitch (it would have, answering no ping this side remembers), but
// only one answer per ping given up is excused.
func TestPingContext(t *testing.T) {
	t.Parallel()
	victim, a := newAttack(t, nil, false)
	pinged := make(chan uint32, 1)
	go func() {
		// The victim's start-up ping (ID 1), unanswered, is its only one
		// until the keepalive's in 30 s: the next is PingContext's.
		h, err := a.until(func(h frameHeader) bool { return h.typ == framePing && h.flags == 0 && h.length > 1 })
		if err == nil {
			pinged <- h.length
		}
		close(pinged)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := victim.PingContext(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("PingContext against a peer that never answers: %v, want context.DeadlineExceeded", err)
	}
	id, ok := <-pinged
	if !ok {
		t.Fatal("the victim sent no ping")
	}
	victim.pingMu.Lock()
	_, kept := victim.pings[id]
	forgot := victim.forgot
	victim.pingMu.Unlock()
	if kept || forgot != 1 {
		t.Errorf("after PingContext gave up: ping %d kept %v, %d forgotten; want it dropped, 1 forgotten", id, kept, forgot)
	}
	acked := a.drain()
	ack := hdr(framePing, flagACK, 0, id)
	for i, want := range []int{0, 1} { // the late answer; the same again
		if err := a.send(ack); err != nil {
			t.Fatal(err)
		}
		a.syncDrained(t, acked)
		if victim.glitches != want {
			t.Errorf("after answer %d to the ping given up: %d glitches, want %d", i+1, victim.glitches, want)
		}
	}
	if err := victim.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestProtocolErrorWakesAcceptAndPing: a blocked Accept and PingContext
// return the peer's protocol error at once, not when the session ends:
// with a peer that does not read, that is once the GOAWAY telling it has
// waited errorGoAwayTimeout to go out.
func TestProtocolErrorWakesAcceptAndPing(t *testing.T) {
	t.Parallel()
	c1, c2 := tcpConnPair(t)
	c1.(*net.TCPConn).SetWriteBuffer(16 << 10)
	c2.(*net.TCPConn).SetReadBuffer(4 << 10)
	victim, a := newAttackOn(t, c1, c2, nil, attackerSettings) // the attacker reads nothing
	// A stream's window of data fills the socket buffers: the GOAWAY
	// waits behind it.
	st, err := victim.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	go st.Write(make([]byte, 256<<10))
	accepted := make(chan error, 1)
	go func() {
		_, err := victim.AcceptStream()
		accepted <- err
	}()
	pinged := make(chan error, 1)
	go func() {
		_, err := victim.PingContext(context.Background())
		pinged <- err
	}()
	time.Sleep(10 * time.Millisecond) // both waiting
	if err := a.send(hdr(frameData, flagSYN, 1, 1025)); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]chan error{"Accept": accepted, "PingContext": pinged} {
		err := <-ch
		select {
		case <-victim.dying:
			t.Errorf("%s returned only when the session ended", name)
		default:
		}
		if !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: %v, want the protocol error", name, err)
		}
	}
}

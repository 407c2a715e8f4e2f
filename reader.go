package tcpchan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The connection has one reader at a time: whoever holds the read token
// reads it and handles the frames, for every stream. Usually that is the
// session's reader goroutine, but a Read that finds no data, or a Write
// waiting for credit, takes the token when it is free and reads the socket
// itself, so what it waits for wakes it directly. Through the reader
// goroutine the same data costs a second wake-up, the reader goroutine's
// and then the caller's; on two cores that hand-off sets the tail of a
// round trip, and a bulk sender waited for each window update through three
// goroutines.
//
// A holder gives the token up as soon as its own call can go on, leaving the
// token free: its next call, usually a moment later, takes it again. If
// others wait for the connection meanwhile (Reads and Writes that could not
// take the token), it first handles the frames already in the read buffer,
// so that theirs do not wait behind its own, but reads the socket no further
// (see readHeld). Having woken a waiting Read or Write, it lets that one run
// first (runtime.Gosched). It leaves only its own stream's frames in the
// buffer for its next call. A Read or Write still waiting that has read a
// read buffer's worth of others' data since it took the token, and woke a
// waiting Read or Write, gives the token up and waits in turn, leaving it
// free for the busy stream's Read, which comes back in a moment. The reader
// goroutine takes a free token at once when another stream's frame is
// buffered or Accept, Ping or Close start waiting; otherwise after
// readTokenGrace (readTokenWaitGrace while Reads or Writes wait), a grace
// that lengthens while holders keep coming back in time, and in any case it
// takes a turn once neither it nor a read that emptied the socket has looked
// for maxReaderAbsence (a turn handles only what has arrived, without
// blocking, and gives the token back at once unless a Read or Write waits
// for a holder or part of a frame is buffered). It gives the token up when
// it is about to block after delivering data or credit to a waiting Read or
// Write, which is likely to come back.
//
// A holder blocks in conn.Read, so what ends its wait from outside (Close,
// CloseWrite, a new deadline) must stop that read: it sets a past read
// deadline on the connection, which the holder clears. Hence only
// connections whose deadlines are known to work (*net.TCPConn,
// *net.UnixConn) lend the token; on the others the reader goroutine keeps
// it. Frames are consumed only once wholly buffered, so an interrupted read
// loses nothing. Calls with a deadline wait for the token's holder instead.

// readTokenGrace is how long the token may stay free before the reader
// goroutine takes it: long enough for a caller to come back for more (a
// request/response round trip on loopback takes about 5 µs), short enough
// that frames nobody waits for yet (a ping, the peer's GOAWAY) are not
// delayed noticeably.
const readTokenGrace = 100 * time.Microsecond

// maxReaderAbsence is how long the reader goroutine leaves the token to
// Reads and Writes, none of whose reads emptied the socket meanwhile,
// before it takes a turn, so that frames they do not read for (a PING, a
// SYN, another stream's data still in the socket) wait about that long at
// most.
const maxReaderAbsence = readTokenGrace << maxGraceShift

// maxGraceShift bounds the lengthening of the graces while the token's
// holders keep coming back before they end, which spares the reader
// goroutine a wake-up each time: 16 times, so at most 1.6 ms, or 320 µs
// while Reads or Writes wait.
const maxGraceShift = 4

// readTokenWaitGrace is how long the token may stay free while somebody
// waits for the connection: the holder that just gave it up, if it comes
// back within that time, takes it again rather than be woken by the reader
// goroutine.
const readTokenWaitGrace = 20 * time.Microsecond

// errInterrupted is what a Read holding the read token gets when something
// outside stopped its read of the connection.
var errInterrupted = errors.New("tcpchan: read interrupted")

// readToken is the state of the read side. Fields are guarded by mu unless
// noted.
type readToken struct {
	mu          sync.Mutex
	held        atomic.Bool
	holder      atomic.Pointer[Stream] // the stream whose Read or Write holds the token; nil: the reader goroutine
	interrupted bool                   // a past read deadline is set on the connection
	lastFree    int64                  // session clock of the last release
	armed       bool                   // timer is running
	fireAt      int64                  // session clock when it fires
	turnDue     int64                  // session clock when the reader goroutine takes a turn
	drainedAt   atomic.Int64           // session clock when a read of the connection last emptied the socket
	timer       *time.Timer            // wakes the reader goroutine to take a token left free
	kick        chan struct{}          // capacity 1: the reader goroutine should take the token now
	grace       time.Duration          // if set, replaces readTokenGrace (tests)
	waitGrace   time.Duration          // if set, replaces readTokenWaitGrace (tests)
	takes       uint64                 // times a Read or Write took the token
	armTakes    uint64                 // takes when the timer was set
	shift       uint                   // the graces are lengthened by 1<<shift

	// waiters counts Reads and Writes waiting for what only the token's
	// holder delivers (see Session.needReader); a Read or Write stops
	// counting when its data or credit reaches it. While there are any, a
	// holder whose own call is done still handles what is buffered, and
	// the token stays free for readTokenWaitGrace (lengthened as
	// readTokenGrace is) rather than readTokenGrace.
	waiters atomic.Int32
	// lurkers counts other such goroutines (Accept, Ping, Close), which
	// wait too long or too rarely to deserve either.
	lurkers atomic.Int32

	// Set before the session starts: raw reads without blocking, and
	// deadliner interrupts a blocked read. Nil: Reads and Writes never
	// take the token.
	raw       rawReader
	deadliner readDeadliner
	// backlog reports the bytes waiting in the socket under a wrapped
	// connection (TLS), where drainedRuns cannot tell; nil elsewhere.
	backlog func() int

	// Owned by the holder.
	holderWrite bool  // the holder is a Write waiting for credit, not a Read
	delivered   bool  // it gave data or credit to a waiting Read or Write since it last blocked
	nonBlocking bool  // connReader reads only what has arrived
	drainedRuns uint8 // reads of the connection in a row, up to 2, that took all there was (see pingAcked)
	drainedPrev uint8 // drainedRuns before the latest read: how caught up the reader was when its bytes began to arrive
	readErr     error // what a non-blocking read saw, for the next blocking one
}

func (rt *readToken) init(conn io.ReadWriteCloser) {
	rt.held.Store(true) // the reader goroutine reads the preface
	rt.drainedRuns = 2  // nothing has arrived yet
	rt.kick = make(chan struct{}, 1)
	rt.raw, rt.deadliner = newRawReader(conn)
	if rt.raw == nil {
		rt.backlog = newBacklogProbe(conn)
		return
	}
	rt.timer = time.NewTimer(time.Hour)
	rt.timer.Stop()
}

// connReader records when data last arrived, once per read from the
// connection rather than once per frame, for keepalive.
type connReader struct{ s *Session }

func (r connReader) Read(p []byte) (int, error) {
	rt := &r.s.rt
	if err := rt.readErr; err != nil {
		if rt.nonBlocking {
			return 0, errWouldBlock // keep it for a blocking read
		}
		rt.readErr = nil
		return 0, err
	}
	var n int
	var err error
	if rt.nonBlocking {
		// An error waits for the next blocking read, so that it is
		// reported where it would have been. A past deadline is an
		// interrupt, which readFailed would no longer recognise then;
		// the holder's release clears it anyway.
		if n, err = rt.raw.tryRead(p); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			rt.readErr, n = err, 0
		}
		if n == 0 {
			if err == nil {
				rt.drainedRuns = 2 // the socket is empty: nothing is behind
			}
			err = errWouldBlock
		}
	} else {
		n, err = r.s.conn.Read(p)
	}
	if n > 0 {
		now := r.s.clock()
		r.s.lastRecv.Store(now)
		rt.drainedPrev = rt.drainedRuns
		if n < len(p) {
			rt.drainedAt.Store(now) // it took all there was
			rt.drainedRuns = min(rt.drainedRuns+1, 2)
		} else if len(p) >= r.s.br.Size()/2 {
			// More was waiting than half the read buffer takes. (A read
			// into a small remainder of the buffer says little.)
			rt.drainedRuns = 0
		}
	}
	return n, err
}

// errWouldBlock is connReader's answer to a non-blocking read that found
// nothing.
var errWouldBlock = errors.New("tcpchan: nothing to read yet")

// fillAvailable adds to the read buffer what has arrived, without blocking,
// and reports whether there was any.
func (s *Session) fillAvailable() bool {
	if s.rt.raw == nil || s.br.Buffered() == s.br.Size() {
		return false
	}
	s.rt.nonBlocking = true
	_, err := s.br.Peek(s.br.Buffered() + 1)
	s.rt.nonBlocking = false
	return err == nil
}

// readLoop is the reader goroutine. It never blocks on a stream or on the
// application: flow control guarantees buffer space, and a full accept
// backlog refuses streams instead of waiting.
func (s *Session) readLoop() {
	if s.hsTimer != nil {
		defer s.hsTimer.Stop()
	}
	if s.rt.timer != nil {
		defer s.rt.timer.Stop()
	}
	defer s.stopKeepalive()
	err := s.readPreface()
	for err == nil {
		if err = s.readHeld(nil); err != nil {
			break
		}
		turn, ok := s.awaitReadToken()
		for ok && turn {
			released, terr := s.readTurn()
			if err = terr; err != nil || !released {
				break // keeping the token
			}
			turn, ok = s.awaitReadToken()
		}
		if !ok {
			break // the session ended while a Read held the token
		}
	}
	if err != nil {
		s.failTellingPeer(err)
	}
	<-s.writerDone
	close(s.done)
}

// awaitReadToken waits, with the token given up, until the reader goroutine
// should take it again, and takes it. It reports turn when it took it only
// because its turn was due (see readTurn), and ok false once the session
// has ended.
func (s *Session) awaitReadToken() (turn, ok bool) {
	rt := &s.rt
	for {
		now := false
		select {
		case <-rt.kick:
			now = true
		case <-rt.timer.C:
			rt.mu.Lock()
			rt.armed = false
			clock := s.clock()
			newHolder := rt.held.Load() && rt.takes != rt.armTakes
			// By the grace before this fire lengthens it.
			releasedLately := clock-rt.lastFree < int64(s.graceLocked())
			if (rt.held.Load() || rt.takes != rt.armTakes) && rt.shift < maxGraceShift {
				// Woken for nothing: the token was taken back in
				// time. Wait longer next time.
				rt.shift++
			}
			if newHolder && releasedLately {
				// Callers keep taking the token back quickly: set
				// the timer for the holder's release now, while this
				// goroutine is awake anyway, rather than in the
				// release. Setting a timer may wake a sleeping
				// runtime thread (runtime.wakeNetPoller), and in
				// request/response traffic on an idle machine such a
				// wake-up can spread two goroutines that took turns
				// on one thread over two, every message then paying
				// a cross-thread wake-up for milliseconds. After a
				// longer quiet (slow traffic, a Read blocked on an
				// idle session) it sets none: it would likely wake
				// for nothing.
				s.armLocked(clock, s.graceLocked())
			}
			rt.mu.Unlock()
		case <-s.dying:
			return false, false
		}
		rt.mu.Lock()
		if !rt.held.Load() {
			clock := s.clock()
			idle := clock - rt.lastFree
			grace := int64(s.graceLocked())
			// A turn is due maxReaderAbsence after the reader goroutine's
			// last, unless a read of the connection emptied the socket
			// since: what had arrived by then is in the read buffer, whose
			// frames for others a holder's release looks for.
			turnAt := max(rt.turnDue, rt.drainedAt.Load()+int64(maxReaderAbsence))
			if now || idle >= grace || clock >= turnAt {
				if !now && idle >= grace {
					rt.shift = 0 // nobody came back in time
				}
				if rt.armed {
					rt.timer.Stop()
					rt.armed = false
				}
				rt.held.Store(true)
				rt.mu.Unlock()
				return !now && idle < grace, true
			}
			s.armLocked(clock, time.Duration(min(grace-idle, turnAt-clock)))
		}
		rt.mu.Unlock()
	}
}

// readTurn is the reader goroutine's turn while Reads and Writes keep
// taking the token back in time: it handles the frames that have arrived
// (those nobody reads for, a PING or a SYN, could otherwise wait there), at
// most maxTurnFills buffers, and gives the token back without blocking.
// Blocking would keep the token from the next Read, which would then wait
// for a hand-off; the turn costs it nothing when nothing has arrived. If a
// Read or Write waits for the holder, it keeps the token instead, reporting
// false, and goes on as after any other take. (Accept, Ping and Close got
// whatever had arrived for them; later frames are the grace's.)
// If it leaves part of a frame in the buffer, the rest is on its way: the
// reader goroutine is woken to take the token back at once.
func (s *Session) readTurn() (released bool, err error) {
	if err := s.Err(); err != nil {
		// As in readHeld: nothing is read after the session's error
		// (a Read or Write that met a protocol error handed the token
		// over; its kick may wait behind this timer's turn).
		return false, err
	}
	for fills := 0; ; {
		if !s.frameBuffered() {
			if fills == maxTurnFills || !s.fillAvailable() {
				break
			}
			fills++
			continue
		}
		h, err := s.nextFrame()
		if err != nil {
			return false, err
		}
		if err := s.handleFrame(h); err != nil {
			return false, err
		}
	}
	if s.rt.waiters.Load() > 0 {
		return false, nil
	}
	s.releaseReadToken(s.br.Buffered() > 0)
	return true, nil
}

// takeReadToken gives the token to st's Read, or its Write if write, if it
// is free. st.mu is held.
func (s *Session) takeReadToken(st *Stream, write bool) bool {
	rt := &s.rt
	if rt.deadliner == nil || rt.held.Load() {
		return false
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.held.Load() {
		return false
	}
	rt.held.Store(true)
	rt.holder.Store(st)
	rt.takes++
	rt.holderWrite = write
	return true
}

// releaseReadToken gives the token up. The reader goroutine takes it after
// the grace (see graceLocked) unless somebody takes it first, or at once if
// now. When the reader goroutine itself gives it up, its next turn is due
// maxReaderAbsence later. The caller holds no lock.
func (s *Session) releaseReadToken(now bool) {
	rt := &s.rt
	rt.mu.Lock()
	if rt.interrupted {
		rt.interrupted = false
		rt.deadliner.SetReadDeadline(time.Time{})
	}
	rt.delivered = false
	byReader := rt.holder.Swap(nil) == nil
	rt.held.Store(false)
	rt.lastFree = s.clock()
	if byReader {
		// Its next turn is due maxReaderAbsence from now.
		rt.turnDue = rt.lastFree + int64(maxReaderAbsence)
	}
	if !now {
		s.armLocked(rt.lastFree, s.graceLocked())
	}
	rt.mu.Unlock()
	if now {
		s.kickReader()
	}
}

// armLocked makes the timer fire within d of clock, the session clock now.
// rt.mu is held.
func (s *Session) armLocked(clock int64, d time.Duration) {
	rt := &s.rt
	at := clock + int64(d)
	if !rt.armed || rt.fireAt > at {
		rt.armed = true
		rt.fireAt = at
		rt.armTakes = rt.takes
		rt.timer.Reset(d)
	}
}

// graceLocked is how long the token may stay free: readTokenGrace, or
// readTokenWaitGrace while somebody waits for the connection. rt.mu is
// held.
func (s *Session) graceLocked() time.Duration {
	switch {
	case s.rt.waiters.Load() > 0 && s.rt.waitGrace > 0:
		return s.rt.waitGrace
	case s.rt.waiters.Load() > 0:
		return readTokenWaitGrace << s.rt.shift
	case s.rt.grace > 0 && s.rt.lurkers.Load() == 0:
		return s.rt.grace
	}
	return readTokenGrace << s.rt.shift
}

func (s *Session) kickReader() {
	select {
	case s.rt.kick <- struct{}{}:
	default:
	}
}

// needReader makes sure somebody reads the connection for a goroutine about
// to wait for what only the token's holder delivers, which it counts in
// waiters until doneWaiting: a release after this check sees the count.
func (s *Session) needReader() {
	s.rt.waiters.Add(1)
	if !s.rt.held.Load() {
		s.kickReader()
	}
}

func (s *Session) doneWaiting() { s.rt.waiters.Add(-1) }

// lurk is needReader for Accept, Ping and Close, counted in lurkers until
// doneLurking.
func (s *Session) lurk() {
	s.rt.lurkers.Add(1)
	if !s.rt.held.Load() {
		s.kickReader()
	}
}

func (s *Session) doneLurking() { s.rt.lurkers.Add(-1) }

// interruptRead stops the connection read of st's Read if it holds the
// token, so that it sees what changed (Close, a deadline). st.mu is held.
func (s *Session) interruptRead(st *Stream) {
	rt := &s.rt
	if rt.holder.Load() != st {
		return
	}
	rt.mu.Lock()
	if rt.holder.Load() == st && !rt.interrupted {
		rt.interrupted = true
		rt.deadliner.SetReadDeadline(aLongTimeAgo)
	}
	rt.mu.Unlock()
}

// aLongTimeAgo is a deadline in the past that is not the zero time, as in
// net/http.
var aLongTimeAgo = time.Unix(1, 0)

// readForStream reads the connection for st's Read or Write, which holds the
// read token, until st can stop waiting, or until it gives way to a busy
// stream (readHeld's errGaveWay), which it reports; then it gives the token
// up. A Read or Write that gave way is counted as waiting from then on.
func (s *Session) readForStream(st *Stream) (gaveWay bool) {
	err := s.readHeld(st)
	if gaveWay = err == errGaveWay; gaveWay {
		// Counted before the release, so that the grace is the one
		// for a waiting call. Not released "now" below, even with
		// frames for others buffered: the reader goroutine would take
		// the token from the Read it fed, which is coming back for it.
		s.rt.waiters.Add(1)
	} else if err != nil && err != errInterrupted {
		if errors.Is(err, ErrProtocol) {
			// Telling the peer may take up to errorGoAwayTimeout,
			// which is not this call's to spend: Close and deadlines
			// could not end it. The error is the session's at once,
			// so the call returns it, and the reader goroutine, woken
			// to take the token, tells the peer and ends the session
			// (see readHeld). cause, not err, is stored: taking err's
			// address would move it to the heap on every call.
			cause := err
			s.err.CompareAndSwap(nil, &cause)
			s.releaseReadToken(true)
			return false
		}
		s.fail(err)
	}
	woke := s.rt.delivered
	s.releaseReadToken(!gaveWay && s.othersBuffered(st))
	if woke {
		// It woke a Read or Write waiting for data or credit, which
		// now waits for a processor; this goroutine may not block
		// again for a long while (a bulk reader always finds data),
		// so it lets the woken one run first.
		runtime.Gosched()
	}
	return gaveWay
}

// errGaveWay is readHeld's answer to a Read or Write that, still waiting,
// gave way to a busy stream's Read or Write it fed.
var errGaveWay = errors.New("tcpchan: read token given way")

// readHeld reads and handles frames while holding the read token. A Read or
// Write (own != nil) returns nil once own can stop waiting: if nobody else
// waits, at once, keeping the frames beyond in the buffer for its next
// call; if others wait, after handling the frames already in the buffer,
// so that their frames do not wait behind its, but without reading the
// socket again; or errGaveWay when own, still waiting, gives way to a busy
// stream (see below). The reader goroutine returns nil after
// giving the token up. Either returns errInterrupted when a read of the
// connection was interrupted, or the session's cause on a connection or
// protocol error.
func (s *Session) readHeld(own *Stream) error {
	// done: own can stop waiting. A Read decided to wait and took the
	// token under its stream's lock, so nothing changed since; a Write's
	// session credit may have (a session WINDOW_UPDATE needs no stream
	// lock).
	if err := s.Err(); err != nil {
		// Nothing is read after the session's error: the reader
		// goroutine takes the token from a Read or Write that met a
		// protocol error to tell the peer (see readForStream).
		return err
	}
	done := own != nil && s.rt.holderWrite && own.ready(true)
	spent := s.recvSpent
	for {
		if !s.frameBuffered() {
			switch {
			case own == nil && s.rt.delivered && s.rt.raw != nil:
				// About to block, having served a Read or Write that
				// is likely to come back for more. It takes a turn
				// again at the latest maxReaderAbsence from now: with
				// the token free most of the time but always taken
				// back in time, nobody might read the socket for
				// others (a caller reads only for its own needs).
				s.releaseReadToken(false)
				return nil
			case own == nil:
			case done:
				// Never read the socket once done, not even without
				// blocking for others. A bulk Read beside a Read
				// waiting on a silent stream spent its time reading up
				// to four buffers ahead into its own stream's buffer,
				// for a frame that did not come, and ran at two thirds
				// of its rate (BenchmarkBulkBesideReading). Others'
				// frames still in the socket are the next holder's:
				// this caller's next call, or the reader goroutine
				// after readTokenWaitGrace. The cost: if this caller
				// does not come back, on an otherwise idle process
				// that grace's timer fires about a millisecond late
				// (the runtime's poller sleeps in whole milliseconds),
				// and a frame behind this stream's data waits as long.
				return nil
			}
		} else if done && s.rt.waiters.Load() == 0 {
			return nil
		}
		h, err := s.nextFrame()
		if err != nil {
			return err
		}
		if err := s.handleFrame(h); err != nil {
			return err
		}
		if own != nil && !done && (h.streamID == own.id || h.streamID == 0 || h.typ == frameGoAway) {
			done = own.ready(s.rt.holderWrite)
		}
		if own != nil && !done && s.rt.delivered && s.recvSpent-spent >= int64(s.br.Size()) {
			// A Read or Write still waiting that has read a read
			// buffer's worth of others' data (DATA received since it
			// took the token; a Read's own would have made it done)
			// and woke a Read or Write waiting gives way: the stream
			// it reads for is busy, and that stream's Read, back in a
			// moment, reads its data into its own buffer with no
			// hand-off, where this one would wake it for each read.
			// A Read that took the token while its stream was quiet
			// (an echo server's, its next message a millisecond
			// away) kept it, and a bulk stream beside echoes a
			// millisecond apart kept 0.63 to 0.75 of its rate with
			// the echoes quiet; giving way, 0.71 to 0.81
			// (BenchmarkPacedPingUnderBulk; in a slower phase of the
			// machine 0.58 to 0.68, and 0.60 to 0.76). Its own frame
			// or credit is read by the next holder, or by the reader
			// goroutine after readTokenWaitGrace (lengthened up to 16
			// times while holders keep coming back). A small message
			// passed on (a response, this call's own still pending)
			// is no reason: its Read may not be back for a while.
			return errGaveWay
		}
	}
}

// maxTurnFills bounds what the reader goroutine's turn reads, so that a
// busy connection cannot keep it from giving the token back: four buffers'
// worth (256 KiB by default).
const maxTurnFills = 4

// othersBuffered reports whether the read buffer holds the start of a frame
// for anything but st. A holder leaves only its own stream's frames for its
// next call; anything else (a SYN for Accept, a PING, another stream's
// data) deserves the reader goroutine at once, not after the grace.
// Every buffered header counts: a PING behind the stream's own data would
// otherwise wait until the application has read all of that. A run of more
// than maxOwnFramesWalked of the stream's own frames counts as work for
// the reader goroutine too: only tiny frames make such runs (a read buffer
// holds 63 frames of 1 KiB), and walking thousands of them after every
// small Read cost 10 to 20 times more than the Reads themselves (see
// BenchmarkTinyFramesSmallReads).
func (s *Session) othersBuffered(st *Stream) bool {
	b, _ := s.br.Peek(s.br.Buffered()) // buffered: does not read
	for walked := 0; len(b) >= headerSize; walked++ {
		if walked == maxOwnFramesWalked {
			return true
		}
		// A GOAWAY's ID is the last stream the peer accepted, which
		// may be st's: it is the session's frame all the same.
		if binary.BigEndian.Uint32(b[4:]) != st.id || frameType(b[0]) == frameGoAway {
			return true
		}
		n := headerSize
		if frameType(b[0]) == frameData {
			// A length past the buffer ends the walk; as an int it
			// could be negative on 32-bit platforms.
			n = int(min(uint64(n)+uint64(binary.BigEndian.Uint32(b[8:])), uint64(len(b))))
		}
		b = b[min(n, len(b)):]
	}
	return false
}

// maxOwnFramesWalked bounds the headers othersBuffered looks at.
const maxOwnFramesWalked = 64

// frameBuffered reports whether a whole frame is in the read buffer.
func (s *Session) frameBuffered() bool {
	if s.br.Buffered() < headerSize {
		return false
	}
	b, _ := s.br.Peek(headerSize) // buffered: does not read
	return frameType(b[0]) != frameData || uint64(s.br.Buffered()) >= headerSize+uint64(binary.BigEndian.Uint32(b[8:]))
}

// nextFrame returns the next frame's header once the whole frame is
// buffered. It consumes nothing, so an interrupted read loses nothing.
func (s *Session) nextFrame() (frameHeader, error) {
	b, err := s.br.Peek(headerSize)
	if err != nil {
		return frameHeader{}, s.readFailed(err, len(b) > 0)
	}
	h, err := decodeHeader(b, uint32(s.cfg.MaxFrameSize))
	if err != nil {
		return h, err
	}
	if h.typ == frameData && h.length > 0 {
		if _, err := s.br.Peek(headerSize + int(h.length)); err != nil {
			return h, s.readFailed(err, true)
		}
	}
	return h, nil
}

// readFailed turns a failed read of the connection into errInterrupted if a
// Read holding the token was interrupted, or else into the session's cause.
func (s *Session) readFailed(err error, midFrame bool) error {
	rt := &s.rt
	if rt.deadliner != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		rt.mu.Lock()
		intr := rt.interrupted
		if intr {
			rt.interrupted = false
			rt.deadliner.SetReadDeadline(time.Time{})
		}
		rt.mu.Unlock()
		if intr {
			return errInterrupted
		}
	}
	return s.readError(err, midFrame)
}

// handleFrame consumes a wholly buffered frame and applies it.
func (s *Session) handleFrame(h frameHeader) error {
	s.br.Discard(headerSize)
	switch h.typ {
	case frameData:
		return s.handleData(h)
	case frameWindowUpdate:
		return s.handleWindowUpdate(h)
	case framePing:
		return s.handlePing(h)
	case frameReset:
		return s.handleReset(h)
	case frameGoAway:
		return s.handleGoAway(h)
	}
	return nil
}

// readError turns a connection read error into the session's cause.
func (s *Session) readError(err error, midFrame bool) error {
	if e := s.Err(); e != nil {
		return e
	}
	switch {
	case s.writeShut.Load():
		// Shutdown half-closed and the peer closed its end in answer.
		return errSessionClosed
	case s.goAwayReceived() && (!midFrame || !errors.Is(err, io.EOF)):
		return s.afterGoAwayError("reading from", err)
	case errors.Is(err, io.EOF) && !midFrame:
		if s.rt.raw != nil {
			if rerr := s.rt.raw.resetErr(); rerr != nil {
				return fmt.Errorf("tcpchan: connection reset or timed out (a write saw the cause first): %w", rerr)
			}
		}
		return fmt.Errorf("tcpchan: connection closed by peer: %w", io.ErrUnexpectedEOF)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: connection closed in the middle of a frame: %w", ErrProtocol, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("tcpchan: reading from the connection: %w", err)
}

// afterGoAwayError is the cause for err, met op ("reading from", "writing
// to") the connection after the peer's GOAWAY. A peer that sent GOAWAY
// closes once its streams are done; if it closes (or the connection fails)
// before, they were cut off, which is no graceful end.
func (s *Session) afterGoAwayError(op string, err error) error {
	n := s.unfinishedStreams()
	switch {
	case errors.Is(err, io.EOF) && n > 0:
		return fmt.Errorf("tcpchan: the peer closed the connection after GOAWAY with %d streams open: %w", n, io.ErrUnexpectedEOF)
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%w: the peer closed the connection after GOAWAY", ErrGoAway)
	case n > 0:
		return fmt.Errorf("tcpchan: %s the connection after GOAWAY with %d streams open: %w", op, n, err)
	}
	return fmt.Errorf("%w: the peer closed the connection after GOAWAY: %w", ErrGoAway, err)
}

// readPreface reads and checks the peer's preface, failing at the first
// byte that cannot start one rather than waiting for all of it.
func (s *Session) readPreface() error {
	// One byte at a time up to the version, so that a wrong one fails at
	// once even if nothing follows it (the whole preface usually arrives
	// in the first read: the later Peeks read nothing).
	for n := 1; n <= prefaceSize; n++ {
		if n > len(magic)+1 {
			n = prefaceSize
		}
		b, err := s.br.Peek(n)
		if err != nil {
			if e := s.Err(); e != nil {
				return e
			}
			if s.writeShut.Load() {
				return errSessionClosed // closed here before the peer's preface came
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("%w: reading the preface: %w", ErrHandshake, err)
		}
		if n <= len(magic)+1 {
			if err := checkPrefaceStart(b); err != nil {
				return err
			}
		}
	}
	b, _ := s.br.Peek(prefaceSize)
	ps, err := decodePreface(b)
	if err != nil {
		return err
	}
	if s.hsTimer != nil {
		s.hsTimer.Stop()
	}
	s.br.Discard(prefaceSize)
	// Asked only now: a connection that learns its remote address from its
	// first bytes (the PROXY protocol) blocks RemoteAddr until they came.
	s.sameHost.Store(sameHost(s.conn))
	s.applyPeerSettings(ps)
	return nil
}

// applyPeerSettings replaces the values assumed until the preface arrived:
// streams opened meanwhile get the difference as extra credit. The session
// credit comes first: once peerKnown is closed, a Dialer judges the session
// by the peer's windows (crowdedLocked), and would find it crowded if the
// credit were still the one assumed.
func (s *Session) applyPeerSettings(ps settings) {
	s.sendFrameSize.Store(uint32(min(s.cfg.MaxFrameSize, int(ps.maxFrameSize))))
	s.addSendWindow(int64(ps.sessionWindow) - int64(assumedSettings.sessionWindow))
	s.smu.Lock()
	delta := int64(ps.streamWindow) - int64(s.peer.streamWindow)
	s.peer = ps
	close(s.peerKnown)
	for _, st := range s.streams {
		st.mu.Lock()
		st.sendCredit += delta
		s.scheduleLocked(st)
		st.mu.Unlock()
	}
	s.smu.Unlock()
}

// addSendWindow adds session credit and lets parked streams send again.
func (s *Session) addSendWindow(n int64) int64 {
	v := s.sendWindow.Add(n)
	s.wmu.Lock()
	woke := s.sched.unpark()
	s.wmu.Unlock()
	if woke {
		s.wakeWriter()
	}
	return v
}

func (s *Session) goAwayReceived() bool {
	s.smu.Lock()
	defer s.smu.Unlock()
	return s.goAwayRecv
}

// wasOpened reports whether stream id existed once, so that a late frame
// for a finished stream is told apart from one for a stream never opened.
// s.smu is held.
func (s *Session) wasOpenedLocked(id uint32) bool {
	if s.isPeerID(id) {
		return id <= s.lastPeerID
	}
	return id < s.nextID
}

// lookup returns the open stream id, or nil if it has finished; a stream
// that never existed is a protocol error.
func (s *Session) lookup(h frameHeader) (*Stream, error) {
	// Frames of one stream tend to come in runs: remember the last one
	// found, saving the table lock per frame. A stream removed meanwhile is
	// handled as when the table lookup races with its removal: its state
	// says it is finished.
	if st := s.lastFound.Load(); st != nil && st.id == h.streamID {
		return st, nil
	}
	s.smu.Lock()
	defer s.smu.Unlock()
	if st := s.streams[h.streamID]; st != nil {
		s.lastFound.Store(st)
		return st, nil
	}
	if s.wasOpenedLocked(h.streamID) {
		return nil, nil
	}
	return nil, protocolErrorf("%v frame for stream %d, which was never opened", h.typ, h.streamID)
}

// takeRunLocked delivers to st the plain DATA frames for it that follow in
// the read buffer, under the lock already held: a bulk transfer is runs of
// such frames, and taking the stream's lock once per run rather than once
// per KiB keeps the reader, the serial stage of every transfer, short. It
// stops at the first frame that needs more than delivery (another stream,
// flags, an empty or incomplete frame, one over a window); the main loop
// then handles that frame, errors included. st.mu is held and st is open.
func (s *Session) takeRunLocked(st *Stream) {
	for s.br.Buffered() >= headerSize {
		b, _ := s.br.Peek(headerSize)
		if frameType(b[0]) != frameData || b[1] != 0 || b[2] != 0 || b[3] != 0 ||
			binary.BigEndian.Uint32(b[4:]) != st.id {
			return
		}
		// Compared before the conversion: a length of 2^31 or more
		// is a negative int on 32-bit platforms.
		length := binary.BigEndian.Uint32(b[8:])
		if length == 0 || length > uint32(s.cfg.MaxFrameSize) {
			return
		}
		n := int(length)
		if s.br.Buffered() < headerSize+n ||
			int64(n) > st.recvAvail || s.recvSpent+int64(n) > s.recvCredit.Load() {
			return
		}
		if s.rt.holder.Load() == st && !s.rt.holderWrite && st.rgot == len(st.rwait) {
			return // the Read reading has its fill: leave the rest for its next
		}
		frame, _ := s.br.Peek(headerSize + n)
		s.spend(n)
		st.recvAvail -= int64(n)
		st.deliverLocked(frame[headerSize:])
		s.br.Discard(headerSize + n)
	}
}

// lockedStream returns the live stream a WINDOW_UPDATE or RST is for, with
// its lock held; or nil and the verdict on a frame for a stream that is
// finished (excused while it may have crossed the end) or already reset (a
// glitch).
func (s *Session) lockedStream(h frameHeader) (*Stream, error) {
	st, err := s.lookup(h)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, s.excuseLate(h)
	}
	st.mu.Lock()
	if st.has(stSynPending) {
		st.mu.Unlock()
		return nil, errBeforeSYN(h)
	}
	if st.has(stRemoved) {
		// Finished (the writer sent the last FIN) between the lookup and
		// the lock: a frame that crossed its end.
		st.mu.Unlock()
		return nil, s.excuseLate(h)
	}
	if st.has(stReset) {
		byPeer := st.has(stResetByPeer)
		st.mu.Unlock()
		return nil, s.resetFrame(byPeer, h)
	}
	return st, nil
}

// errBeforeSYN is the protocol error of frame h for a stream of this side
// whose SYN has not gone out: the peer cannot know the stream yet.
func errBeforeSYN(h frameHeader) error {
	return protocolErrorf("%v frame for stream %d, whose SYN this side has not sent", h.typ, h.streamID)
}

// resetFrame charges a frame h for a stream already reset: a glitch if the
// peer reset it; if this side did, the frame may have crossed its RST on
// the wire, and costs nothing here: the stream leaves the table as soon as
// the goroutine that reset it lets go of it, and frames for it after that
// draw on the allowance for finished streams.
func (s *Session) resetFrame(byPeer bool, h frameHeader) error {
	if byPeer {
		return s.glitch(glitchFinished, h)
	}
	return nil
}

// refusalIsGlitchLocked reports whether a refused stream is the peer's
// fault: only a stream past MaxIncomingStreams, which a correct peer learns
// from the preface and keeps to, can be. A full AcceptBacklog is not: the
// peer cannot see it, so an honest burst of streams that the application
// is slow to accept is refused without closing the session. (A flood of
// streams into a full backlog costs this side one RST per SYN, as a ping
// flood costs a PING ACK per ping; a peer that does not read them is
// stopped by MaxQueuedControlFrames.) Excused too: a peer at the limit only
// because of streams it reset and no longer counts, which stay counted here
// until the application closes them; and, for at most maxEarlyRefusals
// refusals, a peer that has not answered a ping, so may not have read the
// preface (its first streams go out without waiting for it). smu is held.
func (s *Session) refusalIsGlitchLocked(atLimit bool) bool {
	if !atLimit || s.incoming-int(s.heldResets.Load()) < s.cfg.MaxIncomingStreams {
		return false
	}
	if s.rttCount.Load() == 0 && s.earlyRefusals < maxEarlyRefusals {
		s.earlyRefusals++
		return false
	}
	return true
}

// maxEarlyRefusals bounds the refusals excused before the peer has answered
// a ping: a burst of streams opened before the peer read the preface, but
// not a flood from a peer that never answers.
const maxEarlyRefusals = 1024

// streamForData returns the stream a DATA frame is for, opening it on SYN.
// It returns nil for a finished or refused stream, whose data is dropped.
func (s *Session) streamForData(h frameHeader) (*Stream, error) {
	if h.flags&flagSYN == 0 {
		return s.lookup(h)
	}
	id := h.streamID
	s.smu.Lock()
	defer s.smu.Unlock()
	if !s.isPeerID(id) {
		return nil, protocolErrorf("SYN for stream %d, an ID of this side's parity", id)
	}
	if id > maxStreamID {
		return nil, protocolErrorf("SYN for stream %d, above the largest stream ID %d", id, maxStreamID)
	}
	if id <= s.lastPeerID {
		return nil, protocolErrorf("SYN for stream %d, not above the peer's last stream %d", id, s.lastPeerID)
	}
	s.lastPeerID = id
	atLimit := s.incoming >= s.cfg.MaxIncomingStreams
	closing := s.closing.Load() // Close began: nobody may accept it
	if s.goAwaySent || closing || atLimit || len(s.acceptCh) >= cap(s.acceptCh) {
		err := s.queueReply(frameHeader{typ: frameReset, streamID: id, length: uint32(codeRefused)})
		s.allowLate(lateFramesPerRefusal)
		if err == nil && !s.goAwaySent && !closing && s.refusalIsGlitchLocked(atLimit) {
			// Refusals after Shutdown or Close are this side's doing.
			err = s.glitch(glitchRefused, h)
		}
		return nil, err
	}
	st := newStream(s, id, int64(s.peer.streamWindow))
	s.streams[id] = st
	s.countStreamLocked()
	s.incoming++
	s.acceptCh <- st // never blocks: checked above, and only this goroutine sends
	return st, nil
}

func (s *Session) handleData(h frameHeader) error {
	n := int(h.length)
	var payload []byte
	if n > 0 {
		p, err := s.br.Peek(n)
		if err != nil {
			return s.readError(err, true)
		}
		payload = p
	}
	if over := s.spend(n); over > 0 {
		return fmt.Errorf("%w: DATA on stream %d overruns the session window by %d bytes", ErrProtocol, h.streamID, over)
	}
	st, err := s.streamForData(h)
	if err != nil {
		return err
	}
	if st == nil {
		s.br.Discard(n)
		s.discarded(n)
		if n == 0 && h.flags&flagSYN == 0 {
			if h.flags&flagFIN == 0 {
				return s.glitch(glitchEmptyData, h)
			}
			return s.excuseLate(h)
		}
		return nil
	}
	s.noteData(st.id)
	st.mu.Lock()
	if st.has(stSynPending) {
		st.mu.Unlock()
		return errBeforeSYN(h)
	}
	if int64(n) > st.recvAvail {
		avail := st.recvAvail
		st.mu.Unlock()
		return fmt.Errorf("%w: DATA on stream %d overruns the stream window: %d bytes, %d allowed", ErrProtocol, h.streamID, n, avail)
	}
	if st.has(stRecvFIN) && !st.has(stReset) {
		st.mu.Unlock()
		return protocolErrorf("DATA on stream %d after its FIN", h.streamID)
	}
	if n == 0 && (h.flags == 0 || st.has(stReset)) {
		// Nothing to deliver and nothing that changes the stream.
		byPeer := st.has(stResetByPeer)
		st.mu.Unlock()
		if h.flags == 0 {
			return s.glitch(glitchEmptyData, h)
		}
		return s.resetFrame(byPeer, h)
	}
	st.recvAvail -= int64(n)
	fin := h.flags&flagFIN != 0
	reset, update := false, false
	switch {
	case st.has(stReset):
		s.discarded(n)
	case st.has(stClosed):
		// Closed here: nobody will read it. More data from a peer that
		// has not finished gets an RST so it stops sending.
		s.discarded(n)
		reset = n > 0 && !fin && !st.has(stResetAfterFIN) && st.stopPeerLocked()
	case st.has(stReadClosed) && fin:
		s.discarded(n) // the peer sends no more: the stream needs no credit
	case st.has(stReadClosed):
		// Discarded as if read at once, so the peer never waits for
		// credit (CloseRead).
		st.consumedLocked(n)
		update, st.updatePending = st.updatePending, false
	case n > 0:
		st.deliverLocked(payload)
		if !fin {
			s.br.Discard(n)
			n = 0
			s.takeRunLocked(st)
		}
	}
	s.br.Discard(n)
	if fin && !st.has(stReset) {
		st.state |= stRecvFIN
		st.releaseGrowthLocked()
		st.rcond.Broadcast()
	}
	done := st.removableLocked()
	st.mu.Unlock()
	if done {
		s.removeStream(st)
	}
	if reset {
		return s.queueReply(frameHeader{typ: frameReset, streamID: st.id, length: uint32(codeCancel)})
	}
	if update {
		s.wakeWriter() // consumedLocked queued a WINDOW_UPDATE for a Read to send
	}
	return nil
}

// handleWindowUpdate adds credit. A correct peer credits data this side
// sent, so updates beyond one per bytesPerUpdate sent are glitches, as is
// one for a stream reset, or one for a finished stream beyond the few that
// may cross its end.
func (s *Session) handleWindowUpdate(h frameHeader) error {
	inc := int64(h.length)
	if h.streamID == 0 {
		v := s.addSendWindow(inc)
		if v > maxWindow {
			return protocolErrorf("session WINDOW_UPDATE of %d overflows the window to %d", inc, v)
		}
		s.credited += inc
		s.updates++
		if sent := int64(s.peer.sessionWindow) + s.credited - v; s.updates > sent/bytesPerUpdate+1 {
			return s.glitch(glitchIdleUpdate, h)
		}
		return nil
	}
	st, err := s.lockedStream(h)
	if st == nil {
		return err
	}
	st.sendCredit += inc
	if st.sendCredit > maxWindow {
		credit := st.sendCredit
		st.mu.Unlock()
		return protocolErrorf("WINDOW_UPDATE of %d on stream %d overflows the window to %d", inc, h.streamID, credit)
	}
	st.credited += inc
	st.updates++
	idle := st.updates > s.sentLocked(st)/bytesPerUpdate+1
	switch {
	case s.rt.holder.Load() == st && s.rt.holderWrite:
		// This is its Write, reading; it writes next. Any other
		// time (its Write gave the token back, or its Read holds it)
		// the writer goroutine must be woken as for any stream.
		s.enqueueLocked(st)
	case st.has(stCreditWait):
		st.uncountLocked(stCreditWait)
		s.rt.delivered = true
		fallthrough
	default:
		s.scheduleLocked(st)
	}
	st.mu.Unlock()
	if idle {
		return s.glitch(glitchIdleUpdate, h)
	}
	return nil
}

func (s *Session) handlePing(h frameHeader) error {
	if h.flags&flagACK != 0 {
		if !s.pingAcked(h.length) {
			return s.glitch(glitchPingAck, h)
		}
		return nil
	}
	return s.queueReply(frameHeader{typ: framePing, flags: flagACK, length: h.length})
}

// handleReset aborts a stream. A correct peer resets a stream it opened
// only to stop data this side sent, so resetting one this side sent no
// data on (before the peer's FIN) is a glitch (the "rapid reset" of HTTP/2, CVE-2023-44487), as is
// an RST for a stream already reset, or one for a finished stream beyond
// the few that may cross its end. A stream the peer opened and reset stays
// counted against MaxIncomingStreams until the application closes it (see
// Stream.removableLocked).
func (s *Session) handleReset(h frameHeader) error {
	st, err := s.lockedStream(h)
	if st == nil {
		return err
	}
	// Not after the peer's FIN: the stream came whole, as a stream the
	// peer closes without waiting for the answer does (see maxOrphans),
	// and the application gets it as it would without the RST (see
	// Session.acceptStream): it cost the peer a whole request.
	rapid := s.isPeerID(st.id) && s.sentLocked(st) == 0 && !st.has(stRecvFIN)
	flags := stResetByPeer
	if errCode(h.length) == codeRefused {
		flags |= stRefused
	}
	st.resetLocked(flags)
	done := st.removableLocked()
	held := !done && s.isPeerID(st.id)
	if held {
		st.state |= stHeldReset
		s.heldResets.Add(1) // with the flag, which removeStream reads
	}
	st.mu.Unlock()
	if done {
		s.removeStream(st)
	}
	if rapid {
		return s.glitch(glitchRapidReset, h)
	}
	return nil
}

// handleGoAway stops new streams; streams this side opened above the last ID
// the peer accepted were never processed, so they fail as refused.
// A GOAWAY after the first is a glitch, and the streams are scanned again
// only if it lowers the last stream ID.
func (s *Session) handleGoAway(h frameHeader) error {
	s.smu.Lock()
	repeat := s.goAwayRecv
	var refused []*Stream
	if !repeat {
		close(s.goingAway)
	}
	if !repeat || h.streamID < s.goAwayID {
		// This side's streams above the new ID are refused: those up to
		// the highest it opened, and on a repeat up to the previous ID
		// (the ones above it are gone already).
		hi := int64(s.nextID) - 2
		if prev := int64(s.goAwayID); repeat && prev < hi {
			hi = prev - (hi-prev)%2 // to this side's parity
		}
		s.goAwayRecv = true
		s.goAwayID = h.streamID
		refused = s.streamsAboveLocked(int64(h.streamID), hi)
	}
	s.smu.Unlock()
	for _, st := range refused {
		st.mu.Lock()
		if !st.has(stReset) {
			st.resetLocked(stResetByPeer | stRefused)
		}
		st.mu.Unlock()
		s.removeStream(st)
	}
	if code := errCode(h.length); code != codeNoError {
		return fmt.Errorf("%w: the peer is closing the session: %v", ErrGoAway, code)
	}
	if repeat {
		return s.glitch(glitchGoAway, h)
	}
	return nil
}

// streamsAboveLocked returns this side's streams whose IDs lie above lo and
// at most hi. It looks up each ID of this side's parity in that range, or
// walks the table if that is shorter, so that a peer lowering GOAWAY's ID
// repeatedly (each a glitch) costs work in proportion to the IDs it
// covers, not the table's size each time. smu is held.
func (s *Session) streamsAboveLocked(lo, hi int64) []*Stream {
	if hi <= lo {
		return nil
	}
	var found []*Stream
	if (hi-lo)/2 < int64(len(s.streams)) {
		// hi has this side's parity (the caller's part): the IDs
		// between are the peer's.
		for id := hi; id > lo; id -= 2 {
			if st := s.streams[uint32(id)]; st != nil {
				found = append(found, st)
			}
		}
		return found
	}
	for id, st := range s.streams {
		if !s.isPeerID(id) && int64(id) > lo && int64(id) <= hi {
			found = append(found, st)
		}
	}
	return found
}

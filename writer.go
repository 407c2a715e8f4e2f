package tcpchan

import (
	"errors"
	"fmt"
	"io"
	"time"
)

// The connection has one writer at a time: whoever holds the write token.
// Usually that is the session's writer goroutine, but a goroutine calling
// Stream.Write, or a Read that owes the peer a window update, takes the
// token when it is free and writes the scheduler's next batches itself,
// with a non-blocking write, saving the hand-off to the writer goroutine
// and back (on loopback that hand-off costs as much as the write). The
// batch is still filled by the round-robin scheduler, so a goroutine writing
// directly carries other streams' frames as fairly as the writer goroutine
// would. (A Write that finds the token free and no other stream queued
// frames its first batch itself, under its own stream's lock: see
// writeAloneLocked.) When the socket buffer is full, the direct writer
// leaves the rest of its batch to the writer goroutine, which alone blocks
// in conn.Write, so a Write never blocks in a system call past its deadline
// or a Close.

// connWriter is the state of the write side. Fields are guarded by
// Session.wmu unless noted.
type connWriter struct {
	held    bool // the token is taken
	waiting bool // the writer goroutine wants the token: wake it on release

	// Owned by the token holder.
	batch   []byte // buffer the scheduler fills
	pending []byte // bytes to write before anything else: the preface, or what a direct write left

	raw rawWriter // non-blocking writes, or nil: no direct writes
}

// startWriter starts the writer goroutine holding the token, so that batch
// (the preface) is the first thing on the wire.
func (s *Session) startWriter(batch []byte) {
	s.w.held = true
	s.w.batch = batch[:0]
	s.w.pending = batch
	s.w.raw = newRawWriter(s.conn, s.progressed)
	go s.writeLoop()
}

// acquireToken takes the write token if it is free. The writer goroutine
// passes writer=true so that it is woken when the holder releases it.
func (s *Session) acquireToken(writer bool) bool {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.w.held {
		if writer {
			s.w.waiting = true
		}
		return false
	}
	s.w.held = true
	return true
}

// releaseToken gives the token back, waking the writer goroutine if it asked
// for it or if work is left that nobody else will do.
func (s *Session) releaseToken() {
	s.wmu.Lock()
	wake := s.releaseTokenLocked()
	s.wmu.Unlock()
	if wake {
		s.wakeWriter()
	}
}

// releaseTokenLocked is releaseToken under wmu, reporting whether to wake
// the writer goroutine (after unlocking).
func (s *Session) releaseTokenLocked() bool {
	s.w.held = false
	// Streams still queued after the session's error wait for nothing:
	// no DATA is framed then (see fillBatch), and waking the writer for
	// them would spin it until the session is closed.
	wake := s.w.waiting || len(s.sched.ctrl) > 0 || len(s.w.pending) > 0 ||
		s.sched.head != nil && s.Err() == nil
	s.w.waiting = false
	return wake
}

// writeDirect lets the calling goroutine write queued frames itself if the
// token is free, until the Write of own is done or stuck, nothing is ready,
// or the socket buffer is full. With a nil own it writes control frames
// only (a Read sending its window update should not carry other streams'
// bulk data). The caller holds no lock.
func (s *Session) writeDirect(own *Stream) {
	if s.w.raw == nil || !s.acquireToken(false) {
		return
	}
	s.writeHeldBatches(own)
	s.releaseToken()
}

// writeHeldBatches is writeDirect's loop, for a caller that holds the token
// and no lock.
func (s *Session) writeHeldBatches(own *Stream) {
	if len(s.w.pending) > 0 {
		return // the writer goroutine is waiting for the socket
	}
	for s.Err() == nil {
		var b []byte
		if own == nil {
			b = s.fillControl(s.w.batch[:0])
		} else {
			b = s.fillBatch(s.w.batch[:0])
		}
		s.w.batch = b
		if len(b) == 0 || !s.writeHeld(b) {
			return
		}
		if own == nil || own.writtenOrStuck() {
			return
		}
	}
}

// writeHeld writes b without blocking, for the token's holder, and reports
// whether all of it went out. What the socket buffer did not take is left
// in pending for the writer goroutine; a write error ends the session.
func (s *Session) writeHeld(b []byte) bool {
	if s.writeShut.Load() {
		return false // after Shutdown's half-close the peer reads nothing more
	}
	n, err := s.w.raw.tryWrite(b)
	if err != nil {
		if err := s.writeError(err); err != nil {
			s.fail(err)
		}
		return false
	}
	if n < len(b) {
		s.w.pending = b[n:]
		return false
	}
	return true
}

// writeAloneLocked is Write's fast path. When the token is free and no
// other stream is queued or parked (control frames may be: they go first in
// the batch), the Write frames its own data under the stream lock it
// already holds, without passing through the scheduler's ring: 4 lock pairs
// per small Write, counting Write's own, instead of 10, most of a small
// Write's own cost. It writes one batch that way; if more is ready it joins
// the ring and goes on as writeDirect does, so streams that queue meanwhile
// get their turns. It reports false, having done nothing, when the fast
// path is closed; the caller then takes the general one. st.mu is held, and
// released around system calls.
func (s *Session) writeAloneLocked(st *Stream) bool {
	if !st.readyLocked() {
		return false
	}
	s.wmu.Lock()
	// The session's error is looked at under wmu: failTellingPeer stores
	// it before it queues its GOAWAY under wmu, so a GOAWAY that
	// appendControlLocked takes below is seen here, and no DATA follows it.
	if s.w.held || st.queued || s.sched.head != nil || s.sched.parkedHead != nil || len(s.w.pending) > 0 || s.Err() != nil {
		s.wmu.Unlock()
		return false
	}
	s.w.held = true
	b := s.appendControlLocked(s.w.batch[:0])
	s.wmu.Unlock()

	// As in fillBatch, the holder pays for the batch's session credit once.
	start := s.sendWindow.Load()
	avail := start
	// No FIN can go out here (CloseWrite marks the stream write-closed, and
	// this Write began after checking that), so the stream is not done.
	b, outcome, _ := st.emitRunLocked(b, int(s.sendFrameSize.Load()), &avail, true)
	s.sendWindow.Add(avail - start)
	s.w.batch = b
	st.mu.Unlock()
	more := len(b) > 0 && s.writeHeld(b) && outcome == emitMore
	st.mu.Lock()
	more = more && !(st.dl != nil && st.dl.write.expired)
	s.wmu.Lock()
	// Parked only if no credit came meanwhile; a session WINDOW_UPDATE
	// adds it before taking wmu to unpark.
	s.requeueLocked(st, outcome, s.sendWindow.Load() > 0)
	if more {
		s.wmu.Unlock()
		st.mu.Unlock()
		s.writeHeldBatches(st)
		s.releaseToken()
		st.mu.Lock()
		return true
	}
	wake := s.releaseTokenLocked()
	s.wmu.Unlock()
	if wake {
		s.wakeWriter()
	}
	return true
}

// writeLoop is the writer goroutine. It holds the token at start, writes
// the preface, and afterwards takes the token whenever there is work and
// nobody else writes it.
func (s *Session) writeLoop() {
	defer close(s.writerDone)
	if s.wTimer != nil {
		defer s.wTimer.Stop()
	}
	var flushed []chan struct{}
	held := true
	for {
		if held {
			if err := s.writeQueued(); err != nil {
				s.fail(err)
				return
			}
			// Everything queued before these flush requests is written.
			for _, ch := range flushed {
				close(ch)
			}
			flushed = flushed[:0]
			s.releaseToken()
		}
		select {
		case <-s.wake:
		case ch := <-s.flushReq:
			flushed = append(flushed, ch)
		case <-s.dying:
			return
		}
		held = s.acquireToken(true)
	}
}

// writeQueued writes, holding the token, what is pending (the preface, or
// what a direct write left) and then batches until the scheduler has
// nothing ready.
func (s *Session) writeQueued() error {
	b := s.w.pending
	if len(b) == 0 {
		b = s.fillBatch(s.w.batch[:0])
		s.w.batch = b
	}
	for len(b) > 0 {
		if err := s.writeBatch(b); err != nil {
			return err
		}
		s.w.pending = nil
		b = s.fillBatch(s.w.batch[:0])
		s.w.batch = b
	}
	return nil
}

// writeBatch writes b, blocking; if the write makes no progress for
// WriteTimeout, the session fails with ErrWriteTimeout. A peer that reads
// slowly but steadily is not stuck.
func (s *Session) writeBatch(b []byte) error {
	if s.writeShut.Load() {
		return nil // after Shutdown's half-close the peer reads nothing more
	}
	if s.wTimer == nil {
		_, err := s.conn.Write(b)
		return s.writeError(err)
	}
	s.progressed()
	s.wQueued.Store(-1) // unknown: the timer looks, not every batch (a system call)
	s.wBusy.Store(true)
	s.wTimer.Reset(s.writeCheck(s.cfg.WriteTimeout))
	var err error
	if s.w.raw != nil {
		// Each system call that writes some is progress.
		_, err = s.w.raw.writeAll(b)
	} else {
		// A write of any connection returns only when all of it went
		// out: progress is seen slice by slice.
		for len(b) > 0 && err == nil {
			k := min(len(b), writeSlice)
			_, err = s.conn.Write(b[:k])
			b = b[k:]
			s.progressed()
		}
	}
	s.wBusy.Store(false)
	s.wTimer.Stop()
	return s.writeError(err)
}

// writeSlice is how much of a batch the writer goroutine writes at a time
// to a connection that is not a socket (TLS, a pipe), to see its progress:
// one TLS record.
const writeSlice = 16 << 10

// progressed records that the blocked write of the writer goroutine made
// progress, for WriteTimeout.
func (s *Session) progressed() { s.wProgress.Store(s.clock()) }

// writeTimerFired is WriteTimeout's timer: it fails the session if the
// write of the writer goroutine has made no progress for WriteTimeout, and
// otherwise looks again WriteTimeout after the last progress (or sooner:
// see writeCheck). A send queue that shrank since the last look is
// progress too.
func (s *Session) writeTimerFired() {
	if !s.wBusy.Load() {
		return // the write ended meanwhile
	}
	if s.wQueue != nil {
		q := int64(s.wQueue())
		if q < s.wQueued.Swap(q) {
			s.progressed()
		}
	}
	idle := time.Duration(s.clock() - s.wProgress.Load())
	if idle < s.cfg.WriteTimeout {
		s.wTimer.Reset(s.writeCheck(s.cfg.WriteTimeout - idle))
		return
	}
	s.fail(ErrWriteTimeout)
}

// writeCheck is when the write timer should look next, d being the time
// left: with a send queue to watch, every quarter of WriteTimeout, so that
// progress seen there dates from at most that long ago.
func (s *Session) writeCheck(d time.Duration) time.Duration {
	if s.wQueue != nil {
		return min(d, s.cfg.WriteTimeout/4)
	}
	return d
}

// writeError turns a write error into the session's cause, or nil when the
// write side was shut down on purpose (or err is nil).
func (s *Session) writeError(err error) error {
	switch {
	case err == nil, s.writeShut.Load():
		return nil
	case !s.knowsPeer():
		return fmt.Errorf("%w: writing the preface: %w", ErrHandshake, err)
	case errors.Is(err, io.ErrClosedPipe):
		// The peer closed a connection that cannot half-close (net.Pipe):
		// the reader sees EOF for the same close, and the cause is the
		// same whichever of the two sees it first.
		return s.readError(io.EOF, false)
	case s.goAwayReceived():
		return s.afterGoAwayError("writing to", err)
	}
	return fmt.Errorf("tcpchan: writing to the connection: %w", err)
}

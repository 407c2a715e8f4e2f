package tcpchan

// maxBatch is how many bytes the writer gathers before one conn.Write. It
// bounds how long a stream that just became ready waits behind others.
const maxBatch = 64 << 10

// writeScheduler decides what the session's writer sends next. Control
// frames go first, in the order queued, so pings, resets and window updates
// jump the data queue. Then the streams with something to send take turns,
// one frame each, round robin, as in x/net/http2's round-robin scheduler.
// Streams are linked through Stream.schedNext, so scheduling never
// allocates. All fields are guarded by Session.wmu.
type writeScheduler struct {
	ctrl []frameHeader
	// sessionUpdateAt is where in ctrl the last session WINDOW_UPDATE
	// went (see queueUpdateLocked).
	sessionUpdateAt int32
	// sealed: the GOAWAY telling the peer of its protocol error went into
	// a batch; no control frame follows it.
	sealed bool
	// answers counts the frames in ctrl that answer the peer (see
	// queueReply): only they are bounded by MaxQueuedControlFrames.
	answers int

	head, tail *Stream // streams ready to send

	// parked streams have data and stream credit but wait for session
	// credit; a session WINDOW_UPDATE moves them back to the ring.
	parkedHead, parkedTail *Stream
}

func (q *writeScheduler) push(st *Stream) {
	st.queued = true
	st.schedNext = nil
	if q.tail == nil {
		q.head = st
	} else {
		q.tail.schedNext = st
	}
	q.tail = st
}

func (q *writeScheduler) pop() *Stream {
	st := q.head
	if st == nil {
		return nil
	}
	q.head = st.schedNext
	if q.head == nil {
		q.tail = nil
	}
	st.schedNext = nil
	st.queued = false
	return st
}

func (q *writeScheduler) park(st *Stream) {
	st.queued = true
	st.parked = true
	st.schedNext = nil
	if q.parkedTail == nil {
		q.parkedHead = st
	} else {
		q.parkedTail.schedNext = st
	}
	q.parkedTail = st
}

// unlinkParked takes st, parked, out of the parked list.
func (q *writeScheduler) unlinkParked(st *Stream) {
	var prev *Stream
	for cur := q.parkedHead; cur != nil; prev, cur = cur, cur.schedNext {
		if cur != st {
			continue
		}
		if prev == nil {
			q.parkedHead = st.schedNext
		} else {
			prev.schedNext = st.schedNext
		}
		if q.parkedTail == st {
			q.parkedTail = prev
		}
		st.schedNext, st.queued, st.parked = nil, false, false
		return
	}
}

// unpark moves every parked stream to the end of the ring, keeping their
// order. It reports whether there was any.
func (q *writeScheduler) unpark() bool {
	if q.parkedHead == nil {
		return false
	}
	for st := q.parkedHead; st != nil; st = st.schedNext {
		st.parked = false
	}
	if q.tail == nil {
		q.head = q.parkedHead
	} else {
		q.tail.schedNext = q.parkedHead
	}
	q.tail = q.parkedTail
	q.parkedHead, q.parkedTail = nil, nil
	return true
}

// readyLocked reports whether the stream has a frame to send now (ignoring
// the session window, which the writer checks). st.mu is held.
func (st *Stream) readyLocked() bool {
	if st.has(stReset | stSentFIN) {
		return false
	}
	if st.has(stSynPending) {
		return true
	}
	if data := st.pendingLocked(); len(data) > 0 {
		return st.sendCredit > 0
	}
	return st.has(stFinPending)
}

// pendingLocked is the data a Write has offered and the writer has not yet
// framed; after Close or reset the rest of that Write is abandoned, as it
// is once Session.Close begins: the connection is half-closed after the
// flush, and what a Write blocked for credit would frame after that would
// go nowhere while the Write reported it sent.
func (st *Stream) pendingLocked() []byte {
	if st.has(stClosed|stReset) || st.sess.closing.Load() {
		return nil
	}
	return st.wbuf
}

// scheduleLocked puts st in the writer's ring if it has something to send,
// and wakes the writer goroutine. st.mu is held; the lock order is
// Stream.mu before Session.wmu.
func (s *Session) scheduleLocked(st *Stream) {
	if s.enqueueLocked(st) {
		s.wakeWriter()
	}
}

// enqueueLocked puts st in the writer's ring if it has something to send and
// is not there yet, and reports whether it did; the caller wakes a writer.
func (s *Session) enqueueLocked(st *Stream) bool {
	if !st.readyLocked() {
		return false
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if !st.queued {
		s.sched.push(st)
		return true
	}
	if st.parked && len(st.pendingLocked()) == 0 {
		// Parked for session credit, but all it owes now is a SYN or FIN,
		// which need none (Close or CloseWrite after a Write gave up).
		// Back to the ring with the others: the writer parks again those
		// that still lack credit.
		s.sched.unpark()
		return true
	}
	return false
}

// emit outcomes.
const (
	emitIdle   = iota // nothing more to send until something changes
	emitMore          // more frames ready: stay in the ring
	emitParked        // data and stream credit, but no session credit
)

// emitLocked appends the stream's next frame to b: at most frameSize bytes
// of pending data, within the stream's credit and the session's (*sessAvail,
// which it decrements), with SYN on
// the first frame and FIN on the last. st.mu is held. done reports that the
// stream is now finished and can be removed from the session.
func (st *Stream) emitLocked(b []byte, frameSize int, sessAvail *int64) (out []byte, outcome int, done bool) {
	if st.has(stReset | stSentFIN) {
		return b, emitIdle, false
	}
	data := st.pendingLocked()
	n := int64(min(len(data), frameSize))
	n = min(n, st.sendCredit, *sessAvail)
	var flags uint8
	if st.has(stSynPending) {
		flags |= flagSYN
	}
	if st.has(stFinPending) && n == int64(len(data)) {
		flags |= flagFIN
	}
	if n <= 0 && flags == 0 {
		if len(data) > 0 && st.sendCredit > 0 {
			return b, emitParked, false
		}
		return b, emitIdle, false
	}
	n = max(n, 0)
	b = appendHeader(b, frameHeader{typ: frameData, flags: flags, streamID: st.id, length: uint32(n)})
	if n > 0 {
		b = append(b, data[:n]...)
		st.wbuf = st.wbuf[n:]
		st.sendCredit -= n
		*sessAvail -= n
		if len(st.wbuf) == 0 {
			st.wcond.Broadcast()
		}
	}
	st.state &^= stSynPending
	if flags&flagFIN != 0 {
		st.state = st.state&^stFinPending | stSentFIN
		if st.has(stResetAfterFIN) {
			// First in the next batch, with the control frames queued
			// before it: after the FIN, and after any WINDOW_UPDATE for
			// the stream, which the peer would count as a glitch if it
			// came after the RST.
			st.sess.queueControl(frameHeader{typ: frameReset, streamID: st.id, length: uint32(codeCancel)})
			st.resetLocked(0)
		}
		done = st.removableLocked()
	}
	if st.readyLocked() {
		// Out of session credit after taking some: back to the ring's
		// tail rather than parked at once, so that it parks behind the
		// streams still waiting for their turn in this round.
		if *sessAvail <= 0 && len(st.pendingLocked()) > 0 && n == 0 {
			return b, emitParked, done
		}
		return b, emitMore, done
	}
	return b, emitIdle, done
}

// emitRunLocked appends the stream's next frame to b, as emitLocked does,
// and while alone (no other stream waits) its next ones too, until it has
// nothing more ready or b holds maxBatch bytes, sparing the round trip
// through the ring; a stream that becomes ready meanwhile gets its turn in
// the next batch. st.mu is held.
func (st *Stream) emitRunLocked(b []byte, frameSize int, sessAvail *int64, alone bool) (out []byte, outcome int, done bool) {
	for {
		var d bool
		b, outcome, d = st.emitLocked(b, frameSize, sessAvail)
		done = done || d
		if outcome != emitMore || !alone || len(b) >= maxBatch {
			return b, outcome, done
		}
	}
}

// requeueLocked puts st back in the ring after its frames were emitted with
// the given outcome, unless it is idle or already queued: parked if it
// waits for session credit and none is left (credit false), else at the
// tail. wmu is held, and credit was read under it.
func (s *Session) requeueLocked(st *Stream, outcome int, credit bool) {
	switch {
	case outcome == emitIdle || st.queued:
	case outcome == emitParked && !credit:
		s.sched.park(st)
	default:
		s.sched.push(st)
	}
}

// fillControl appends to b every control frame queued.
func (s *Session) fillControl(b []byte) []byte {
	s.wmu.Lock()
	b = s.appendControlLocked(b)
	s.wmu.Unlock()
	return b
}

// appendControlLocked moves the queued control frames to b. The GOAWAY
// with PROTOCOL_ERROR that failTellingPeer queues is the last frame sent:
// what was queued after it (a Ping, a Read's WINDOW_UPDATE, an RST that a
// FIN framed before the error queued) is dropped, then and later. wmu is
// held.
func (s *Session) appendControlLocked(b []byte) []byte {
	if !s.sched.sealed {
		for _, h := range s.sched.ctrl {
			b = appendHeader(b, h)
			if h.typ == frameGoAway && errCode(h.length) == codeProtocol {
				s.sched.sealed = true
				break
			}
		}
	}
	s.sched.ctrl = s.sched.ctrl[:0]
	s.sched.answers = 0
	return b
}

// queueUpdateLocked queues a WINDOW_UPDATE of inc for stream id (0: the
// session), or adds inc to one for it still queued, as HTTP/2
// implementations do: credit counts as given when queued, and a peer may
// use it without reading the update, so one update per batch consumed
// would let a peer that never reads grow the queue without end. *at is
// where the last update for id went; it is stale once the queue was
// written out, which the check of the frame found there tells (a frame
// for id found there is one still queued, wherever it came from). wmu is
// held.
func (s *Session) queueUpdateLocked(at *int32, id uint32, inc int64) {
	q := &s.sched
	if i := int(*at); i < len(q.ctrl) {
		if h := &q.ctrl[i]; h.typ == frameWindowUpdate && h.streamID == id && int64(h.length)+inc <= maxWindow {
			h.length += uint32(inc)
			return
		}
	}
	*at = int32(len(q.ctrl))
	q.ctrl = append(q.ctrl, frameHeader{typ: frameWindowUpdate, streamID: id, length: uint32(inc)})
}

// fillBatch appends to b every control frame queued, then stream frames
// round robin until the batch holds maxBatch bytes or nothing is ready. Only
// the holder of the write token calls it.
func (s *Session) fillBatch(b []byte) []byte {
	b = s.fillControl(b)
	if s.Err() != nil {
		return b // only the GOAWAY telling the peer why (see failTellingPeer)
	}

	frameSize := int(s.sendFrameSize.Load())
	// Only the token holder spends session credit, so it reads the credit
	// once and pays for the whole batch at the end: one atomic operation
	// per batch instead of one per frame, on a word the reader also writes.
	start := s.sendWindow.Load()
	avail := start
	defer func() { s.sendWindow.Add(avail - start) }()
	for len(b) < maxBatch {
		s.wmu.Lock()
		st := s.sched.pop()
		alone := s.sched.head == nil
		s.wmu.Unlock()
		if st == nil {
			break
		}
		st.mu.Lock()
		var outcome int
		var done bool
		b, outcome, done = st.emitRunLocked(b, frameSize, &avail, alone)
		if outcome != emitIdle {
			s.wmu.Lock()
			if outcome == emitParked && !st.queued {
				// Credit that arrived since the batch began joins it.
				// Read under wmu: a session WINDOW_UPDATE adds credit
				// before it takes wmu to unpark, so none is missed.
				if now := s.sendWindow.Load(); now > start {
					avail += now - start
					start = now
				}
			}
			s.requeueLocked(st, outcome, avail > 0)
			s.wmu.Unlock()
		}
		st.mu.Unlock()
		if done {
			s.removeStream(st)
		}
	}
	return b
}

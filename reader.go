package tcpchan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The reader goroutine: it reads the peer's preface, then frame after
// frame, and applies each to the session and its streams.

// connReader records when data last arrived, once per read from the
// connection rather than once per frame, for keepalive.
type connReader struct{ s *Session }

func (r connReader) Read(p []byte) (int, error) {
	n, err := r.s.conn.Read(p)
	if n > 0 {
		r.s.lastRecv.Store(r.s.clock())
	}
	return n, err
}

// readLoop is the reader goroutine. It never blocks on a stream or on the
// application: flow control guarantees buffer space, and a full accept
// backlog refuses streams instead of waiting.
func (s *Session) readLoop() {
	if s.hsTimer != nil {
		defer s.hsTimer.Stop()
	}
	err := s.readFrames()
	s.fail(err)
	<-s.writerDone
	close(s.done)
}

func (s *Session) readFrames() error {
	if err := s.readPreface(); err != nil {
		return err
	}
	maxPayload := uint32(s.cfg.MaxFrameSize)
	for {
		b, err := s.br.Peek(headerSize)
		if err != nil {
			return s.readError(err, len(b) > 0)
		}
		h, err := decodeHeader(b, maxPayload)
		if err != nil {
			return err
		}
		s.br.Discard(headerSize)
		switch h.typ {
		case frameData:
			err = s.handleData(h)
		case frameWindowUpdate:
			err = s.handleWindowUpdate(h)
		case framePing:
			err = s.handlePing(h)
		case frameReset:
			err = s.handleReset(h)
		case frameGoAway:
			err = s.handleGoAway(h)
		}
		if err != nil {
			return err
		}
	}
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
		// A peer that sent GOAWAY closes once its streams are done.
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: the peer closed the connection after GOAWAY", ErrGoAway)
		}
		return fmt.Errorf("%w: the peer closed the connection after GOAWAY: %w", ErrGoAway, err)
	case errors.Is(err, io.EOF) && !midFrame:
		return fmt.Errorf("tcpchan: connection closed by peer: %w", io.ErrUnexpectedEOF)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: connection closed in the middle of a frame: %w", ErrProtocol, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("tcpchan: reading from the connection: %w", err)
}

// readPreface reads and checks the peer's preface, failing at the first
// byte that cannot start one rather than waiting for all of it.
func (s *Session) readPreface() error {
	for _, n := range []int{1, len(magic), prefaceSize} {
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
		if n < prefaceSize && string(b) != string(magic[:n]) {
			return fmt.Errorf("%w: peer did not send the tcpchan preface (got %q)", ErrHandshake, b)
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
	s.handshakeDone.Store(true)
	s.applyPeerSettings(ps)
	return nil
}

// applyPeerSettings replaces the values assumed until the preface arrived:
// streams opened meanwhile get the difference as extra credit.
func (s *Session) applyPeerSettings(ps settings) {
	s.smu.Lock()
	delta := int64(ps.streamWindow) - int64(s.peer.streamWindow)
	s.peer = ps
	for _, st := range s.streams {
		st.mu.Lock()
		st.sendCredit += delta
		s.scheduleLocked(st)
		st.mu.Unlock()
	}
	s.smu.Unlock()
	s.sendFrameSize.Store(uint32(min(s.cfg.MaxFrameSize, int(ps.maxFrameSize))))
	s.addSendWindow(int64(ps.sessionWindow) - int64(assumedSettings.sessionWindow))
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
		n := int(binary.BigEndian.Uint32(b[8:]))
		if n == 0 || n > s.cfg.MaxFrameSize || s.br.Buffered() < headerSize+n ||
			int64(n) > st.recvAvail || int64(n) > s.recvWindow.Load() {
			return
		}
		frame, _ := s.br.Peek(headerSize + n)
		s.recvWindow.Add(-int64(n)) // only this goroutine spends it
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
	if st.has(stReset) {
		st.mu.Unlock()
		return nil, s.glitch(glitchFinished, h)
	}
	return st, nil
}

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
	if id <= s.lastPeerID {
		return nil, protocolErrorf("SYN for stream %d, not above the peer's last stream %d", id, s.lastPeerID)
	}
	s.lastPeerID = id
	if s.goAwaySent || s.incoming >= s.cfg.MaxIncomingStreams || len(s.acceptCh) >= cap(s.acceptCh) {
		err := s.queueReply(frameHeader{typ: frameReset, streamID: id, length: uint32(codeRefused)})
		s.allowLate()
		if err == nil && !s.goAwaySent {
			// Refusals after Shutdown are this side's doing.
			err = s.glitch(glitchRefused, h)
		}
		return nil, err
	}
	st := newStream(s, id, int64(s.peer.streamWindow))
	s.streams[id] = st
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
	if left := s.recvWindow.Add(-int64(n)); left < 0 {
		return fmt.Errorf("%w: DATA on stream %d overruns the session window by %d bytes", ErrProtocol, h.streamID, -left)
	}
	st, err := s.streamForData(h)
	if err != nil {
		return err
	}
	if st == nil {
		s.br.Discard(n)
		s.consumed(n)
		if n == 0 && h.flags&flagSYN == 0 {
			if h.flags&flagFIN == 0 {
				return s.glitch(glitchEmptyData, h)
			}
			return s.excuseLate(h)
		}
		return nil
	}
	st.mu.Lock()
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
		kind := glitchEmptyData
		if h.flags != 0 {
			kind = glitchFinished
		}
		st.mu.Unlock()
		return s.glitch(kind, h)
	}
	st.recvAvail -= int64(n)
	fin := h.flags&flagFIN != 0
	reset := false
	switch {
	case st.has(stReset):
		s.consumed(n)
	case st.has(stClosed):
		// Closed here: nobody will read it. More data from a peer that
		// has not finished gets an RST so it stops sending.
		s.consumed(n)
		reset = n > 0 && !fin
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
		st.rcond.Broadcast()
	}
	if reset {
		st.resetLocked(0)
	}
	done := st.removableLocked()
	st.mu.Unlock()
	if done {
		s.removeStream(st)
	}
	if reset {
		return s.queueReply(frameHeader{typ: frameReset, streamID: st.id, length: uint32(codeCancel)})
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
	s.scheduleLocked(st)
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
// data on is a glitch (the "rapid reset" of HTTP/2, CVE-2023-44487), as is
// an RST for a stream already reset, or one for a finished stream beyond
// the few that may cross its end. A stream the peer opened and reset stays
// counted against MaxIncomingStreams until the application closes it (see
// Stream.removableLocked).
func (s *Session) handleReset(h frameHeader) error {
	st, err := s.lockedStream(h)
	if st == nil {
		return err
	}
	rapid := s.isPeerID(st.id) && s.sentLocked(st) == 0
	flags := stResetByPeer
	if errCode(h.length) == codeRefused {
		flags |= stRefused
	}
	st.resetLocked(flags)
	done := st.removableLocked()
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
	if !repeat || h.streamID < s.goAwayID {
		s.goAwayRecv = true
		s.goAwayID = h.streamID
		for id, st := range s.streams {
			if !s.isPeerID(id) && id > h.streamID {
				refused = append(refused, st)
			}
		}
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

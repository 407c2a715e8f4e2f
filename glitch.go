package tcpchan

import (
	"fmt"
	"time"
)

// Accounting of the peer's misbehaviour that the protocol allows but a
// correct peer rarely shows: see Config.MaxGlitches and SECURITY.md.

// glitchKind names a frame that cost work and did nothing; see
// Config.MaxGlitches.
type glitchKind uint8

const (
	glitchEmptyData  glitchKind = iota // empty DATA without SYN or FIN
	glitchIdleUpdate                   // WINDOW_UPDATE with no data sent since the last
	glitchRapidReset                   // RST on a peer's stream this side sent nothing on, before the peer's FIN
	glitchFinished                     // frame for a finished or reset stream
	glitchRefused                      // SYN past MaxIncomingStreams
	glitchPingAck                      // PING ACK answering no ping
	glitchGoAway                       // GOAWAY after the first
)

func (s *Session) describeGlitch(k glitchKind, h frameHeader) string {
	switch k {
	case glitchEmptyData:
		return fmt.Sprintf("empty DATA frame without SYN or FIN on stream %d", h.streamID)
	case glitchIdleUpdate:
		if h.streamID == 0 {
			return fmt.Sprintf("session WINDOW_UPDATE beyond one per %d bytes of DATA sent (window update flood)", bytesPerUpdate)
		}
		return fmt.Sprintf("WINDOW_UPDATE on stream %d beyond one per %d bytes of DATA sent on it (window update flood)", h.streamID, bytesPerUpdate)
	case glitchRapidReset:
		return fmt.Sprintf("RST on stream %d, which the peer opened and this side sent no DATA on (rapid reset)", h.streamID)
	case glitchFinished:
		return fmt.Sprintf("%v frame for stream %d, which had already finished or been reset", h.typ, h.streamID)
	case glitchRefused:
		return fmt.Sprintf("SYN for stream %d refused: the peer has MaxIncomingStreams (%d) open", h.streamID, s.cfg.MaxIncomingStreams)
	case glitchPingAck:
		return fmt.Sprintf("PING ACK %d answering no ping", h.length)
	case glitchGoAway:
		return "repeated GOAWAY"
	}
	return h.String()
}

// glitch charges the peer one glitch, caused by frame h. The budget is a
// token bucket (kept as the time it is full again, as in GCRA): it holds
// MaxGlitches and regains GlitchesPerSecond. A glitch that finds it empty
// returns an error that closes the session. Reader goroutine only; it takes
// no lock.
func (s *Session) glitch(k glitchKind, h frameHeader) error {
	s.glitches++
	if s.cfg.MaxGlitches < 0 {
		return nil
	}
	cost := int64(time.Second) / int64(s.cfg.GlitchesPerSecond)
	now := s.clock()
	tat := max(s.glitchTAT, now) + cost
	if tat-now > int64(s.cfg.MaxGlitches)*cost {
		return protocolErrorf("the peer exhausted its glitch budget (%d, regaining %d per second) of frames that do nothing; the last: %s",
			s.cfg.MaxGlitches, s.cfg.GlitchesPerSecond, s.describeGlitch(k, h))
	}
	s.glitchTAT = tat
	return nil
}

// bytesPerUpdate is how many bytes of DATA this side must have sent on a
// stream (or the session) for each WINDOW_UPDATE the peer sends on it,
// beyond the first. A correct peer credits data it consumed, at most one
// frame's worth at a time (the reference implementation: a quarter window
// or more, less only when it shrinks a window), so more updates than that
// are a flood.
const bytesPerUpdate = minFrameSize

// sentLocked returns the bytes of DATA this side has sent on st: the
// credit the peer gave (its window and every increment) less what is
// left. st.mu is held; reader goroutine only.
func (s *Session) sentLocked(st *Stream) int64 {
	return int64(s.peer.streamWindow) + st.credited - st.sendCredit
}

// Frames for a finished stream may have crossed its end on the wire: each
// stream that ends (or is refused) excuses lateFramesPerStream of them,
// with at most lateFramesPerStream per stream of the most the session has
// had open at once (all may end in one burst, each with a frame crossing
// its end), and at least maxLateFrames, excused at once; beyond that they
// are glitches. A peer crediting every quarter window can have four
// WINDOW_UPDATEs in flight when our FIN arrives, plus its own FIN or RST.
//
// A refused stream excuses only lateFramesPerRefusal: this side sent no
// data on it, so an honest peer has no WINDOW_UPDATE for it in flight, only
// its own FIN or RST. (Refusals for a full backlog are no glitches, so six
// each let a peer send six frames that do nothing per SYN, unbounded.)
const (
	lateFramesPerStream  = 6
	lateFramesPerRefusal = 2
	maxLateFrames        = 4096
)

func (s *Session) allowLate(n int64) {
	if s.lateFrames.Load() < max(maxLateFrames, lateFramesPerStream*int64(s.peakStreams.Load())) {
		s.lateFrames.Add(n)
	}
}

// countStreamLocked counts a stream added to the table. s.smu is held.
func (s *Session) countStreamLocked() {
	if n := s.numStreams.Add(1); n > s.peakStreams.Load() {
		s.peakStreams.Store(n)
	}
}

// excuseLate charges a frame h for a finished stream: excused while the
// allowance lasts, a glitch after.
func (s *Session) excuseLate(h frameHeader) error {
	if s.lateFrames.Add(-1) >= 0 {
		return nil
	}
	s.lateFrames.Add(1)
	return s.glitch(glitchFinished, h)
}

package tcpchan

import (
	"math"
	"sync"
	"time"
)

// keepalive is the session's keepalive state. It runs on its own timer,
// not in the writer goroutine: a peer gone silent that also stopped reading
// (a black hole on a real network fills the socket buffer) keeps the
// writer blocked in a write, and the session must still close
// KeepAliveInterval + KeepAliveTimeout after it last heard from the peer.
type keepalive struct {
	mu       sync.Mutex
	timer    *time.Timer
	stopped  bool   // the session ended: tick no more
	pingSent int64  // session clock of the latest keepalive ping, or 0
	pingID   uint32 // that ping's value while unanswered, or 0
}

// startKeepalive arms the keepalive timer, if keepalive is enabled.
func (s *Session) startKeepalive() {
	if s.cfg.KeepAliveInterval <= 0 {
		return
	}
	s.ka.mu.Lock() // a tiny interval may fire before the timer is stored
	s.ka.timer = time.AfterFunc(s.cfg.KeepAliveInterval, s.keepaliveTick)
	s.ka.mu.Unlock()
}

// stopKeepalive stops the timer once the session has ended.
func (s *Session) stopKeepalive() {
	s.ka.mu.Lock()
	s.ka.stopped = true
	if s.ka.timer != nil {
		s.ka.timer.Stop()
	}
	s.ka.mu.Unlock()
}

// keepaliveTick runs when the keepalive timer fires. A peer silent for
// KeepAliveInterval is sent a ping; one silent for KeepAliveInterval +
// KeepAliveTimeout ends the session, so the deadline is always that long
// after the last byte heard, whether or not earlier pings were answered.
// The ping only has to be queued: if the writer cannot send it, the
// peer's silence ends the session all the same.
func (s *Session) keepaliveTick() {
	ka := &s.ka
	ka.mu.Lock()
	if ka.stopped || s.Err() != nil {
		ka.mu.Unlock()
		return
	}
	now := s.clock()
	last := s.lastRecv.Load()
	interval, timeout := int64(s.cfg.KeepAliveInterval), int64(s.cfg.KeepAliveTimeout)
	limit := interval + timeout
	if limit < interval {
		limit = math.MaxInt64 // the sum overflows: as good as never
	}
	var wait int64 // until the next tick
	switch silent := now - last; {
	case silent >= limit:
		ka.mu.Unlock()
		s.fail(ErrKeepAliveTimeout)
		return
	case silent >= interval:
		if ka.pingSent <= last { // one ping per silence
			ka.pingSent = now
			ka.pingID = s.registerPing(nil)
			s.queueControl(frameHeader{typ: framePing, length: ka.pingID})
		}
		wait = limit - silent
	default:
		wait = interval - silent
	}
	ka.timer.Reset(time.Duration(wait))
	ka.mu.Unlock()
}

// keepaliveAnswered runs when the answer to ping id arrives. If it answers
// the keepalive ping, the peer has been heard from: the next ping is due
// KeepAliveInterval from now, not when the tick set for the ping's
// timeout comes (which would leave the peer less than KeepAliveTimeout to
// answer that next ping).
func (s *Session) keepaliveAnswered(id uint32) {
	ka := &s.ka
	ka.mu.Lock()
	if !ka.stopped && ka.timer != nil && id != 0 && id == ka.pingID {
		ka.pingID = 0
		ka.timer.Reset(s.cfg.KeepAliveInterval)
	}
	ka.mu.Unlock()
}

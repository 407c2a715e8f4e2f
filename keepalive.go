package tcpchan

import (
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
	stopped  bool  // the session ended: tick no more
	pingSent int64 // session clock of the latest keepalive ping, or 0
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
	var next int64 // session clock of the next tick
	switch silent := now - last; {
	case silent >= interval+timeout:
		ka.mu.Unlock()
		s.fail(ErrKeepAliveTimeout)
		return
	case silent >= interval:
		if ka.pingSent <= last { // one ping per silence
			ka.pingSent = now
			s.queueControl(frameHeader{typ: framePing, length: s.registerPing(nil)})
		}
		next = last + interval + timeout
	default:
		next = last + interval
	}
	ka.timer.Reset(time.Duration(next - now))
	ka.mu.Unlock()
}

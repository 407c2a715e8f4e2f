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
	pingSent int64 // session clock of the outstanding ping, or 0
}

// startKeepalive arms the keepalive timer, if keepalive is enabled.
func (s *Session) startKeepalive() {
	if s.cfg.KeepAliveInterval > 0 {
		s.ka.timer = time.AfterFunc(s.cfg.KeepAliveInterval, s.keepaliveTick)
	}
}

// stopKeepalive stops the timer once the session has ended.
func (s *Session) stopKeepalive() {
	if s.ka.timer != nil {
		s.ka.timer.Stop()
	}
}

// keepaliveTick runs when the keepalive timer fires: it pings a peer silent
// for KeepAliveInterval and gives up on one still silent KeepAliveTimeout
// after that ping, so a dead peer is detected within their sum. The ping
// only has to be queued: if the writer cannot send it, the peer's silence
// ends the session all the same.
func (s *Session) keepaliveTick() {
	ka := &s.ka
	ka.mu.Lock()
	if s.Err() != nil {
		ka.mu.Unlock()
		return
	}
	now := s.clock()
	last := s.lastRecv.Load()
	next := s.cfg.KeepAliveTimeout
	switch {
	case ka.pingSent != 0 && last < ka.pingSent:
		if now-ka.pingSent >= int64(s.cfg.KeepAliveTimeout) {
			ka.mu.Unlock()
			s.fail(ErrKeepAliveTimeout)
			return
		}
		next = time.Duration(ka.pingSent + int64(s.cfg.KeepAliveTimeout) - now)
	case now-last < int64(s.cfg.KeepAliveInterval):
		ka.pingSent = 0
		next = time.Duration(int64(s.cfg.KeepAliveInterval) - (now - last))
	default:
		ka.pingSent = now
		s.queueControl(frameHeader{typ: framePing, length: s.registerPing(nil)})
	}
	ka.timer.Reset(next)
	ka.mu.Unlock()
}

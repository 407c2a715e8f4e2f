package tcpchan

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"
)

var errListenerClosed = fmt.Errorf("tcpchan: listener closed: %w", net.ErrClosed)

// StreamListener returns a net.Listener whose Accept returns the streams
// the peer opens, as the session's Accept does, but whose Close ends the
// session gracefully instead of at once: it makes pending and later Accept
// calls on the listener fail with an error matching net.ErrClosed, sends
// GOAWAY (the peer opens no more streams, and this side's OpenStream fails
// with ErrGoAway), refuses the streams that arrived but were not accepted
// (their openers see ErrStreamRefused: nothing was processed, a retry is
// safe), and closes the session once the streams already accepted have
// finished, as Shutdown does. A Session is itself a net.Listener, but its
// Close cuts off every stream; http.Server.Shutdown closes its listener
// first and then waits for the requests in flight, so serve
// s.StreamListener() to shut an http.Server down gracefully. Session.Close
// and Shutdown still end the session at any time; a second Close of the
// listener returns an error matching net.ErrClosed.
func (s *Session) StreamListener() net.Listener {
	return &streamListener{s: s, closed: make(chan struct{})}
}

type streamListener struct {
	s      *Session
	once   sync.Once
	closed chan struct{}
}

func (l *streamListener) Accept() (net.Conn, error) {
	st, err := l.s.acceptStream(l.closed)
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (l *streamListener) Close() error {
	err := errListenerClosed
	l.once.Do(func() {
		err = nil
		close(l.closed)
		s := l.s
		s.refuseIncoming()
		// The session owns this goroutine: Shutdown returns when the
		// streams have finished or the session has ended.
		go s.Shutdown(context.Background())
	})
	return err
}

func (l *streamListener) Addr() net.Addr { return l.s.Addr() }

// Listener accepts streams from many clients: every connection its inner
// listener accepts becomes a server Session, and Accept returns the streams
// that all of these sessions' peers open. It implements net.Listener, so
// http.Serve(ln, handler) serves every request on a stream while each
// client keeps one connection (see Dialer).
//
// Sessions handshake concurrently, each bounded by Config.HandshakeTimeout,
// so a client that sends nothing or garbage never delays the others; a
// session that ends is forgotten. Config.MaxSessions bounds the sessions
// open at once and Config.MaxIncomingStreams the streams open per session;
// a stream past that limit, or past a session's AcceptBacklog while Accept
// is not called, is refused (the client sees ErrStreamRefused).
//
// A Listener runs one goroutine accepting connections and one per session
// handing its streams to Accept, plus one per session while it drains after
// Close. Close starts the end of all of them and Shutdown waits for it.
type Listener struct {
	inner net.Listener
	cfg   *Config // resolved

	acceptCh chan *Stream  // unbuffered: the session pumps hand streams to Accept
	closing  chan struct{} // closed by Close
	failed   chan struct{} // closed when the accept loop stopped on its own
	failErr  error         // why; written before failed is closed
	slots    chan struct{} // one token per open session; nil: no limit
	hardCtx  context.Context
	hardStop context.CancelFunc // Shutdown's ctx ended: close what remains

	mu       sync.Mutex
	closed   bool
	sessions map[*Session]struct{}
	active   int           // goroutines running: accept loop, pumps, drains
	drained  chan struct{} // closed once closed and active == 0
}

// Listen listens on the network address with net.Listen and returns a
// Listener whose sessions use cfg (nil means DefaultConfig()). It fails if
// cfg is invalid or net.Listen fails.
func Listen(network, address string, cfg *Config) (*Listener, error) {
	if _, err := cfg.resolve(); err != nil {
		return nil, err
	}
	inner, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	return NewListener(inner, cfg), nil
}

// NewListener returns a Listener that makes a server Session with cfg (nil
// means DefaultConfig()) of every connection inner accepts; wrap inner with
// tls.NewListener to run the sessions over TLS. The Listener owns inner and
// closes it on Close. If cfg is invalid, Accept returns the error naming the
// field and no connection is accepted.
func NewListener(inner net.Listener, cfg *Config) *Listener {
	l := &Listener{
		inner:    inner,
		acceptCh: make(chan *Stream),
		closing:  make(chan struct{}),
		failed:   make(chan struct{}),
		sessions: make(map[*Session]struct{}),
		drained:  make(chan struct{}),
	}
	l.hardCtx, l.hardStop = context.WithCancel(context.Background())
	c, err := cfg.resolve()
	if err != nil {
		l.failErr = err
		close(l.failed)
		return l
	}
	l.cfg = &c
	if c.MaxSessions > 0 {
		l.slots = make(chan struct{}, c.MaxSessions)
	}
	l.active = 1
	go l.acceptLoop()
	return l
}

// Addr returns the inner listener's address.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Accept waits for the next stream a client opens on any session and
// returns it as a net.Conn (a *Stream). After Close it returns an error
// matching net.ErrClosed, also to calls already waiting. If the inner
// listener fails with a permanent error, Accept returns that error, and
// keeps returning it even while streams of sessions already open wait, as
// a net.Listener does once its socket has failed: a server loop such as
// http.Serve stops and reports it, and Close refuses the waiting streams.
// Temporary errors (such as too many open files) are retried with a
// backoff, as http.Server does.
func (l *Listener) Accept() (net.Conn, error) {
	st, err := l.AcceptStream()
	if err != nil {
		return nil, err
	}
	return st, nil
}

// AcceptStream is Accept returning the *Stream itself.
func (l *Listener) AcceptStream() (*Stream, error) {
	// Checked first, one at a time: a select picks at random among ready
	// cases, and a failure reported only now and then would let a server
	// loop go on after its socket broke.
	select {
	case <-l.closing:
		return nil, errListenerClosed
	default:
	}
	select {
	case <-l.failed:
		return nil, l.failErr
	default:
	}
	select {
	case st := <-l.acceptCh:
		return st, nil
	case <-l.closing:
		return nil, errListenerClosed
	case <-l.failed:
		return nil, l.failErr
	}
}

// Close stops accepting and lets every session drain: it closes the inner
// listener, makes pending and later Accept calls fail with an error
// matching net.ErrClosed, and shuts every session down gracefully (see
// Session.Shutdown): the session sends GOAWAY, so its client opens no more
// streams on it (a Dialer dials a new connection instead), streams that
// arrived but were not yet returned by Accept are refused (their clients
// see ErrStreamRefused: nothing was processed, a retry is safe), streams
// already accepted go on until both sides have closed them, and then the
// session closes its connection. A connection whose client has not sent
// its preface within a second of Close (over TLS, perhaps not even its
// handshake) is closed then, as net/http closes a new connection that
// stays idle. Close does not wait for that; Shutdown does, and bounds the
// wait. This is what http.Server.Shutdown needs, as it closes its listener
// first and then waits for the requests in flight.
//
// Close returns the inner listener's Close error; a second Close returns an
// error matching net.ErrClosed.
func (l *Listener) Close() error {
	first, err := l.close()
	if !first {
		return errListenerClosed
	}
	return err
}

func (l *Listener) close() (first bool, err error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false, nil
	}
	l.closed = true
	sessions := make([]*Session, 0, len(l.sessions))
	for s := range l.sessions {
		sessions = append(sessions, s)
	}
	l.active += len(sessions)
	l.checkDrainedLocked()
	l.mu.Unlock()

	// Close the inner listener first, so that once Accept reports
	// net.ErrClosed the address is free for a new listener.
	err = l.inner.Close()
	close(l.closing)
	for _, s := range sessions {
		go l.drain(s)
	}
	return true, err
}

// Shutdown closes the Listener as Close does and waits until every session
// has drained and closed and all the Listener's goroutines have exited. If
// ctx ends first, it closes the remaining sessions at once, cutting off
// their open streams (which takes at most about a second, the time
// Session.Close gives queued data to go out), and returns ctx.Err().
// Otherwise it returns the inner listener's Close error, if this call
// closed it. Shutdown may be called after Close, and more than once.
func (l *Listener) Shutdown(ctx context.Context) error {
	_, err := l.close()
	select {
	case <-l.drained:
		return err
	case <-ctx.Done():
	}
	l.hardStop()
	<-l.drained
	return ctx.Err()
}

// acceptLoop is the goroutine that turns accepted connections into
// sessions until Close or a permanent error of the inner listener.
func (l *Listener) acceptLoop() {
	defer l.exit()
	var delay time.Duration
	for {
		if l.slots != nil {
			select {
			case l.slots <- struct{}{}:
			case <-l.closing:
				return
			}
		}
		conn, err := l.inner.Accept()
		if err != nil {
			l.release()
			if l.isClosed() {
				return
			}
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				// Back off as http.Server does, e.g. on EMFILE.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				t := time.NewTimer(delay)
				select {
				case <-t.C:
					continue
				case <-l.closing:
					t.Stop()
					return
				}
			}
			l.failErr = fmt.Errorf("tcpchan: accepting connections: %w", err)
			close(l.failed)
			return
		}
		delay = 0
		if !l.startSession(conn) {
			conn.Close()
			l.release()
		}
	}
}

// startSession makes a server session of conn and starts its pump, unless
// the Listener is closed.
func (l *Listener) startSession(conn net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	s, err := Server(conn, l.cfg)
	if err != nil {
		return false // cannot happen: NewListener validated cfg
	}
	l.sessions[s] = struct{}{}
	l.active++
	go l.pump(s)
	return true
}

// pump is a session's goroutine: it hands the session's streams to Accept
// (refusing them instead once the Listener is closed) until the session
// ends, then forgets the session.
func (l *Listener) pump(s *Session) {
	defer l.exit()
	for {
		st, err := s.AcceptStream()
		if err != nil {
			break
		}
		select {
		case l.acceptCh <- st:
		case <-l.closing:
			st.refuse()
		}
	}
	if s.closing.Load() {
		// AcceptStream fails from the moment Close, or Shutdown's
		// half-close, begins. Whoever began it ends the session: a
		// Close from here would cut short their wait for the peer's
		// end, and close the connection with what the peer sent
		// meanwhile unread, which resets it (the peer's streams that
		// crossed the GOAWAY would then fail with the reset instead of
		// being refused).
		<-s.dying
	}
	s.Close() // the session has ended: wait for its goroutines
	l.mu.Lock()
	delete(l.sessions, s)
	l.mu.Unlock()
	l.release()
}

// drain shuts a session down after Close: GOAWAY, its streams finish, then
// it closes; or at once when Shutdown gives up waiting.
func (l *Listener) drain(s *Session) {
	defer l.exit()
	if !s.knowsPeer() && s.NumStreams() == 0 && !l.awaitPreface(s) {
		// The client has not even sent its preface (over TLS, perhaps not
		// started its handshake, which holds the writer and so any
		// flush) within prefaceGrace: no stream to drain, nothing to
		// wait for but HandshakeTimeout. Close it, as net/http closes a
		// new connection that stays idle.
		s.fail(errSessionClosed)
		<-s.done
		return
	}
	if s.Shutdown(l.hardCtx) != nil {
		s.Close()
	}
}

// prefaceGrace is how long drain waits for the preface of a client that
// has not sent it: one whose preface and first streams are in flight gets
// GOAWAY and sees them refused (safe to retry), not its connection closed.
const prefaceGrace = time.Second

// awaitPreface waits up to prefaceGrace for s's peer preface, and reports
// whether it came.
func (l *Listener) awaitPreface(s *Session) bool {
	grace := time.NewTimer(prefaceGrace)
	defer grace.Stop()
	select {
	case <-s.peerKnown:
		return true
	case <-grace.C:
	case <-s.dying:
	case <-l.hardCtx.Done():
	}
	return s.knowsPeer() // it may have come just then
}

func (l *Listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// release frees a session slot.
func (l *Listener) release() {
	if l.slots != nil {
		<-l.slots
	}
}

// exit records that one of the Listener's goroutines has finished.
func (l *Listener) exit() {
	l.mu.Lock()
	l.active--
	l.checkDrainedLocked()
	l.mu.Unlock()
}

func (l *Listener) checkDrainedLocked() {
	if l.closed && l.active == 0 {
		select {
		case <-l.drained:
		default:
			close(l.drained)
		}
	}
}

// numSessions returns the number of sessions the Listener keeps.
func (l *Listener) numSessions() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sessions)
}

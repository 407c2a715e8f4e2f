package tcpchan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

var (
	errDialerClosed = fmt.Errorf("tcpchan: dialer closed: %w", net.ErrClosed)

	// errAbandoned: a shared dial was cancelled because all its callers
	// had left; one that joined it just then dials again.
	errAbandoned = errors.New("tcpchan: dial abandoned by all its callers")
)

// Dialer opens streams to servers, keeping one client Session per address
// and opening every stream on it: a program that dials the same server
// many times (an http.Client, a gRPC-style dial function) uses one
// connection, and a stream costs no round trip once that connection is up
// (but for a burst of more than 100 first dials: see below).
//
// The zero value is ready to use. Plug it into anything that takes a dial
// function, e.g. http.Transport{DialContext: d.DialContext}, or, for APIs
// such as grpc.WithContextDialer that take func(ctx, address):
//
//	func(ctx context.Context, addr string) (net.Conn, error) {
//		return d.DialContext(ctx, "tcp", addr)
//	}
//
// A Dialer is safe for concurrent use and must not be copied after first
// use.
//
// Concurrent first dials to an address share one connection. Until the
// server's preface arrives on it, a round trip after the connect, its
// stream limit is unknown: meanwhile the Dialer opens at most 100 streams
// on the new session (the limit that another session to the address
// learned, if there is one), and further dials wait for the preface (or
// for a stream to the address to end, leaving room), then go on that
// session or, if the limit is reached, on a new one. If no
// preface comes within HandshakeTimeout, the dials that shared that
// connect fail with ErrHandshake and later ones dial anew; with
// HandshakeTimeout negative the Dialer does not wait. A server allowing
// fewer than 100 streams may refuse the surplus of a first burst (set
// MaxStreamsPerSession to its limit, or below, to avoid that).
// A session whose budget is nearly spent, either way, by data in flight or
// not yet read (streams whose readers stall, data the server has not read
// or this side's application has not; or many busy streams: within two
// stream windows, or a quarter of the session window, of SessionWindow)
// gets no new streams, which could not move until those readers read: the
// next dial opens another connection, as a new TCP connection would be
// independent of them. Streams already on it, and keep-alive connections
// that reuse them, still wait for those readers. An extra connection is
// closed once it has had no streams for SurplusIdleTimeout and another
// session to the address has room; the last one with room stays until it
// ends or Close.
// A session that has ended is forgotten at once (a goroutine per pooled
// session waits for its end; Close waits for them), also if its address
// is never dialed again, and one that received GOAWAY from its server,
// whose server allows no streams at all, or that has used up its stream
// IDs (2^30 streams), is replaced on the next dial and closed (Session.Shutdown) once its streams are done, as HTTP/2 clients
// close such a connection when it goes idle (streams the server opened on
// it, which nobody accepts, are refused): a dial never hands out a stream
// on a session known to be dead. A dial that learns from its new
// connection's preface that the server allows no streams fails with
// ErrStreamRefused (one that sent its stream before the preface came has
// it refused).
// Its own streams are not retried, since a stream opens without a round
// trip: if the session dies after the dial (or the server had already
// closed it and its FIN has not arrived yet), the stream's Read and Write
// fail with the session's error, and a stream the server refuses (its
// limit, its accept backlog, or a GOAWAY crossing the stream's SYN) fails
// with ErrStreamRefused, which is safe to retry.
type Dialer struct {
	// Config configures the client sessions; nil means DefaultConfig().
	// An invalid Config makes every dial fail with the error naming the
	// field.
	Config *Config

	// DialConn dials the underlying connection of a new session. The ctx
	// passed ends when every dial waiting for this connection has given up
	// or the Dialer is closed. Nil means a zero net.Dialer's DialContext;
	// use a tls.Dialer's DialContext for sessions over TLS, or any custom
	// transport.
	DialConn func(ctx context.Context, network, address string) (net.Conn, error)

	// MaxStreamsPerSession, if positive, caps the streams open on one
	// session (Session.NumStreams): when every session to an address has
	// that many, the next dial opens another connection, as HTTP/2 clients
	// do. The server's own limit (its MaxIncomingStreams, announced when
	// the session starts) is respected the same way without it, and
	// before it is known, the assumed one (see above). Zero means no cap
	// but the server's.
	MaxStreamsPerSession int

	// SurplusIdleTimeout is how long a pooled session may go without
	// streams before the Dialer closes it (Session.Shutdown: its server
	// sees a GOAWAY, then the connection's end) if another session pooled
	// for the same address then has room for a stream; if none has, it
	// looks again every SurplusIdleTimeout. So the extra connections that
	// a crowded session or MaxStreamsPerSession made it open do not stay
	// for good once the burst has passed, as net/http closes idle
	// connections beyond MaxIdleConnsPerHost, while the last session with
	// room stays however long it idles. Zero means 10 seconds; negative
	// means never.
	SurplusIdleTimeout time.Duration

	group singleflight.Group

	mu       sync.Mutex
	closed   bool
	ctx      context.Context // ends on Close; parent of every underlying dial
	cancel   context.CancelFunc
	pools    map[string][]*Session      // per network and address, in dial order
	draining []*Session                 // received GOAWAY: no new streams, still open
	retiring map[*Session]chan struct{} // closed when the session leaves its pool alive: its watcher shuts it down
	waiting  map[string]int             // dials waiting for a new session, per key
	flights  map[string]context.CancelFunc
	dialing  sync.WaitGroup // underlying dials in progress
	watching sync.WaitGroup // goroutines forgetting sessions once they end

	// roomed, per key, is closed to wake the dials waiting for a preface
	// when room may have appeared sooner: a stream of a session for key
	// was forgotten, or a session left the pool or got GOAWAY (its
	// learned limit may have been the one assumed). coldWaiters counts
	// the dials about to wait so or waiting, so that a stream's end costs
	// no lock while none do.
	roomed      map[string]chan struct{}
	coldWaiters atomic.Int32
}

// Dial is DialContext with context.Background().
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}

// DialContext opens a stream to address and returns it as a net.Conn (a
// *Stream). It opens the stream on the pooled session to network and
// address, dialing one with DialConn first if there is none that is alive,
// has not received GOAWAY and has room under the server's limit and
// MaxStreamsPerSession (a dial may wait for a new session's preface: see
// Dialer). ctx bounds the whole dial, the underlying connect included:
// when it ends, DialContext returns an error wrapping ctx.Err() at once,
// and the connect is cancelled unless other dials are waiting for it.
// DialContext fails with DialConn's error if the connect fails; with the
// new session's error if it fails first (ErrHandshake: no preface within
// HandshakeTimeout); with an error matching ErrStreamRefused or ErrGoAway
// if the new connection's server allows no streams or goes away at once;
// with the error naming the field of an invalid Config; and with an error
// matching net.ErrClosed after Close.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	st, err := d.DialStream(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return st, nil
}

// DialStream is DialContext returning the *Stream itself.
func (d *Dialer) DialStream(ctx context.Context, network, address string) (*Stream, error) {
	key := network + " " + address
	var fresh *Session
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("tcpchan: dial %s %s: %w", network, address, err)
		}
		st, unknown, roomed, err := d.openPooled(key, fresh)
		if st != nil || err != nil {
			return st, err
		}
		if unknown != nil {
			// Its server's limit is still unknown and its share of
			// streams for the meantime is taken: wait for the preface
			// (a round trip after the connect) rather than open a
			// stream the server may refuse, or a connection it may
			// not need, unless a stream ends and leaves room first.
			select {
			case <-unknown.peerKnown:
			case <-unknown.Done():
			case <-roomed:
			case <-ctx.Done():
			}
			d.coldWaiters.Add(-1)
			continue
		}
		// No session can take the stream: dial one (or join the dial
		// already under way), then try again.
		fresh, err = d.dialShared(ctx, key, network, address)
		if err != nil {
			return nil, err
		}
	}
}

// openPooled opens a stream on a usable pooled session for key, retiring
// sessions that cannot open any more (see canOpen). If no session can take
// another stream it returns no stream, and a session to wait for if one
// may be able to once its server's preface has arrived, with a channel
// closed if room may appear meanwhile (see roomed); the caller then waits
// and stops counting in coldWaiters. If fresh, the session just dialed for
// this call, turns out unusable, it returns why rather than redial.
func (d *Dialer) openPooled(key string, fresh *Session) (st *Stream, unknown *Session, roomed <-chan struct{}, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, nil, nil, errDialerClosed
	}
	for counted := false; ; counted = true {
		st, unknown = d.openPooledLocked(key)
		if st == nil && unknown != nil && !counted {
			// About to wait: counted first, then a second look, so
			// that a stream ending between the first look and the
			// count is not missed. roomFreed loads the count after
			// the stream has left its session's table: either it
			// finds this dial counted (and closes the channel
			// returned below once this returns), or this look finds
			// the room.
			d.coldWaiters.Add(1)
			continue
		}
		if counted && (st != nil || unknown == nil) {
			d.coldWaiters.Add(-1)
		}
		break
	}
	if st != nil {
		return st, nil, nil, nil
	}
	if fresh != nil && !fresh.canOpen() {
		if unknown != nil {
			d.coldWaiters.Add(-1)
		}
		// What the server said first: the watcher shuts such a session
		// down, and without streams it is closed at once, with an error
		// that would read as the Dialer's own Close.
		switch {
		case fresh.allowsNoStreams():
			// Another connection would most likely announce the same:
			// one per dial, as for a session that refuses the stream.
			return nil, nil, nil, fmt.Errorf("%w: the server allows no streams (it announced a stream limit of 0)", ErrStreamRefused)
		case fresh.goAwayReceived():
			return nil, nil, nil, fmt.Errorf("%w: the server sent GOAWAY on a new connection", ErrGoAway)
		case fresh.Err() != nil:
			return nil, nil, nil, fresh.Err()
		}
		return nil, nil, nil, fmt.Errorf("%w: the new session cannot open streams", ErrGoAway)
	}
	if unknown == nil {
		return nil, nil, nil, nil
	}
	ch := d.roomed[key]
	if ch == nil {
		ch = make(chan struct{})
		d.roomed[key] = ch
	}
	return nil, unknown, ch, nil
}

// openPooledLocked is one look at the pool for key: it retires the
// sessions that cannot open any more and opens a stream on the first that
// has room, or else returns the first session that may have room once its
// preface has arrived.
func (d *Dialer) openPooledLocked(key string) (found *Stream, unknown *Session) {
	pool := d.pools[key]
	var assumed uint32 // the limit assumed for cold sessions, once one is met
	kept := pool[:0]
	for _, s := range pool {
		if !s.canOpen() {
			d.retireLocked(s)
			continue
		}
		if found == nil {
			if assumed == 0 && !s.knowsPeer() {
				assumed = assumedPeerLimit(pool)
			}
			room, wait := s.hasRoom(d.MaxStreamsPerSession, assumed)
			if wait && unknown == nil {
				unknown = s
			}
			var err error
			if room {
				found, err = s.OpenStream()
			}
			switch {
			case errors.Is(err, ErrStreamRefused):
				// Full after all (a stream opened on it directly, or
				// its preface came between the look and the open): it
				// stays pooled.
			case err != nil: // it died or got GOAWAY just now
				d.retireLocked(s)
				continue
			}
		}
		kept = append(kept, s)
	}
	if len(kept) < len(pool) {
		// A retired session may have set the limit assumed for the
		// others (assumedPeerLimit): the dials waiting look again.
		d.wakeRoomedLocked(key)
	}
	clear(pool[len(kept):])
	if len(kept) == 0 {
		delete(d.pools, key)
	} else {
		d.pools[key] = kept
	}
	if found != nil {
		unknown = nil
	}
	return found, unknown
}

// roomFreed wakes the dials waiting for a preface of a session for key: a
// stream of a session for key has ended, leaving room. Nothing to do,
// and no lock taken, while no dial waits.
func (d *Dialer) roomFreed(key string) {
	if d.coldWaiters.Load() == 0 {
		return
	}
	d.mu.Lock()
	d.wakeRoomedLocked(key)
	d.mu.Unlock()
}

// wakeRoomedLocked wakes the dials waiting for a preface of a session for
// key and forgets their channel.
func (d *Dialer) wakeRoomedLocked(key string) {
	if ch := d.roomed[key]; ch != nil {
		close(ch)
		delete(d.roomed, key)
	}
}

// assumedPeerLimit is the stream limit the Dialer assumes for a session
// whose server's preface has not arrived yet: the limit another session in
// pool learned from the same address, or else coldSessionStreams. Not one
// leaving the pool (GOAWAY, a limit of 0): the dials that retire it must
// not wait by its limit.
func assumedPeerLimit(pool []*Session) uint32 {
	for _, s := range pool {
		if s.knowsPeer() && s.canOpen() { // canOpen: not 0
			s.smu.Lock()
			defer s.smu.Unlock()
			return s.peer.maxStreams
		}
	}
	return coldSessionStreams
}

// coldSessionStreams is how many streams the Dialer opens on a new session
// before its server's preface announces the server's MaxIncomingStreams, as
// HTTP/2 clients assume 100 concurrent streams until the server's SETTINGS
// arrive. Up to that many dials need no round trip beyond the connect;
// beyond it a burst of dials waits for the preface rather than open
// streams a server with a lower limit would refuse. A server whose limit
// is lower still can refuse the difference on the first session, and on
// every session that MaxStreamsPerSession (below 100 but above the
// server's limit) makes a burst open before that preface; a cap at or
// below the server's limit avoids refusals.
const coldSessionStreams = 100

// retireLocked takes s out of its pool: forgotten if it has ended, kept
// for Close until it ends (then forget drops it) if it is alive but will
// open no more streams (GOAWAY, a server allowing none, its stream IDs used
// up, surplus: its watcher shuts it down).
func (d *Dialer) retireLocked(s *Session) {
	if s.Err() == nil {
		d.draining = append(d.draining, s)
	}
	if ch := d.retiring[s]; ch != nil {
		close(ch)
		delete(d.retiring, s)
	}
}

// usableLocked reports whether a pooled session for key can take a stream,
// now or once its server's preface has arrived.
func (d *Dialer) usableLocked(key string) bool {
	for _, s := range d.pools[key] {
		// One waiting for its server's preface counts too: the caller
		// goes back to openPooled, which waits for it. (Whatever limit
		// is assumed, a session before its preface has room or waits.)
		if room, wait := s.hasRoom(d.MaxStreamsPerSession, coldSessionStreams); (room || wait) && s.canOpen() {
			return true
		}
	}
	return false
}

// initLocked sets up the zero Dialer.
func (d *Dialer) initLocked() {
	if d.ctx == nil {
		d.ctx, d.cancel = context.WithCancel(context.Background())
		d.pools = make(map[string][]*Session)
		d.waiting = make(map[string]int)
		d.flights = make(map[string]context.CancelFunc)
		d.roomed = make(map[string]chan struct{})
		d.retiring = make(map[*Session]chan struct{})
	}
}

// dialShared waits for a new session to key: one dial per key at a time,
// shared by every caller waiting for it. The dial is cancelled when the
// last of them gives up.
func (d *Dialer) dialShared(ctx context.Context, key, network, address string) (*Session, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, errDialerClosed
	}
	d.initLocked()
	d.waiting[key]++
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		if d.waiting[key]--; d.waiting[key] == 0 {
			delete(d.waiting, key)
			if cancel := d.flights[key]; cancel != nil {
				cancel()
			}
		}
		d.mu.Unlock()
	}()
	for {
		ch := d.group.DoChan(key, func() (any, error) {
			return d.dialNew(key, network, address)
		})
		select {
		case r := <-ch:
			switch {
			case !errors.Is(r.Err, errAbandoned):
				if r.Err != nil {
					return nil, r.Err
				}
				return r.Val.(*Session), nil
			case ctx.Err() == nil:
				continue // joined a dial just as its callers gave up
			}
			// This caller gave up too.
		case <-ctx.Done():
		}
		return nil, fmt.Errorf("tcpchan: dial %s %s: %w", network, address, ctx.Err())
	}
}

// dialNew dials the underlying connection and pools a session on it. It
// runs in singleflight's goroutine, at most one per key at a time.
func (d *Dialer) dialNew(key, network, address string) (*Session, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, errDialerClosed
	}
	if d.waiting[key] == 0 {
		d.mu.Unlock()
		return nil, errAbandoned
	}
	// A dial that just finished may have pooled a session after this
	// caller looked: use it rather than open a second connection.
	if d.usableLocked(key) {
		d.mu.Unlock()
		return nil, nil
	}
	if _, err := d.Config.resolve(); err != nil {
		d.mu.Unlock()
		return nil, err
	}
	ctx, cancel := context.WithCancel(d.ctx)
	d.flights[key] = cancel
	d.dialing.Add(1)
	d.mu.Unlock()
	defer d.dialing.Done()

	dial := d.DialConn
	if dial == nil {
		var nd net.Dialer
		dial = nd.DialContext
	}
	conn, err := dial(ctx, network, address)

	d.mu.Lock()
	delete(d.flights, key)
	closed := d.closed
	d.mu.Unlock()
	abandoned := ctx.Err() != nil
	cancel()
	switch {
	case closed:
		if conn != nil {
			conn.Close()
		}
		return nil, errDialerClosed
	case err != nil && abandoned:
		return nil, errAbandoned
	case err != nil:
		return nil, fmt.Errorf("tcpchan: %w", err)
	}
	s, err := Client(conn, d.Config)
	if err != nil {
		conn.Close()
		return nil, err
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		s.Close()
		return nil, errDialerClosed
	}
	d.pools[key] = append(d.pools[key], s)
	retired := make(chan struct{})
	d.retiring[s] = retired
	// idle gets a value, and idleSince the session clock, whenever the
	// session's last stream is forgotten.
	idle := make(chan struct{}, 1)
	var idleSince atomic.Int64
	streamGone := func() {
		d.roomFreed(key)
		if s.numStreams.Load() == 0 {
			idleSince.Store(s.clock())
			select {
			case idle <- struct{}{}:
			default:
			}
		}
	}
	s.streamGone.Store(&streamGone)
	d.watching.Add(1)
	closing := d.ctx // ends at Close
	d.mu.Unlock()
	// Forget the session once it ends, also if its address is never
	// dialed again: a dead session still holds its buffers. One that
	// opens no more (its server sent GOAWAY or allows no streams, its
	// stream IDs are used up, it is surplus): close it once its streams
	// are done, as HTTP/2 clients close such a connection when it goes
	// idle, rather than keep it until the server closes it (a server
	// whose Shutdown gave up may never do).
	go func() {
		defer d.watching.Done()
		defer d.forget(key, s)
		select {
		case <-s.Done():
			return
		case <-s.peerKnown: // first: the preface is the server's first frame
		}
		if !s.allowsNoStreams() && !d.watchPooled(key, s, retired, idle, &idleSince) {
			return // it ended
		}
		// It leaves the pool at the next look: dials waiting by the limit
		// it learned look again now.
		d.mu.Lock()
		d.wakeRoomedLocked(key)
		d.mu.Unlock()
		// Nobody accepts streams on a Dialer's session: refuse those the
		// server opened (safe for it to retry), or Shutdown waits for
		// them until Close.
		s.refuseIncoming()
		s.Shutdown(closing) // Close closes s if it gives up
		<-s.Done()
	}()
	return s, nil
}

// defaultSurplusIdleTimeout is SurplusIdleTimeout's zero value.
const defaultSurplusIdleTimeout = 10 * time.Second

// watchPooled is the pooled session s's watcher until s ends (it reports
// false) or must be closed (true): its server sent GOAWAY, it left its
// pool (retired is closed: see retireLocked), or it has been surplus (see
// retireIdle) for SurplusIdleTimeout. idle gets a value, and idleSince the
// session clock, whenever s's last stream is forgotten.
func (d *Dialer) watchPooled(key string, s *Session, retired, idle <-chan struct{}, idleSince *atomic.Int64) bool {
	timeout := d.SurplusIdleTimeout
	if timeout == 0 {
		timeout = defaultSurplusIdleTimeout
	}
	if timeout < 0 {
		idle = nil
	}
	var timer *time.Timer
	var fired <-chan time.Time
	arm := func(after time.Duration) {
		if timer == nil {
			timer = time.NewTimer(after)
		} else {
			timer.Reset(after)
		}
		fired = timer.C
	}
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	if idle != nil && s.NumStreams() == 0 {
		// Its dial took room that appeared meanwhile on another
		// session, or its streams ended before the preface.
		idleSince.CompareAndSwap(0, s.clock())
		arm(timeout)
	}
	for {
		select {
		case <-s.Done():
			return false
		case <-s.goingAway:
			return true
		case <-retired:
			return true
		case <-idle:
			arm(timeout)
		case <-fired:
			fired = nil
			retired, wait := d.retireIdle(key, s, time.Duration(idleSince.Load()), timeout)
			if retired {
				return true
			}
			if wait > 0 {
				arm(wait)
			}
		}
	}
}

// retireIdle takes s out of the pool for key if it has had no streams
// since the session clock reading since, for timeout, and another session
// in the pool has room for a stream: s is surplus. Otherwise it reports
// how long to wait before looking again, or 0 not to: s has streams (the
// last one's end arms the timer again) or has left the pool.
func (d *Dialer) retireIdle(key string, s *Session, since, timeout time.Duration) (retired bool, wait time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	pool := d.pools[key]
	if d.closed || !slices.Contains(pool, s) || s.NumStreams() != 0 {
		return false, 0
	}
	if idle := time.Duration(s.clock()) - since; idle < timeout {
		return false, timeout - idle // a stream came and went meanwhile
	}
	assumed := assumedPeerLimit(pool)
	for _, p := range pool {
		if p == s || !p.canOpen() {
			continue
		}
		if room, _ := p.hasRoom(d.MaxStreamsPerSession, assumed); room {
			d.pools[key] = slices.DeleteFunc(pool, func(p *Session) bool { return p == s })
			d.retireLocked(s)
			d.wakeRoomedLocked(key)
			return true, 0
		}
	}
	// Needed while no other has room (or the pool's last): look again
	// later, as a session dialed meanwhile may have room then, and the
	// others' streams may end or drain, without this one's streams
	// changing.
	return false, timeout
}

// forget takes the ended session s out of the pool for key, or out of
// the draining list.
func (d *Dialer) forget(key string, s *Session) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if pool := d.pools[key]; pool != nil {
		kept := slices.DeleteFunc(pool, func(p *Session) bool { return p == s })
		if len(kept) == 0 {
			delete(d.pools, key)
		} else {
			d.pools[key] = kept
		}
	}
	// The session that left may have set the limit assumed for the
	// others; with none left, nobody needs key's channel any more (also
	// when openPooled emptied the pool).
	d.wakeRoomedLocked(key)
	d.draining = slices.DeleteFunc(d.draining, func(p *Session) bool { return p == s })
	delete(d.retiring, s)
}

// Close closes every session the Dialer keeps (see Session.Close: streams
// still open on them fail with an error matching net.ErrClosed), cancels
// the underlying dials in progress and waits for them and for the
// sessions' goroutines. Later dials fail with an error matching
// net.ErrClosed. Close returns nil, also when called again.
func (d *Dialer) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.initLocked()
	d.cancel()
	all := d.draining
	for _, pool := range d.pools {
		all = append(all, pool...)
	}
	d.pools, d.draining = nil, nil
	d.mu.Unlock()

	var wg sync.WaitGroup
	for _, s := range all {
		wg.Go(func() { s.Close() })
	}
	wg.Wait()
	d.dialing.Wait()
	d.watching.Wait()
	return nil
}

// canOpen reports whether the session can ever open another stream: it is
// alive, neither side has sent GOAWAY, and the server's preface did not
// announce a limit of 0. One that cannot is retired from its pool.
func (s *Session) canOpen() bool {
	if s.Err() != nil {
		return false
	}
	s.smu.Lock()
	defer s.smu.Unlock()
	return !s.goAwaySent && !s.goAwayRecv && s.nextID <= maxStreamID && s.peer.maxStreams != 0
}

// allowsNoStreams reports whether the peer's preface announced a stream
// limit of 0 (until the preface the limit assumed is none).
func (s *Session) allowsNoStreams() bool {
	s.smu.Lock()
	defer s.smu.Unlock()
	return s.peer.maxStreams == 0
}

// hasRoom reports whether the Dialer can open a stream on the session now:
// the Dialer's cap (max, if positive) and the peer's stream limit leave
// room, and so does assumed while that limit is unknown, and the session
// is not crowded (see crowdedLocked). One without stays pooled: its
// streams end and make room. If only assumed, or crowding before the
// peer's preface, stands in the way, wait reports that the preface may
// make room.
func (s *Session) hasRoom(max int, assumed uint32) (room, wait bool) {
	if max > 0 && s.NumStreams() >= max {
		return false, false
	}
	s.smu.Lock()
	defer s.smu.Unlock()
	// Without a HandshakeTimeout nothing would bound the wait for a
	// preface that never comes: the stream goes out regardless.
	crowded := s.crowdedLocked()
	if !s.knowsPeer() && s.cfg.HandshakeTimeout > 0 && (uint64(s.outgoing) >= uint64(assumed) || crowded) {
		// The preface may bring room, and credit beyond the smallest
		// session window assumed until then.
		return false, true
	}
	return !s.atPeerLimitLocked() && !crowded, false
}

// crowdedLocked reports whether a new stream on the session would wait for
// other streams' readers: the session's budget, either way, has less than
// two stream windows left (or a quarter of the session window, if less,
// which a lone stream's grown window and credit returned in quarters
// leave even while its reader keeps up), held by data in flight or not
// yet read by the peer's streams (this side's sending) or this side's (the
// peer's sending). Over TCP a new connection would be independent of
// them, so the Dialer opens one. Before the peer's preface the sending
// side is measured against the smallest windows, assumed until then (see
// hasRoom). smu is held.
func (s *Session) crowdedLocked() bool {
	low := crowdingMargin(int64(s.peer.streamWindow), int64(s.peer.sessionWindow))
	return s.sendWindow.Load() < low || s.recvCredit.Load() < s.lowUntil.Load()
}

// crowdingMargin is the session budget below which a session counts as
// crowded (see crowdedLocked), for the receiving side's windows.
func crowdingMargin(streamWindow, sessionWindow int64) int64 {
	return min(2*streamWindow, sessionWindow/4)
}

// atPeerLimitLocked reports whether this side has as many streams open as
// the peer allows (before its preface: no limit known). Compared as
// uint64: a limit of 2^31 or more is a negative int on 32-bit platforms.
// smu is held.
func (s *Session) atPeerLimitLocked() bool {
	return uint64(s.outgoing) >= uint64(s.peer.maxStreams)
}

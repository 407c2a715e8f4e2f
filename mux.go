// Package tcpchan carries many independent streams over one connection.
//
// A Session wraps an established connection (TCP, TLS, a pipe: any
// io.ReadWriteCloser). Both ends can open streams with Dial or OpenStream and
// take the peer's with Accept or AcceptStream. Every Stream is a full
// net.Conn, with deadlines and half-close, and a Session is a net.Listener,
// so http.Serve(session, handler) works (serve session.StreamListener() to
// stop the server gracefully with http.Server.Shutdown).
//
// Opening a stream costs no round trip: data follows the SYN without waiting
// for an answer.
// Writes are cut into frames of MaxFrameSize bytes (1 KiB by default) that
// one round-robin scheduler per session interleaves, so a bulk
// transfer never starves a small request. Every stream has its own
// credit-based flow control, so a stream whose reader stalls never blocks
// the others, and a session window bounds the memory a peer can make a
// session buffer.
//
// The wire protocol is specified in PROTOCOL.md.
package tcpchan

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Config tunes a Session. A nil *Config means DefaultConfig(); in a Config,
// a zero field means that field's default. Client and Server reject values
// outside the documented ranges with an error naming the field.
type Config struct {
	// MaxFrameSize is the largest DATA payload this side sends and accepts.
	// Smaller frames interleave streams more finely; larger ones cost less
	// CPU. Default 1024, range 1024 to 65536. Frames sent are cut to the
	// smaller of both sides' values.
	MaxFrameSize int

	// InitialStreamWindow is how many bytes the peer may send on a stream
	// before its reader reads any. Default 256 KiB, range 64 KiB to
	// MaxStreamWindow.
	InitialStreamWindow int

	// MaxStreamWindow caps a stream's receive window, which grows while the
	// application reads faster than the window allows per round trip, so one
	// stream can fill a long fat link; a window never grows beyond half of
	// SessionWindow either. Streams busy on the same long link grow to
	// equal windows, sharing that half. On a short link (the fastest of
	// the session's pings under 1 ms) a window grows only while its stream
	// is alone in the session, or no other stream has received data for
	// 100 ms nor since its previous window update, to 1 MiB within those
	// caps (one such window's growth per session), and shrinks back as the
	// application reads once another stream receives data (one the peer
	// opens does with its SYN; credit already granted stays valid).
	// Default 8 MiB (InitialStreamWindow if that is more), at most 2^31-1.
	MaxStreamWindow int

	// SessionWindow is the session's receive budget: the most bytes all
	// streams together may hold received but unread. It bounds a session's
	// receive memory. Growth of stream windows beyond InitialStreamWindow
	// is limited to half of it, so that streams whose readers stall cannot
	// take it all; but SessionWindow/InitialStreamWindow streams stalled
	// at once (64 by default, fewer if their windows had grown: as few as
	// 32 on a long link, where their growth may take half of SessionWindow)
	// do, and the session's other streams then wait for those readers too
	// (a Dialer opens another connection instead). Default 16 MiB
	// (InitialStreamWindow if that is more), range 1 MiB (and at least
	// InitialStreamWindow) to 2^31-1.
	SessionWindow int

	// MaxIncomingStreams is the most streams the peer may have open at once
	// on this session. Past it, a new stream is refused: the peer's dialer
	// sees ErrStreamRefused (a tcpchan peer learns the limit from this
	// side's preface and stays within it). A stream the peer resets keeps
	// its place until the application has closed it, so that opening and
	// resetting streams ("rapid reset") cannot make the application handle
	// more than this many streams of the session at once. Default 8192,
	// at most 2^30.
	MaxIncomingStreams int

	// AcceptBacklog is how many incoming streams may wait for Accept. Past
	// it, a new stream is refused as above, so the session's reader never
	// waits for the application; the session lives on (the peer cannot
	// see the backlog, so these refusals are not glitches: see
	// MaxGlitches). Default 1024, range 1 to 2^20: the backlog's slots (8
	// bytes each) are allocated with the session.
	AcceptBacklog int

	// MaxSessions is the most sessions a Listener keeps open at once,
	// counting those still in their handshake. At the limit, the Listener
	// stops accepting connections from its inner listener until one of its
	// sessions ends, as netutil.LimitListener does: new clients wait in the
	// inner listener's backlog, and one whose wait outlasts its own
	// HandshakeTimeout fails with ErrHandshake. Sessions made with Client
	// or Server ignore it. Default 0: no limit.
	MaxSessions int

	// MaxQueuedControlFrames bounds the answers to the peer (ping
	// answers, refusals, RSTs) queued while the peer is not reading: one
	// that finds this many answers queued closes the session with
	// ErrProtocol. This side's own control frames neither count nor are
	// checked, so that a small value does not end a session whose peer
	// reads everything: its pings, and its window updates, of which one
	// per stream and one for the session are queued at a time (more
	// credit joins the one queued). Default 10000; negative values are
	// rejected.
	MaxQueuedControlFrames int

	// MaxGlitches bounds the peer's glitches: frames that cost this side
	// work but do nothing useful, which a correct peer sends rarely and
	// only a broken or hostile one sends in numbers (floods). Each of these
	// is one glitch: an empty DATA frame without SYN or FIN; a
	// WINDOW_UPDATE on a stream (or the session) beyond one per 1024 bytes
	// of data this side sent on it, plus one; an RST on a stream the peer
	// opened and this side sent no data on, before the peer's FIN ("rapid
	// reset"); an RST or
	// WINDOW_UPDATE for a stream the peer already reset; an RST, WINDOW_UPDATE or
	// empty DATA frame for a finished stream, beyond six per stream that
	// ended and two per stream refused (those may have crossed its end on
	// the wire); a stream refused because the peer has MaxIncomingStreams
	// open (unless only streams the peer reset and the application has not
	// closed fill the limit, or the peer has not yet answered a ping, so may
	// not know the limit: up to 1024 such; a refusal for a full
	// AcceptBacklog, which the peer cannot see, is none); a PING ACK
	// answering no ping (beyond one per ping this side stopped waiting
	// for: PingContext gave up, or an own ping past the latest 8); every
	// GOAWAY after the first. The budget is a
	// token bucket: it holds MaxGlitches and regains GlitchesPerSecond,
	// and a glitch that finds it empty closes the session with ErrProtocol
	// naming that glitch. Default 1000, at most 2^30; negative disables
	// the check.
	MaxGlitches int

	// GlitchesPerSecond is the rate at which the glitch budget refills.
	// Default 100, range 1 to 10^9.
	GlitchesPerSecond int

	// KeepAliveInterval is how long the session waits without hearing from
	// the peer before it sends a ping. Any frame received counts as a sign
	// of life. The session closes a peer silent for KeepAliveInterval +
	// KeepAliveTimeout even while its writes to the peer are blocked (a
	// peer gone silent has usually stopped reading too). Default 30s;
	// negative disables keepalive.
	KeepAliveInterval time.Duration

	// KeepAliveTimeout is how long after such a ping the session waits for
	// any frame before it closes with ErrKeepAliveTimeout. Default 30s;
	// negative values are rejected unless keepalive is disabled.
	KeepAliveTimeout time.Duration

	// WriteTimeout closes the session with ErrWriteTimeout when one write to
	// the connection makes no progress for this long (a peer that stopped
	// reading); a peer that reads slowly but steadily is not cut off.
	// Progress is what the connection takes, and on Linux also the socket's
	// send queue shrinking (also under TLS), which the session looks at
	// every quarter of WriteTimeout, so it may close up to that much later
	// than WriteTimeout after the last progress. Elsewhere a blocked write
	// to a socket shows progress only once the kernel frees a third of the
	// send buffer, so a reader slower than that per WriteTimeout is cut
	// off; on a connection that is not a socket, progress is seen 16 KiB at
	// a time.
	// Default 30s; negative disables.
	WriteTimeout time.Duration

	// HandshakeTimeout is how long the session waits for the peer's preface
	// before it closes with ErrHandshake. Default 10s; negative disables.
	HandshakeTimeout time.Duration
}

// DefaultConfig returns the configuration a nil *Config stands for.
func DefaultConfig() *Config {
	return &Config{
		MaxFrameSize:           1024,
		InitialStreamWindow:    256 << 10,
		MaxStreamWindow:        8 << 20,
		SessionWindow:          16 << 20,
		MaxIncomingStreams:     8192,
		AcceptBacklog:          1024,
		MaxQueuedControlFrames: 10000,
		MaxGlitches:            1000,
		GlitchesPerSecond:      100,
		KeepAliveInterval:      30 * time.Second,
		KeepAliveTimeout:       30 * time.Second,
		WriteTimeout:           30 * time.Second,
		HandshakeTimeout:       10 * time.Second,
	}
}

// resolve fills zero fields with defaults and validates the result.
func (c *Config) resolve() (Config, error) {
	d := *DefaultConfig()
	if c == nil {
		return d, nil
	}
	r := *c
	setInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setDur := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setInt(&r.MaxFrameSize, d.MaxFrameSize)
	setInt(&r.InitialStreamWindow, d.InitialStreamWindow)
	setInt(&r.MaxStreamWindow, max(d.MaxStreamWindow, r.InitialStreamWindow))
	setInt(&r.SessionWindow, max(d.SessionWindow, r.InitialStreamWindow))
	setInt(&r.MaxIncomingStreams, d.MaxIncomingStreams)
	setInt(&r.AcceptBacklog, d.AcceptBacklog)
	setInt(&r.MaxQueuedControlFrames, d.MaxQueuedControlFrames)
	setInt(&r.MaxGlitches, d.MaxGlitches)
	setInt(&r.GlitchesPerSecond, d.GlitchesPerSecond)
	setDur(&r.KeepAliveInterval, d.KeepAliveInterval)
	setDur(&r.KeepAliveTimeout, d.KeepAliveTimeout)
	setDur(&r.WriteTimeout, d.WriteTimeout)
	setDur(&r.HandshakeTimeout, d.HandshakeTimeout)

	bad := func(field string, v any, want string) error {
		return fmt.Errorf("tcpchan: invalid Config.%s %v: want %s", field, v, want)
	}
	switch {
	case r.MaxFrameSize < minFrameSize || r.MaxFrameSize > maxFrameSizeLimit:
		return r, bad("MaxFrameSize", r.MaxFrameSize, "1024 to 65536")
	case r.InitialStreamWindow < minStreamWindow || r.InitialStreamWindow > maxWindow:
		return r, bad("InitialStreamWindow", r.InitialStreamWindow, "64 KiB to 2^31-1")
	case r.MaxStreamWindow < r.InitialStreamWindow || r.MaxStreamWindow > maxWindow:
		return r, bad("MaxStreamWindow", r.MaxStreamWindow, "InitialStreamWindow to 2^31-1")
	case r.SessionWindow < max(minSessionWindow, r.InitialStreamWindow) || r.SessionWindow > maxWindow:
		return r, bad("SessionWindow", r.SessionWindow, "1 MiB and InitialStreamWindow to 2^31-1")
	case r.MaxIncomingStreams < 0 || r.MaxIncomingStreams > 1<<30:
		return r, bad("MaxIncomingStreams", r.MaxIncomingStreams, "1 to 2^30 (0: the default)")
	case r.AcceptBacklog < 0 || r.AcceptBacklog > maxAcceptBacklog:
		return r, bad("AcceptBacklog", r.AcceptBacklog, "1 to 2^20 (0: the default)")
	case r.MaxSessions < 0:
		return r, bad("MaxSessions", r.MaxSessions, ">= 0 (0: no limit)")
	case r.MaxQueuedControlFrames < 0:
		return r, bad("MaxQueuedControlFrames", r.MaxQueuedControlFrames, ">= 0")
	case r.MaxGlitches > 1<<30:
		return r, bad("MaxGlitches", r.MaxGlitches, "at most 2^30, or negative to disable")
	case r.GlitchesPerSecond < 1 || r.GlitchesPerSecond > 1e9:
		return r, bad("GlitchesPerSecond", r.GlitchesPerSecond, "1 to 10^9")
	case r.KeepAliveTimeout < 0 && r.KeepAliveInterval > 0:
		return r, bad("KeepAliveTimeout", r.KeepAliveTimeout, "> 0")
	}
	return r, nil
}

// maxAcceptBacklog bounds Config.AcceptBacklog, whose slots are allocated up
// front: a larger value made session creation panic, or took gigabytes.
const maxAcceptBacklog = 1 << 20

var errSessionClosed = fmt.Errorf("tcpchan: session closed: %w", net.ErrClosed)

// Session is one multiplexed connection. Create one with Client or Server on
// an established connection; both ends can open and accept streams. A
// Session is safe for concurrent use and implements net.Listener (Accept
// returns the streams the peer opens; Close ends the session and every
// stream, so http.Server.Shutdown over it cuts requests in flight off:
// serve StreamListener for that).
//
// Each Session runs two goroutines, one reading and one writing the
// connection; they exit when the session ends, which Close waits for (and
// a third while a StreamListener's Close waits for the streams to finish). On
// TCP and Unix sockets a Read that finds no data, a Write waiting for
// credit, and a Write that finds the connection idle read or write it
// themselves instead, saving a goroutine hand-off each (see reader.go and
// writer.go).
type Session struct {
	conn   io.ReadWriteCloser
	cfg    Config
	client bool
	start  time.Time

	br *bufio.Reader // the read token's holder only
	rt readToken     // who reads the connection (see reader.go)

	// Write side. wmu guards the scheduler and the write token; only the
	// token's holder writes to conn (see writer.go).
	wmu           sync.Mutex
	sched         writeScheduler
	wake          chan struct{} // capacity 1: work was queued
	flushReq      chan chan struct{}
	sendWindow    atomic.Int64  // session credit from the peer
	sendFrameSize atomic.Uint32 // min of both sides' MaxFrameSize, once known
	w             connWriter    // the write token and what its holder owns

	// Stream table and opening state.
	smu           sync.Mutex
	streams       map[uint32]*Stream
	nextID        uint32
	lastPeerID    uint32       // highest stream ID the peer opened
	incoming      int          // open streams the peer opened
	heldResets    atomic.Int32 // of those, ones the peer reset that the application has not closed: the peer no longer counts them
	orphans       atomic.Int32 // streams this side opened that the application closed, waiting for the peer to finish them
	earlyRefusals int          // refusals excused because the peer had not answered a ping yet (see refusalIsGlitchLocked)
	outgoing      int          // open streams this side opened, which the peer's maxStreams bounds
	peer          settings
	goAwaySent    bool                   // Shutdown: refuse new streams
	goAwayRecv    bool                   // peer's GOAWAY: open no new streams
	goingAway     chan struct{}          // closed at the peer's first GOAWAY
	peerKnown     chan struct{}          // closed once the peer's preface settings apply
	streamGone    atomic.Pointer[func()] // a Dialer's: called, with no lock held, when a stream is forgotten
	acceptCh      chan *Stream
	lastFound     atomic.Pointer[Stream] // the reader's last lookup, while in streams

	// Receive budget. The peer may send recvCredit-recvSpent more bytes.
	// recvUnacked changes on every Read and recvSpent on every frame: kept
	// on separate cache lines, they do not slow each other down.
	recvCredit   atomic.Int64 // SessionWindow plus the session credit granted since
	windowGrowth atomic.Int64 // sum of stream window growth, ≤ SessionWindow/2
	numStreams   atomic.Int32 // len(streams), readable without smu
	_            [64]byte
	recvSpent    int64        // bytes received; the read token's holder only
	peerStarved  atomic.Bool  // the peer had used all its session credit at its last DATA frame
	lowUntil     atomic.Int64 // recvCredit below this: the peer has less than lowBudget left (see crowdedLocked); the read token's holder stores it
	lowBudget    int64        // crowdingMargin of this side's windows
	_            [64]byte
	recvUnacked  atomic.Int64 // bytes consumed but not yet credited back
	_            [64]byte
	growers      growers // streams autotuning their windows on a long link lately

	// Which streams received data lately (see noteData); written by the
	// read token's holder only.
	activeID atomic.Uint32 // the stream that received data last
	activeAt atomic.Int64  // session clock when it last did, to activeGrain
	otherAt  atomic.Int64  // ... and when any other stream last did

	// Liveness.
	lastRecv atomic.Int64 // session clock of the last read that returned data
	rtt      atomic.Int64 // minimum round-trip time seen, in nanoseconds
	sameHost atomic.Bool  // conn joins two ends on this machine (see sameHost); set once the preface arrived
	rttCount atomic.Int32 // number of answers to pings
	rttKept  atomic.Int32 // number of them that counted toward rtt
	pingMu   sync.Mutex
	pings    map[uint32]pingWait
	nextPing uint32
	ownPings [8]uint32 // the session's latest own (keepalive, RTT) pings, a ring
	ownNext  int       // next slot of ownPings
	forgot   int       // pings forgotten unanswered (an own one past the ring, a PingContext given up): answers the peer may still send

	// Peer misbehaviour accounting; reader goroutine only.
	glitchTAT   int64        // session clock at which the glitch budget is full again
	glitches    int          // glitches so far
	credited    int64        // sum of the peer's session WINDOW_UPDATE increments
	updates     int64        // number of them
	goAwayID    uint32       // last stream ID of the peer's latest GOAWAY
	lateFrames  atomic.Int64 // frames for finished streams still excused (see excuseLate)
	peakStreams atomic.Int32 // the most streams open at once (see allowLate)

	writeShut atomic.Bool   // Shutdown half-closed the connection: write nothing more
	closing   atomic.Bool   // Close began, or Shutdown's half-close: Writes and OpenStream fail, as after Close
	closingCh chan struct{} // closed when closing is set: a waiting Accept fails
	failing   chan struct{} // closed when the session fails, or earlier, when failTellingPeer begins telling the peer of its protocol error: Accept and PingContext fail
	errorOnce sync.Once
	hsTimer   *time.Timer
	wTimer    *time.Timer  // WriteTimeout; see writeTimerFired
	wBusy     atomic.Bool  // the writer goroutine is blocked in a write
	wProgress atomic.Int64 // session clock when that write last made progress
	wQueue    func() int   // the socket's send queue length, or nil (see newSendQueueProbe)
	wQueued   atomic.Int64 // its length when the timer last looked during this write, or -1
	ka        keepalive

	// Lifecycle.
	failOnce   sync.Once
	err        atomic.Pointer[error]
	dying      chan struct{} // closed when the session fails
	writerDone chan struct{}
	done       chan struct{} // closed when both goroutines have exited
}

type pingWait struct {
	sent int64         // session clock
	ch   chan struct{} // nil for the session's own pings
}

// Client starts the client side of a session on conn and returns at once:
// the handshake needs no round trip, so streams opened right away carry data
// in the first packet. If the peer's preface is missing or wrong, the
// session fails within HandshakeTimeout with an error wrapping ErrHandshake,
// which Err and every stream operation then report. The only errors
// returned are for an invalid cfg. Client owns conn from then on and closes
// it when the session ends. If conn wraps a connection that it exposes
// with NetConn, as *tls.Conn does, the session closes that inner connection
// before conn, so a wrapper's Close must not need to write (a *tls.Conn's
// would send close_notify under a lock that a peer not reading can hold
// for good; Session.Close sends it earlier, at its half-close). While it
// tells a peer of its protocol error (see ErrProtocol), the session also
// reads and discards from the TCP socket under such a wrapper. If conn is
// a net.Conn, its addresses are the session's and its streams'.
func Client(conn io.ReadWriteCloser, cfg *Config) (*Session, error) {
	return newSession(conn, cfg, true)
}

// Server starts the server side of a session on conn, as Client does for the
// client side. The two sides differ only in the stream IDs they use (client
// odd, server even), so both can open streams without colliding.
func Server(conn io.ReadWriteCloser, cfg *Config) (*Session, error) {
	return newSession(conn, cfg, false)
}

func newSession(conn io.ReadWriteCloser, cfg *Config, client bool) (*Session, error) {
	s, batch, err := buildSession(conn, cfg, client)
	if err != nil {
		return nil, err
	}
	if s.cfg.HandshakeTimeout > 0 {
		s.hsTimer = time.AfterFunc(s.cfg.HandshakeTimeout, func() {
			s.fail(fmt.Errorf("%w: no preface from the peer within %v", ErrHandshake, s.cfg.HandshakeTimeout))
		})
	}
	if s.cfg.WriteTimeout > 0 {
		s.wTimer = time.AfterFunc(time.Hour, s.writeTimerFired)
		s.wTimer.Stop()
		s.wQueue = newSendQueueProbe(conn)
	}
	s.startKeepalive()
	go s.readLoop()
	s.startWriter(batch)
	return s, nil
}

// buildSession makes a session and its first batch without starting it.
func buildSession(conn io.ReadWriteCloser, cfg *Config, client bool) (*Session, []byte, error) {
	c, err := cfg.resolve()
	if err != nil {
		return nil, nil, err
	}
	s := &Session{
		conn:       conn,
		cfg:        c,
		client:     client,
		start:      time.Now(),
		wake:       make(chan struct{}, 1),
		flushReq:   make(chan chan struct{}),
		streams:    make(map[uint32]*Stream),
		peer:       assumedSettings,
		acceptCh:   make(chan *Stream, c.AcceptBacklog),
		pings:      make(map[uint32]pingWait),
		dying:      make(chan struct{}),
		closingCh:  make(chan struct{}),
		failing:    make(chan struct{}),
		goingAway:  make(chan struct{}),
		peerKnown:  make(chan struct{}),
		writerDone: make(chan struct{}),
		done:       make(chan struct{}),
	}
	s.br = bufio.NewReaderSize(connReader{s}, max(64<<10, c.MaxFrameSize+headerSize))
	s.rt.init(conn)
	s.nextID = 2
	if client {
		s.nextID = 1
	}
	s.sendWindow.Store(int64(assumedSettings.sessionWindow))
	s.sendFrameSize.Store(uint32(assumedSettings.maxFrameSize))
	s.recvCredit.Store(int64(c.SessionWindow))
	s.lowBudget = crowdingMargin(int64(c.InitialStreamWindow), int64(c.SessionWindow))

	// The first batch: our preface, then a ping that gives a first RTT
	// sample for window autotuning.
	batch := make([]byte, 0, maxBatch+maxFrameSizeLimit+2*headerSize)
	batch = appendPreface(batch, settings{
		streamWindow:  uint32(c.InitialStreamWindow),
		sessionWindow: uint32(c.SessionWindow),
		maxFrameSize:  uint32(c.MaxFrameSize),
		maxStreams:    uint32(c.MaxIncomingStreams),
	})
	batch = appendHeader(batch, frameHeader{typ: framePing, length: s.registerPing(nil)})
	return s, batch, nil
}

// knowsPeer reports whether the peer's preface has been read and its
// settings apply (see peerKnown).
func (s *Session) knowsPeer() bool {
	select {
	case <-s.peerKnown:
		return true
	default:
		return false
	}
}

// clock is the session's monotonic time in nanoseconds.
func (s *Session) clock() int64 { return int64(time.Since(s.start)) }

// Err returns nil while the session is alive (but for the moment it takes
// to tell a peer of its protocol error: then Err, and every call, already
// report that error while the session sends its GOAWAY, for up to a second,
// before Done is closed), then the reason it ended: an
// error matching net.ErrClosed after Close, or one wrapping the cause
// (ErrProtocol, ErrHandshake, ErrKeepAliveTimeout, ErrWriteTimeout, ErrGoAway
// after the peer's graceful shutdown, io.ErrUnexpectedEOF when the peer
// dropped the connection, also after its GOAWAY if streams were still
// open, or the connection's own error, which matches ErrGoAway only if it
// came after the peer's GOAWAY with no stream left open).
func (s *Session) Err() error {
	if p := s.err.Load(); p != nil {
		return *p
	}
	return nil
}

// Done returns a channel closed when the session has ended and its
// goroutines have exited.
func (s *Session) Done() <-chan struct{} { return s.done }

// IsClient reports whether this is the client side of the session.
func (s *Session) IsClient() bool { return s.client }

// unfinishedStreams counts the streams whose ends the peer may still send
// or wait for: those in the table but the ones it reset that the
// application has not closed yet.
func (s *Session) unfinishedStreams() int {
	s.smu.Lock()
	defer s.smu.Unlock()
	return len(s.streams) - int(s.heldResets.Load())
}

// NumStreams returns the number of streams not yet finished, in either
// direction, including ones waiting to be accepted and ones the peer reset
// that the application has not closed yet.
func (s *Session) NumStreams() int {
	s.smu.Lock()
	defer s.smu.Unlock()
	return len(s.streams)
}

// LocalAddr returns the connection's local address if it is a net.Conn.
func (s *Session) LocalAddr() net.Addr {
	if c, ok := s.conn.(interface{ LocalAddr() net.Addr }); ok {
		return c.LocalAddr()
	}
	return sessionAddr{}
}

// RemoteAddr returns the connection's remote address if it is a net.Conn.
func (s *Session) RemoteAddr() net.Addr {
	if c, ok := s.conn.(interface{ RemoteAddr() net.Addr }); ok {
		return c.RemoteAddr()
	}
	return sessionAddr{}
}

// Addr returns LocalAddr, for net.Listener.
func (s *Session) Addr() net.Addr { return s.LocalAddr() }

// sessionAddr stands for the address of a connection that has none.
type sessionAddr struct{}

func (sessionAddr) Network() string { return "tcpchan" }
func (sessionAddr) String() string  { return "tcpchan" }

// OpenStream opens a new stream to the peer. It never waits for the network:
// the SYN is queued at once (with the first data, if it is written by then),
// and data follows without waiting for an answer. If the peer refuses the
// stream (its limit or backlog is full), the stream's Read and Write fail
// with ErrStreamRefused; while this side already has as many streams open as
// the peer's MaxIncomingStreams (announced in its preface) allows,
// OpenStream itself fails at once with an error matching ErrStreamRefused,
// sending nothing. It fails with ErrGoAway after Shutdown or the peer's
// GOAWAY (also matching net.ErrClosed once Shutdown closes the session),
// with an error matching net.ErrClosed from the moment Close begins, and
// with the session's error once the session has ended.
func (s *Session) OpenStream() (*Stream, error) {
	if err := s.Err(); err != nil {
		s.smu.Lock()
		shut := s.goAwaySent
		s.smu.Unlock()
		if shut && err == errSessionClosed {
			// Shutdown closed the session: both hold, as during its linger.
			return nil, fmt.Errorf("%w: Shutdown was called: %w", ErrGoAway, errSessionClosed)
		}
		return nil, err
	}
	s.smu.Lock()
	switch {
	case s.closing.Load() && s.goAwaySent:
		// Closing after Shutdown (its half-close and linger): both hold.
		s.smu.Unlock()
		return nil, fmt.Errorf("%w: Shutdown was called: %w", ErrGoAway, errSessionClosed)
	case s.closing.Load():
		s.smu.Unlock()
		return nil, errSessionClosed
	case s.goAwaySent:
		s.smu.Unlock()
		return nil, fmt.Errorf("%w: Shutdown was called", ErrGoAway)
	case s.goAwayRecv:
		s.smu.Unlock()
		return nil, fmt.Errorf("%w: the peer sent GOAWAY", ErrGoAway)
	case s.nextID > maxStreamID:
		s.smu.Unlock()
		return nil, fmt.Errorf("%w: stream IDs exhausted", ErrGoAway)
	case s.atPeerLimitLocked():
		s.smu.Unlock()
		// The peer would refuse it, and count each refusal against
		// this side as a glitch: a retry loop would end the session.
		return nil, fmt.Errorf("%w: this side has the %d streams open that the peer allows", ErrStreamRefused, s.peer.maxStreams)
	}
	id := s.nextID
	s.nextID += 2
	st := newStream(s, id, int64(s.peer.streamWindow))
	st.state = stSynPending
	s.streams[id] = st
	s.countStreamLocked()
	s.outgoing++
	// Queued for the writer before smu is released, so that SYNs go out in
	// the order of their IDs however many goroutines open streams: the
	// peer rejects a SYN not above the previous one.
	st.mu.Lock()
	s.scheduleLocked(st)
	st.mu.Unlock()
	s.smu.Unlock()
	return st, nil
}

// Dial opens a stream as OpenStream does, returned as a net.Conn.
func (s *Session) Dial() (net.Conn, error) {
	st, err := s.OpenStream()
	if err != nil {
		return nil, err
	}
	return st, nil
}

// DialContext opens a stream as OpenStream does. Its signature matches
// net.Dialer.DialContext, so a session can serve as the dial function of
// http.Transport and similar; network and address are ignored, as every
// stream goes to the session's peer.
func (s *Session) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.Dial()
}

// AcceptStream waits for the next stream the peer opens. From the moment
// Close begins it fails with an error matching net.ErrClosed (streams the
// peer opens from then on are refused). When the session has ended
// otherwise, or the peer broke the protocol (the session then ends once
// it has told the peer, within a second), it first returns the streams
// still waiting, since what they received before the end (complete
// requests, perhaps) is still theirs to read, and then the session's
// error. Streams the peer reset before they
// were accepted are skipped, unless the peer had finished them with FIN
// first: their data is then returned whole, followed by io.EOF, and
// their Writes fail with ErrStreamReset.
func (s *Session) AcceptStream() (*Stream, error) {
	return s.acceptStream(nil)
}

// acceptStream is AcceptStream, returning errListenerClosed once stop is
// closed (a nil stop never is).
func (s *Session) acceptStream(stop <-chan struct{}) (*Stream, error) {
	for {
		if s.Err() == errSessionClosed || s.closing.Load() {
			// From the moment Close begins: a stream accepted now could
			// not write.
			return nil, errSessionClosed
		}
		var st *Stream
		s.lurk()
		select {
		case st = <-s.acceptCh:
		case <-stop:
			s.doneLurking()
			return nil, errListenerClosed
		case <-s.closingCh:
			s.doneLurking()
			return nil, errSessionClosed
		case <-s.failing:
			// Ended, or the peer broke the protocol (the session ends
			// once the GOAWAY telling it is out, up to a second later):
			// nothing more will be accepted.
			select {
			case st = <-s.acceptCh:
			default:
				s.doneLurking()
				return nil, s.Err()
			}
		}
		s.doneLurking()
		// A stream the peer reset is skipped unless its FIN came first:
		// what the FIN completed stays readable (see Stream.Read), so a
		// request sent whole and then abandoned is still served.
		st.mu.Lock()
		dead := st.has(stResetByPeer) && !st.has(stRecvFIN)
		st.mu.Unlock()
		if !dead {
			return st, nil
		}
		st.Close() // frees its place under MaxIncomingStreams
	}
}

// Accept waits for the next stream the peer opens, as AcceptStream does,
// returned as a net.Conn: a Session is a net.Listener.
func (s *Session) Accept() (net.Conn, error) {
	st, err := s.AcceptStream()
	if err != nil {
		return nil, err
	}
	return st, nil
}

// closeFlushTimeout bounds how long Close waits for queued data to drain and
// for the peer to close its end.
const closeFlushTimeout = time.Second

// Close closes the session and waits for its goroutines to exit. Like
// closing a TCP socket, it first lets the writer send what is already queued
// (data of Writes that returned, FINs of closed streams, control frames);
// then it half-closes the connection and waits for the peer to close its
// end, so that nothing in flight is destroyed by a reset. Both steps
// together take at most one second; then the connection is closed. Writes
// and OpenStream fail from the moment Close begins (a Write waiting for the
// peer's credit at once), other blocked calls on the session's streams when
// the connection is closed, with an error matching net.ErrClosed; the
// peer's with an error wrapping
// io.ErrUnexpectedEOF. Streams still open are cut off: use Shutdown to let
// them finish. If the session is ending because the peer broke the
// protocol, Close waits, within the same second, for the GOAWAY that tells
// the peer to go out. Close returns nil, also when the session had already
// ended.
func (s *Session) Close() error {
	// From here Writes fail as they will once the session has ended: one
	// taken during the flush and the wait below would report success for
	// data the half-closed connection never carries.
	s.beginClosing()
	ctx, cancel := context.WithTimeout(context.Background(), closeFlushTimeout)
	defer cancel()
	if s.Err() == nil && !s.writeShut.Load() {
		s.closeGracefully(ctx, ctx)
	}
	if s.Err() != nil {
		// Failing, perhaps since during the flush above:
		// failTellingPeer may still be getting its GOAWAY out, which
		// it ends within errorGoAwayTimeout. Closing the connection
		// now would lose it.
		select {
		case <-s.dying:
		case <-ctx.Done():
		}
	}
	s.fail(errSessionClosed)
	<-s.done
	return nil
}

// closeGracefully writes what is queued (until flushCtx ends), then, like
// net/http's closeWriteAndWait, half-closes the connection and waits (until
// lingerCtx ends) for the peer to close its end. Closing at once instead
// would make the kernel reset the connection if anything the peer sent is
// still unread here, and a reset can destroy data the peer has received but
// not yet read.
func (s *Session) closeGracefully(flushCtx, lingerCtx context.Context) error {
	if err := s.flush(flushCtx); err != nil {
		return err
	}
	cw, ok := s.conn.(interface{ CloseWrite() error })
	if !ok {
		return nil
	}
	if err := s.Err(); err != nil {
		// The peer's protocol error: the half-close would drop the
		// GOAWAY that failTellingPeer is getting out.
		return err
	}
	s.beginClosing() // before writeShut: Writes fail rather than go nowhere
	s.writeShut.Store(true)
	if inner := innerConn(s.conn); inner != nil {
		// A wrapper writes under its own lock, and crypto/tls also
		// from inside Read (its answer to a peer's KeyUpdate) with no
		// deadline: a peer that does not read would hold CloseWrite's
		// close_notify, and so Close, for good. A past write deadline
		// is not enough: closeNotify sets its own, 5 s, once it has
		// the lock. The socket is closed when the linger ends, as the
		// caller closes the session then anyway (the reader goroutine
		// sees errSessionClosed: writeShut is set).
		// Once lingerCtx is done, not at its deadline by a timer of our
		// own: that could fire a moment before the caller's ctx took
		// effect, and Shutdown returned nil for a ctx that had ended.
		stop := context.AfterFunc(lingerCtx, func() { inner.Close() })
		defer stop()
	}
	cw.CloseWrite()
	s.lurk() // for the peer's end
	select {
	case <-s.dying:
	case <-lingerCtx.Done():
	}
	s.doneLurking()
	return nil
}

// beginClosing makes Writes and Accept fail from now on, waking those
// already waiting (Writes for credit): nothing they wait for would go out,
// and they would otherwise wait until the session ends, after Close's
// linger.
func (s *Session) beginClosing() {
	if s.closing.Swap(true) {
		return
	}
	close(s.closingCh)
	s.smu.Lock()
	for _, st := range s.streams {
		st.mu.Lock()
		if st.has(stWriting) {
			st.wcond.Broadcast()
			s.interruptRead(st) // a Write reading the connection for credit
		}
		st.mu.Unlock()
	}
	s.smu.Unlock()
}

// Shutdown closes the session gracefully, as http.Server.Shutdown does: it
// sends GOAWAY with the highest stream ID the peer opened, refuses streams
// the peer opens after that, fails OpenStream with ErrGoAway, waits for the
// open streams to finish (both directions closed; a stream the peer reset
// counts until the application has closed it, as in NumStreams), flushes
// what is queued, and then closes as Close does, half-closing the
// connection and waiting for the peer to close its end. If ctx ends
// before the streams have finished and the queue is flushed, or had ended
// before the call, Shutdown returns ctx.Err() and leaves the session open;
// call Close to end it. If ctx ends later, while Shutdown waits for the
// peer to close its end, the session is closed all the same and Shutdown
// returns ctx.Err(). If the session ends otherwise while streams are open
// (the peer closed the connection, an error), Shutdown returns the
// session's error; after Close, nil.
func (s *Session) Shutdown(ctx context.Context) error {
	s.goAway()

	// Poll like http.Server.Shutdown: streams finish at the peer's pace and
	// nothing else needs to be woken for it.
	wait := time.Millisecond
	timer := time.NewTimer(wait)
	defer timer.Stop()
waiting:
	for s.NumStreams() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.dying:
			if s.unfinishedStreams() == 0 {
				// The last stream finished before the session ended
				// (the peer's own Shutdown closed the connection right
				// after): nothing was cut off.
				break waiting
			}
			// Streams still open were cut off.
			err := s.Err()
			s.Close()
			if err == errSessionClosed {
				return nil
			}
			return err
		case <-timer.C:
			wait = min(2*wait, 100*time.Millisecond)
			timer.Reset(wait)
		}
	}
	linger, cancel := context.WithTimeout(ctx, closeFlushTimeout)
	defer cancel()
	if err := s.closeGracefully(ctx, linger); err != nil && ctx.Err() != nil && !s.writeShut.Load() {
		return err // the queue is not flushed: the session stays open
	}
	s.Close()
	return ctx.Err()
}

// goAway sends GOAWAY, once: the peer opens no more streams, and the
// session refuses those it opens meanwhile (see streamForData).
func (s *Session) goAway() {
	s.smu.Lock()
	if !s.goAwaySent && s.Err() == nil {
		s.goAwaySent = true
		s.queueControl(frameHeader{typ: frameGoAway, streamID: s.lastPeerID, length: uint32(codeNoError)})
	}
	s.smu.Unlock()
}

// refuseIncoming sends GOAWAY and refuses the streams waiting for Accept
// (their openers see ErrStreamRefused: nothing was processed, a retry is
// safe). None joins the backlog after GOAWAY: streamForData refuses them
// under the same lock.
func (s *Session) refuseIncoming() {
	s.goAway()
	for {
		select {
		case st := <-s.acceptCh:
			st.refuse()
		default:
			return
		}
	}
}

// flush waits until the writer has written everything queued, ctx ends
// (returning its error) or the session ends.
func (s *Session) flush(ctx context.Context) error {
	// An ended ctx flushes nothing, every time: the select below would
	// pick at random between it and a writer ready to flush, and Shutdown
	// would then sometimes close the session it promises to leave open.
	if err := ctx.Err(); err != nil {
		return err
	}
	flushed := make(chan struct{})
	select {
	case s.flushReq <- flushed:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.dying:
		return s.Err()
	}
	select {
	case <-flushed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.dying:
		return s.Err()
	}
}

// Ping is PingContext with context.Background(): it waits for the answer
// as long as the session lives, which a peer that keeps the session alive
// but never answers pings makes forever.
func (s *Session) Ping() (time.Duration, error) {
	return s.PingContext(context.Background())
}

// PingContext sends a ping and returns the time until the peer's answer.
// It fails with the session's error if the session ends first (or the
// peer breaks the protocol), and with ctx.Err() if ctx ends first (an
// answer arriving later is ignored).
func (s *Session) PingContext(ctx context.Context) (time.Duration, error) {
	ch := make(chan struct{})
	id := s.registerPing(ch)
	start := time.Now()
	s.queueControl(frameHeader{typ: framePing, length: id})
	s.lurk()
	defer s.doneLurking()
	var err error
	select {
	case <-ch:
		return time.Since(start), nil
	case <-s.failing:
		err = s.Err()
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.pingMu.Lock()
	if _, ok := s.pings[id]; ok {
		delete(s.pings, id)
		s.forgot++
	}
	s.pingMu.Unlock()
	return 0, err
}

// rttStartSamples is how many round-trip samples a session takes at start
// to learn the round-trip time: the first includes both sessions' start-up.
// It sends at most rttStartPings pings for them.
const (
	rttStartSamples = 3
	rttStartPings   = 8
)

// startupPingsDone reports whether the session has its start-up
// round-trip samples, or has had answers to all the pings it sends for
// them.
func (s *Session) startupPingsDone() bool {
	return s.rttKept.Load() >= rttStartSamples || s.rttCount.Load() >= rttStartPings
}

// minAutotuneRTT is the shortest round trip at which stream windows grow.
// Below it the initial window already carries over 256 MB/s per stream, and
// the measured round trip is mostly goroutine scheduling, not the link:
// growing windows there would only queue more bytes ahead of other streams'
// frames and raise their latency.
const minAutotuneRTT = int64(time.Millisecond)

// loneStreamWindow is the window a stream grows to on a short link while it
// is the only stream in its session, or the others are quiet (see
// othersQuiet). There a window of InitialStreamWindow is enough for the
// link, but not for the scheduling delays of the goroutines at both ends: a
// lone bulk stream on loopback waited for credit and moved 4.0-4.2 GB/s
// with 256 KiB, 5.4-5.6 GB/s with 1 MiB (raw TCP 4.6-5.5 GB/s;
// BenchmarkBulk/write=32KiB, with quarter-window updates). With other
// streams active it stays at InitialStreamWindow, whose queue is what their
// frames wait behind (a 512 KiB window raised the p99 of a ping beside a
// bulk stream from 125 to 200 µs: BenchmarkPingPongUnderBulk).
const loneStreamWindow = 1 << 20

// activeSpan is how long after a stream last received data it still counts
// as active (and at least until the next window update of a stream beside
// it: see othersQuiet), so that a stream beside it keeps
// InitialStreamWindow on a short link: its frames would wait behind that
// stream's queue. Streams quiet for longer (a pooled keep-alive
// connection, a control stream) do not hold a bulk transfer beside them to
// InitialStreamWindow, which cost it about an eighth of its rate on
// loopback (BenchmarkBulkBesideIdle: README gives the runs). A stream that
// wakes up after that waits behind the larger window until the next window
// update shrinks it, as a stream opened beside a lone bulk stream does.
const activeSpan = int64(100 * time.Millisecond)

// activeGrain is how stale activeAt may get while the same stream keeps
// receiving: it spares a store per frame run.
const activeGrain = int64(time.Millisecond)

// noteData records that the stream id received a DATA frame. Only the read
// token's holder calls it.
func (s *Session) noteData(id uint32) {
	now := s.lastRecv.Load()
	if s.activeID.Load() == id {
		if now-s.activeAt.Load() >= activeGrain {
			s.activeAt.Store(now)
		}
		return
	}
	s.otherAt.Store(s.activeAt.Load())
	s.activeID.Store(id)
	s.activeAt.Store(now)
}

// othersQuiet reports whether no stream but id has received data since the
// session clock reading since (of a read of the connection, as noteData
// stamps a frame with its read's time, and a frame read before since may
// be handled after it), nor within activeSpan of now. Time alone
// would not do where a window takes longer than activeSpan to drain (a
// slow link, or -race): the others' data waits behind it, and arrives
// after more than activeSpan even while they send all the time.
func (s *Session) othersQuiet(id uint32, since, now int64) bool {
	at := s.activeAt.Load()
	if s.activeID.Load() == id {
		at = s.otherAt.Load()
	}
	// at may lag the other stream's last frame by activeGrain: data noted
	// within activeGrain before since may have come after it.
	return at == 0 || at < since-activeGrain && now-at >= activeSpan
}

// sameHost reports whether conn joins two ends on this machine, judging by
// its remote address: loopback, a Unix socket, or an address whose network
// is "pipe" (net.Pipe). Wrappers that report the address of what they wrap
// (TLS) count too. There a window update arrives within microseconds, while
// the round trip that pings measure is mostly goroutine scheduling, which
// under load takes as long as a LAN's, so the round trip cannot tell such
// a link from a LAN whose updates do take that long. A tunnel or sidecar
// proxy that ends on loopback (ssh -L, a service mesh) passes for the same
// host although the peer is not; over a LAN with round trips under a
// millisecond, a stream that its window limits may then move less.
func sameHost(conn io.ReadWriteCloser) bool {
	c, ok := conn.(interface{ RemoteAddr() net.Addr })
	if !ok {
		return false
	}
	switch a := c.RemoteAddr().(type) {
	case *net.TCPAddr:
		return a != nil && a.IP.IsLoopback()
	case *net.UnixAddr:
		return a != nil
	case nil:
		return false
	default:
		return a.Network() == "pipe"
	}
}

// minRTT returns the minimum round-trip time measured, or 0 if none.
func (s *Session) minRTT() int64 { return s.rtt.Load() }

func (s *Session) registerPing(ch chan struct{}) uint32 {
	s.pingMu.Lock()
	defer s.pingMu.Unlock()
	s.nextPing++
	if ch == nil {
		// The session's own pings need only their latest answers:
		// forgetting older ones keeps the table small when the peer never
		// answers.
		if _, ok := s.pings[s.ownPings[s.ownNext]]; ok {
			delete(s.pings, s.ownPings[s.ownNext])
			s.forgot++
		}
		s.ownPings[s.ownNext] = s.nextPing
		s.ownNext = (s.ownNext + 1) % len(s.ownPings)
	}
	s.pings[s.nextPing] = pingWait{sent: s.clock(), ch: ch}
	return s.nextPing
}

// pingAcked handles the answer to ping id; it reports false if no such
// ping is waiting, and none forgotten unanswered may be answered late (a
// peer answers each ping once: the answers to those forgotten cost no
// glitch, as many as were forgotten).
func (s *Session) pingAcked(id uint32) bool {
	s.pingMu.Lock()
	w, ok := s.pings[id]
	delete(s.pings, id)
	late := !ok && s.forgot > 0
	if late {
		s.forgot--
	}
	s.pingMu.Unlock()
	if !ok {
		return late
	}
	// The minimum is the round trip without queueing, which is what the
	// window autotuning needs; samples taken under load only add queueing. An
	// answer read while this end was behind queued behind data this end was
	// slow to read, often for milliseconds. Counted, such samples made
	// loopback under load pass for a long link, whose grown windows left 16
	// bulk streams finishing up to 9 times apart, so they are left out: an
	// answer counts only if the read that brought it and the one before, or
	// the two before it, took all there was. The latter is an answer in a
	// full read right after two that drained the socket: it arrived after the
	// last drain, and left out, a sender that writes data behind each answer
	// (the credit that came with the ping) had every sample left out, and a
	// long link passed for a short one. Reads tell that on a connection whose
	// Read returns all that has arrived, as TCP and Unix sockets do; TLS
	// returns a record at a time, so there (on Linux) the socket under it
	// tells instead: an answer with half a read buffer or more still waiting
	// in it is left out too. Without this, a receiving session over TLS on
	// loopback took itself for one on a long link in 12 and 14 of 30 starts
	// under 16 bulk streams; with it, in 2 and 4 (BenchmarkTLSStartupRTT).
	sample := max(s.clock()-w.sent, 1)
	s.rttCount.Add(1)
	if max(s.rt.drainedRuns, s.rt.drainedPrev) >= 2 && (s.rt.backlog == nil || s.rt.backlog() < s.br.Size()/2) {
		if old := s.rtt.Load(); old == 0 || sample < old {
			s.rtt.Store(sample)
		}
		s.rttKept.Add(1)
	}
	// The first sample includes both sessions' start-up; a few more taken
	// right after it measure the link itself, up to rttStartPings while
	// samples are left out.
	if !s.startupPingsDone() {
		s.queueControl(frameHeader{typ: framePing, length: s.registerPing(nil)})
	}
	if w.ch != nil {
		close(w.ch)
	} else {
		s.keepaliveAnswered(id)
	}
	return true
}

// queueControl queues a frame to go out ahead of stream data.
func (s *Session) queueControl(h frameHeader) {
	s.wmu.Lock()
	s.sched.ctrl = append(s.sched.ctrl, h)
	s.wmu.Unlock()
	s.wakeWriter()
}

// queueReply queues a control frame the peer's own frames made necessary.
// If the peer is not reading them, the queue would grow without bound, so
// past MaxQueuedControlFrames it returns an error that closes the session.
func (s *Session) queueReply(h frameHeader) error {
	s.wmu.Lock()
	if s.sched.answers >= s.cfg.MaxQueuedControlFrames {
		s.wmu.Unlock()
		return protocolErrorf("more than %d answers queued: the peer sends pings or opens streams faster than it reads the answers", s.cfg.MaxQueuedControlFrames)
	}
	s.sched.ctrl = append(s.sched.ctrl, h)
	s.sched.answers++
	s.wmu.Unlock()
	s.wakeWriter()
	return nil
}

func (s *Session) wakeWriter() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// consumed credits n bytes the application read back to the peer's
// session window, in batches of a quarter window.
func (s *Session) consumed(n int) { s.credit(n, int64(s.cfg.SessionWindow/4)) }

// discarded credits n bytes dropped unread (a closed, reset, refused or
// read-closed stream) back soon, so that a peer waiting for session credit
// is not held up long by bytes nobody will read: in updates of
// discardBatch (a quarter window if that is less), not one per KiB, which
// would fill the control queue while the writer is blocked.
func (s *Session) discarded(n int) {
	s.credit(n, int64(min(discardBatch, s.cfg.SessionWindow/4)))
}

// discardBatch is the session credit a discard sends back at once.
const discardBatch = 64 << 10

func (s *Session) credit(n int, batch int64) {
	if n <= 0 {
		return
	}
	// A peer that has used up its session credit waits for this one:
	// credit held back until a batch is full would stall it for good
	// when streams whose readers stall hold the rest of the window.
	if u := s.recvUnacked.Add(int64(n)); u < batch && (u < bytesPerUpdate || !s.peerStarved.Load()) {
		return
	}
	s.flushCredit()
}

// flushCredit sends the session credit consumed so far.
func (s *Session) flushCredit() {
	inc := s.recvUnacked.Swap(0)
	if inc <= 0 {
		return
	}
	s.recvCredit.Add(inc)
	s.peerStarved.Store(false)
	s.wmu.Lock()
	s.queueUpdateLocked(&s.sched.sessionUpdateAt, 0, inc)
	s.wmu.Unlock()
	s.wakeWriter()
}

// spend counts n bytes of DATA against the peer's session credit and
// returns by how much they overrun it. A peer left with no credit is
// starved (see Stream.Close) until credit clears the flag; the credit is
// looked at again after the flag is set, because a credit that ran
// between the two would have cleared it first and left it stuck.
func (s *Session) spend(n int) (over int64) {
	s.recvSpent += int64(n)
	over = s.recvSpent - s.recvCredit.Load()
	if -over < s.lowBudget {
		// Low until credit brings the budget left back to lowBudget;
		// compared with recvCredit when asked, so credit that came
		// meanwhile counts, however much it was.
		s.lowUntil.Store(s.recvSpent + s.lowBudget)
	}
	if over == 0 && n > 0 {
		s.peerStarved.Store(true)
		if s.recvSpent < s.recvCredit.Load() {
			s.peerStarved.Store(false)
		} else if s.recvUnacked.Load() >= bytesPerUpdate {
			// Read before the peer ran out, and held back for a full
			// batch: the peer now waits for it (see credit).
			s.flushCredit()
		}
	}
	return over
}

// maxGrownWindow is the most a stream's window grows to: MaxStreamWindow,
// but no more than half the session window, so that one stream whose
// reader stalls leaves the others credit (unless InitialStreamWindow
// itself is more, which the configuration chose).
func (s *Session) maxGrownWindow() int64 {
	return int64(max(s.cfg.InitialStreamWindow, min(s.cfg.MaxStreamWindow, s.cfg.SessionWindow/2)))
}

// growers counts the busy streams on a long link (see Stream.busy), with
// the largest window among them, so that streams sharing the link converge
// on equal windows.
type growers struct {
	mu    sync.Mutex
	epoch uint32 // a stream counted in this epoch has Stream.growEpoch == epoch
	start int64  // session clock when the epoch began
	cur   growerCount
	prev  growerCount // the epoch before, if it ended less than an epoch ago
}

type growerCount struct {
	n       int32
	largest int64
}

// countGrower counts st, with its window, among the busy streams if it is
// busy, and returns how many there are (at least 1) and the largest window
// among them. It counts per window update, not per frame, in epochs of two
// round trips (at least 10 ms), in which every stream its window limits
// updates at least once. st.mu is held.
func (s *Session) countGrower(st *Stream, now, rtt int64) (n int32, largest int64) {
	g := &s.growers
	span := max(2*rtt, int64(10*time.Millisecond))
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.epoch == 0 || now-g.start >= span {
		g.prev = growerCount{}
		if now-g.start < 2*span {
			g.prev = g.cur
		}
		g.epoch++
		if g.epoch == 0 {
			g.epoch = 1 // 0 is a stream's "never counted"
		}
		g.cur = growerCount{}
		g.start = now
	}
	if st.busy {
		if st.growEpoch != g.epoch {
			st.growEpoch = g.epoch
			g.cur.n++
		}
		g.cur.largest = max(g.cur.largest, st.recvWindow)
	}
	return max(g.cur.n, g.prev.n, 1), max(g.cur.largest, g.prev.largest)
}

// reserveGrowth takes up to n bytes of the budget for growing stream
// windows, of which at most budget in all, and returns how many it took.
func (s *Session) reserveGrowth(n, budget int64) int64 {
	budget = min(budget, int64(s.cfg.SessionWindow/2))
	for {
		taken := s.windowGrowth.Load()
		k := min(n, budget-taken)
		if k <= 0 {
			return 0
		}
		if s.windowGrowth.CompareAndSwap(taken, taken+k) {
			return k
		}
	}
}

// removeStream forgets a finished stream.
func (s *Session) removeStream(st *Stream) {
	s.smu.Lock()
	if s.streams[st.id] != st {
		s.smu.Unlock()
		return
	}
	s.allowLate(lateFramesPerStream) // before the reader can find the stream gone
	delete(s.streams, st.id)
	s.numStreams.Add(-1)
	s.lastFound.CompareAndSwap(st, nil)
	if s.isPeerID(st.id) {
		s.incoming--
	} else {
		s.outgoing--
	}
	// heldResets changes under smu with the table, so that
	// unfinishedStreams never sees one without the other.
	st.mu.Lock()
	st.state |= stRemoved
	if st.has(stHeldReset) {
		s.heldResets.Add(-1)
	}
	if st.has(stOrphan) {
		s.orphans.Add(-1)
	}
	s.smu.Unlock()
	st.stopDeadlinesLocked()
	st.releaseGrowthLocked()
	st.mu.Unlock()
	if f := s.streamGone.Load(); f != nil {
		(*f)()
	}
}

// maxOrphans is how many streams this side opened and the application
// closed may wait for the peer to finish them (its FIN or RST). Incoming
// streams are bounded by MaxIncomingStreams, and this side's by the limit
// the peer announces, which a hostile peer sets to 2^32-1 before never
// finishing any: without a bound of its own the session would keep every
// stream closed here (about 350 bytes each). Past it, Close resets the
// stream right behind its FIN, as Linux resets orphaned TCP sockets past
// tcp_max_orphans; a peer that announces no more than this
// (MaxIncomingStreams' default) never meets it.
const maxOrphans = 8192

// orphan counts st, which this side opened, as closed by the application
// and waiting for the peer, unless maxOrphans are already: then it reports
// false. st.mu is held.
func (s *Session) orphan(st *Stream) bool {
	if s.orphans.Add(1) > maxOrphans {
		s.orphans.Add(-1)
		return false
	}
	st.state |= stOrphan
	return true
}

func (s *Session) isPeerID(id uint32) bool {
	return id&1 == 1 != s.client
}

// failTellingPeer ends the session for err, as fail does; if err is the
// peer's protocol error, it first sends the peer a GOAWAY with
// PROTOCOL_ERROR, so that the peer's session ends with ErrGoAway naming
// the cause instead of with a connection closed without a word. The error
// is the session's from the start (a Read or Write that met it while
// holding the read token stored it already), so that no more data is
// framed and calls fail with it; the writer then has errorGoAwayTimeout
// to send the GOAWAY behind what it had begun, and nothing queued after
// the GOAWAY follows it (see appendControlLocked). A peer that does not
// read (its answers fill the control queue) is not sent one. Only the
// reader goroutine calls it, holding the read token and no lock, so that
// nothing more is read meanwhile.
func (s *Session) failTellingPeer(err error) {
	if errors.Is(err, ErrProtocol) {
		s.err.CompareAndSwap(nil, &err)
		select {
		case <-s.dying:
		default:
			// Blocked Reads and Writes fail with the error now, not
			// when the GOAWAY is out: nothing comes for them. So do
			// Accept and PingContext.
			s.wakeStreams()
			s.closeFailing()
			s.smu.Lock()
			last := s.lastPeerID
			s.smu.Unlock()
			if s.queueReply(frameHeader{typ: frameGoAway, streamID: last, length: uint32(codeProtocol)}) == nil {
				ctx, cancel := context.WithTimeout(context.Background(), errorGoAwayTimeout)
				if s.flush(ctx) == nil {
					s.lingerAfterGoAway(ctx)
				}
				cancel()
			}
		}
	}
	s.fail(err)
}

// lingerAfterGoAway keeps a TCP socket open, once the GOAWAY is handed to it,
// until the peer has it, the peer closes its end, or ctx ends. The session
// stopped reading at the bad frame, so what the peer sent after it is
// unread, and closing a TCP socket with unread input (or receiving more
// after the close) resets the connection, dropping what its send queue
// still holds: the GOAWAY, behind data the peer is still reading. So it
// discards input (handling none of it) until the send queue is empty where
// its length can be read (see newSendQueueProbe: the peer's end then holds
// everything), or else until the peer's end. It does not half-close: over
// TLS that writes an alert, which may block. It reads the socket itself,
// under a wrapper such as *tls.Conn: the wrapper's Read would handle what
// it reads (crypto/tls answers a KeyUpdate from inside Read, a write with
// no deadline that a peer not reading blocks for good, holding the lock
// that Close's close_notify then waits for), and a socket's Read keeps its
// deadline. Reader goroutine only, holding the read token.
func (s *Session) lingerAfterGoAway(ctx context.Context) {
	deadline, ok := ctx.Deadline()
	sock := tcpUnder(s.conn)
	if !ok || sock == nil {
		return // a pipe's writes return once read
	}
	queued := newSendQueueProbe(sock)
	buf := make([]byte, 16<<10)
	for {
		if queued != nil && queued() == 0 {
			return
		}
		next := deadline
		if queued != nil {
			if t := time.Now().Add(lingerPoll); t.Before(deadline) {
				next = t
			}
		}
		sock.SetReadDeadline(next)
		if _, err := sock.Read(buf); err != nil && (!errors.Is(err, os.ErrDeadlineExceeded) || !time.Now().Before(deadline)) {
			return
		}
	}
}

// lingerPoll is how often lingerAfterGoAway looks at the send queue.
const lingerPoll = time.Millisecond

// innerConn returns the innermost connection that conn wraps and exposes
// with NetConn (as *tls.Conn does), through any number of such wrappers
// (one around a *tls.Conn would otherwise yield the *tls.Conn); nil if
// conn wraps none.
func innerConn(conn io.ReadWriteCloser) net.Conn {
	var inner net.Conn
	for range maxWrappers {
		w, ok := conn.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		inner = w.NetConn()
		conn = inner
	}
	return inner
}

// maxWrappers bounds innerConn's unwrapping, should a NetConn lead back.
const maxWrappers = 8

// tcpUnder returns conn if it is a TCP socket, or the TCP socket that conn
// wraps and exposes with NetConn (as *tls.Conn does); nil for anything
// else. Not a Unix socket: closing one with input unread drops nothing it
// sent (the peer reads it all, then sees ECONNRESET), and its TIOCOUTQ
// counts what the peer has not read, not what it has not received, so
// lingering there would wait for the peer's application for nothing.
func tcpUnder(conn io.ReadWriteCloser) *net.TCPConn {
	if inner := innerConn(conn); inner != nil {
		conn = inner
	}
	c, _ := conn.(*net.TCPConn)
	return c
}

// errorGoAwayTimeout bounds how long a session that the peer's protocol
// error ends waits for its writer to send the GOAWAY that tells the peer:
// as long as Close's flush. A peer that reads gets it within microseconds;
// one that does not has filled the socket buffer.
const errorGoAwayTimeout = closeFlushTimeout

// closeFailing closes failing, once.
func (s *Session) closeFailing() { s.errorOnce.Do(func() { close(s.failing) }) }

// fail ends the session with err (the first cause wins): it closes the
// connection, which stops both goroutines, and wakes every blocked call.
// It must be called with no lock held.
func (s *Session) fail(err error) {
	s.err.CompareAndSwap(nil, &err) // set already if failTellingPeer told the peer first
	s.failOnce.Do(func() {
		close(s.dying)
		s.closeFailing()
		if inner := innerConn(s.conn); inner != nil {
			// A wrapper's Close may write first, under its own lock:
			// crypto/tls sends close_notify (5 s deadline) after any
			// answer to a KeyUpdate its Read is writing with no
			// deadline, which a peer that does not read holds for
			// good. Closing what it wraps first ends both at once
			// (Close's half-close sent close_notify already).
			inner.Close()
		}
		s.conn.Close()
		s.wakeStreams()
	})
}

// wakeStreams wakes every Read and Write blocked on the session's streams,
// to see the session's error, and stops their deadline timers, which have
// nothing left to end. It must be called with no lock held.
func (s *Session) wakeStreams() {
	s.smu.Lock()
	for _, st := range s.streams {
		st.mu.Lock()
		st.stopDeadlinesLocked()
		st.rcond.Broadcast()
		st.wcond.Broadcast()
		st.mu.Unlock()
	}
	s.smu.Unlock()
}

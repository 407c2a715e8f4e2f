package tcpchan

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

var (
	errStreamClosed = fmt.Errorf("tcpchan: use of closed stream: %w", net.ErrClosed)
	errWriteClosed  = fmt.Errorf("tcpchan: write after CloseWrite: %w", net.ErrClosed)
	errReadClosed   = fmt.Errorf("tcpchan: read after CloseRead: %w", net.ErrClosed)
)

// Stream is one bidirectional byte stream of a Session. It implements
// net.Conn: it is safe for concurrent use, Read and Write honour deadlines
// the way net.Pipe does, and LocalAddr and RemoteAddr are those of the
// session's connection.
//
// A Stream holds no goroutine. Its memory is freed once both directions are
// finished (each side has sent FIN, or either side has sent RST) and the
// application has dropped it, except that a stream the peer opened and then
// reset stays in the session, counted against MaxIncomingStreams, until the
// application calls Close (see Config.MaxIncomingStreams): a handler that
// gets ErrStreamReset should still close its stream.
type Stream struct {
	sess *Session
	id   uint32
	// updateAt is where in the control queue this stream's last
	// WINDOW_UPDATE went (see queueUpdateLocked); guarded by sess.wmu.
	updateAt int32

	mu    sync.Mutex
	rcond sync.Cond // Read waits here: data, FIN, reset, deadline, close
	wcond sync.Cond // Write waits here: credit, progress, deadline, close

	// Receive side. The session reader appends; Read consumes.
	rhead, rtail  *chunk
	buffered      int
	rwait         []byte // buffer of a blocked Read, filled directly by the session reader
	rgot          int    // bytes delivered into rwait
	recvWindow    int64  // current receive window (grows with autotuning)
	recvAvail     int64  // bytes the peer may still send before its next credit
	unacked       int64  // bytes read but not yet credited back to the peer
	rateStart     int64  // session clock when the drain rate's current sample began
	rateBytes     int64  // bytes the application consumed since rateStart
	growEpoch     uint32 // the session's growers epoch this stream was last counted in
	busy          bool   // on a long link, the last rate sample wanted at least InitialStreamWindow
	updatePending bool   // Read queued a WINDOW_UPDATE without waking the writer

	// Send side. Write parks its slice in wbuf; whoever holds the write
	// token (see writer.go) frames it and advances wbuf. Once the stream is closed or reset the writer
	// ignores wbuf, and the blocked Write returns the count taken so far.
	wbuf       []byte
	sendCredit int64
	credited   int64 // sum of the peer's WINDOW_UPDATE increments; session reader only
	updates    int64 // number of them; session reader only

	// Guarded by sess.wmu: membership in the write scheduler's ring.
	schedNext *Stream
	queued    bool // in the ring or the parked list
	parked    bool // in the parked list

	state streamState
	dl    *deadlines // allocated by the first Set*Deadline
}

// streamState is a set of flags guarded by Stream.mu.
type streamState uint32

const (
	stSynPending    streamState = 1 << iota // SYN not yet sent
	stFinPending                            // FIN to send after the pending data
	stSentFIN                               // FIN (or RST) has gone out: write side finished on the wire
	stRecvFIN                               // peer's FIN received: Read returns io.EOF after the buffer
	stWriteClosed                           // CloseWrite or Close called
	stClosed                                // Close called: Read and Write fail with net.ErrClosed
	stReset                                 // RST sent or received: stream is finished
	stRefused                               // with stReset: the peer refused the stream
	stResetByPeer                           // with stReset: the peer sent the RST
	stReading                               // a Read holds rwait
	stWriting                               // a Write holds wbuf
	stRemoved                               // deleted from the session's table
	stWaitCounted                           // the Read holding rwait waits, counted in the read token's waiters
	stCreditWait                            // the Write holding wbuf waits for credit, counted likewise
	stResetAfterFIN                         // closed while the peer still sends: RST CANCEL goes right behind the FIN
	stHeldReset                             // the peer reset this stream it opened before the application closed it: counted in Session.heldResets
	stReadClosed                            // CloseRead called: received data is discarded and credited back
	stOrphan                                // this side opened it and Close waits for the peer to finish it: counted in Session.orphans
)

func (st *Stream) has(f streamState) bool { return st.state&f != 0 }

func newStream(s *Session, id uint32, sendCredit int64) *Stream {
	st := &Stream{
		sess:       s,
		id:         id,
		recvWindow: int64(s.cfg.InitialStreamWindow),
		recvAvail:  int64(s.cfg.InitialStreamWindow),
		sendCredit: sendCredit,
		rateStart:  s.clock(),
	}
	st.rcond.L = &st.mu
	st.wcond.L = &st.mu
	return st
}

// ID returns the stream's identifier: odd for streams the client side of
// the session opened, even for the server side's.
func (st *Stream) ID() uint32 { return st.id }

// Session returns the session the stream belongs to.
func (st *Stream) Session() *Session { return st.sess }

// LocalAddr returns the local address of the session's connection.
func (st *Stream) LocalAddr() net.Addr { return st.sess.LocalAddr() }

// RemoteAddr returns the remote address of the session's connection.
func (st *Stream) RemoteAddr() net.Addr { return st.sess.RemoteAddr() }

// Read reads data the peer sent. After the peer's FIN it returns io.EOF once
// the buffered data is drained. After a local Close or CloseRead it fails
// with an error matching net.ErrClosed; after the peer's RST, with
// ErrStreamReset (or ErrStreamRefused), unless the peer had finished with
// FIN before it: then the data stays readable up to io.EOF. When the read
// deadline passes it fails with os.ErrDeadlineExceeded, leaving the stream
// usable; when the session ends, with the session's error once the
// buffered data is read (io.EOF if the peer's FIN had arrived).
func (st *Stream) Read(p []byte) (int, error) {
	st.mu.Lock()
	n, err := st.readLocked(p)
	kick := st.updatePending
	st.updatePending = false
	st.mu.Unlock()
	if kick {
		// Send the window update from here when the connection is free:
		// the sender may be waiting for it.
		st.sess.writeDirect(nil)
	}
	return n, err
}

func (st *Stream) readLocked(p []byte) (int, error) {
	for {
		if err := st.readErrLocked(); err != nil {
			return 0, err
		}
		if st.buffered > 0 {
			n := st.readBufferedLocked(p)
			st.consumedLocked(n)
			return n, nil
		}
		if st.has(stRecvFIN) {
			return 0, io.EOF
		}
		if err := st.sess.Err(); err != nil {
			return 0, err
		}
		if len(p) == 0 {
			return 0, nil
		}
		if !st.has(stReading) {
			// Let the session reader copy straight into p: one copy less.
			st.state |= stReading
			st.rwait, st.rgot = p, 0
			for st.rgot == 0 && st.readErrLocked() == nil && !st.has(stRecvFIN) && st.sess.Err() == nil {
				st.awaitLocked(false)
			}
			st.uncountLocked(stWaitCounted) // still counted if it ended right after giving way
			n := st.rgot
			st.rwait, st.rgot = nil, 0
			st.state &^= stReading
			st.rcond.Broadcast() // another Read may be waiting for the slot
			if n > 0 {
				st.consumedLocked(n)
				return n, nil
			}
			continue
		}
		st.rcond.Wait()
	}
}

// awaitLocked waits once for what the Read holding rwait (or, if write,
// the Write holding wbuf) needs, data (or credit): reading the connection
// itself if it can take the read token (then a Write writes what the
// credit allows), or else waiting for the token's holder to deliver it
// (and the writer to frame a Write's data). A call that, reading, gave the
// token up to a busy stream it fed (see readHeld) stays counted as waiting
// (its flag set) and the next time waits for the token's holder rather
// than take the token back at once, so that the Read it fed, coming back,
// finds the token free. (A Write waiting so stays passive until all of
// wbuf is framed, as any Write waiting for the token's holder does: credit
// for part of it wakes only the writer goroutine.)
func (st *Stream) awaitLocked(write bool) {
	s := st.sess
	flag, cond, deadline := stWaitCounted, &st.rcond, st.dl != nil && !st.dl.read.when.IsZero()
	if write {
		flag, cond, deadline = stCreditWait, &st.wcond, st.dl != nil && !st.dl.write.when.IsZero()
	}
	if !st.has(flag) {
		if !deadline && s.takeReadToken(st, write) {
			st.mu.Unlock()
			gaveWay := s.readForStream(st)
			if write {
				s.writeDirect(st)
			}
			st.mu.Lock()
			if gaveWay {
				st.state |= flag // readForStream counted it
			}
			return
		}
		st.state |= flag
		s.needReader()
	}
	cond.Wait()
	st.uncountLocked(flag)
}

// uncountLocked stops counting the Read holding rwait (stWaitCounted) or
// the Write holding wbuf (stCreditWait) as a waiter for the read token.
func (st *Stream) uncountLocked(flag streamState) {
	if st.has(flag) {
		st.state &^= flag
		st.sess.doneWaiting()
	}
}

// ready reports whether the Read (or, if write, the Write) of st that holds
// the read token can stop reading the connection: it has data or credit,
// or a reason to stop waiting.
func (st *Stream) ready(write bool) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if write {
		return len(st.wbuf) == 0 || st.sendCredit > 0 && st.sess.sendWindow.Load() > 0 || st.writeErrLocked() != nil
	}
	return st.rgot > 0 || st.has(stRecvFIN) || st.readErrLocked() != nil
}

// readErrLocked reports why a Read must not proceed, before looking at data:
// local close, reset, or an expired deadline.
func (st *Stream) readErrLocked() error {
	switch {
	case st.has(stClosed):
		return errStreamClosed
	case st.has(stReadClosed):
		return errReadClosed
	case st.has(stReset) && !st.has(stRecvFIN):
		// An RST after the peer's FIN only stopped this side's sending:
		// what the FIN completed stays readable up to io.EOF.
		return st.resetErrLocked()
	case st.dl != nil && st.dl.read.expired:
		return os.ErrDeadlineExceeded
	}
	return nil
}

func (st *Stream) resetErrLocked() error {
	switch {
	case st.has(stRefused):
		return ErrStreamRefused
	case st.has(stResetByPeer):
		return ErrStreamReset
	}
	// Reset by this side (the peer kept sending after Close): the
	// application closed the stream, so it is closed for it.
	return errStreamClosed
}

// readBufferedLocked copies buffered data into p, freeing drained chunks.
func (st *Stream) readBufferedLocked(p []byte) int {
	n := 0
	for n < len(p) && st.rhead != nil {
		c := st.rhead
		k := copy(p[n:], c.buf[c.r:c.w])
		c.r += k
		n += k
		if c.r == c.w {
			st.rhead = c.next
			if st.rhead == nil {
				st.rtail = nil
			}
			putChunk(c)
		}
	}
	st.buffered -= n
	if st.buffered == 0 {
		return n
	}
	head, tail := st.rhead, st.rtail
	if st.buffered < largeChunkSize && (len(head.buf) == largeChunkSize || len(tail.buf) == largeChunkSize) || st.wastefulLocked() {
		st.repackLocked()
	}
	return n
}

// wastefulLocked reports whether the read part of the buffer's first chunk
// and the free part of its last waste more than is buffered (and a small
// chunk): large chunks below 32 KiB buffered, or small ones, partly read
// at the head and partly filled at the tail, below 1 KiB.
func (st *Stream) wastefulLocked() bool {
	return st.rhead.r+len(st.rtail.buf)-st.rtail.w > st.buffered+smallChunkSize
}

// repackLocked moves the buffered data into small chunks. SECURITY.md
// promises receive buffers of about twice the bytes buffered plus 1 KiB:
// after a Read, below 16 KiB buffered, a large chunk at either end goes (a
// few bytes left unread in one would pin all of it, 16 KiB per stream
// whatever the peer sent: a body of known length read exactly, the peer's
// next byte left in the buffer), and after a Read or a delivery, so do a
// large chunk partly read at the head and one barely filled at the tail
// once they waste more than is buffered (see wastefulLocked). A repack
// copies what large chunks hold, which is then in small ones, and what
// small chunks partly read or filled hold, less than 1 KiB, which takes
// another 1 KiB read to waste as much again: bytes copied stay within
// bytes received and read.
func (st *Stream) repackLocked() {
	c := st.rhead
	st.rhead, st.rtail = nil, nil
	for c != nil {
		next := c.next
		if len(c.buf) == smallChunkSize && c.r == 0 && c.w == len(c.buf) {
			st.appendChunkLocked(c)
		} else {
			// Into the free space of the chunk before, if partly
			// filled: two small chunks, one partly read and one partly
			// filled, held little data in 2 KiB. Full small chunks are
			// never copied.
			for data := c.buf[c.r:c.w]; len(data) > 0; {
				t := st.rtail
				if t == nil || t.w == len(t.buf) {
					t = smallChunks.Get().(*chunk)
					st.appendChunkLocked(t)
				}
				n := copy(t.buf[t.w:], data)
				t.w += n
				data = data[n:]
			}
			putChunk(c)
		}
		c = next
	}
}

// releaseGrowthLocked gives the stream's window growth back to the
// session's budget, but for what unread data still fills, once the peer
// can use no more credit on it: after its FIN or RST, or when this side
// closed or reset the stream (nothing it sends then is kept, nor credited
// on the stream), or forgot it; later Reads give back the rest. A stream
// half-closed by the peer while this side still sends (a long reply) would
// otherwise keep the growth, and later streams on a long link could not
// grow. st.mu is held.
func (st *Stream) releaseGrowthLocked() {
	// Growth that data received but not yet read still fills stays taken
	// until the application reads it (consumedLocked gives it back then):
	// given back at the FIN, the next stream could grow too while this
	// one's grown window of unread data still holds the session window.
	keep := max(int64(st.sess.cfg.InitialStreamWindow), int64(st.buffered))
	if g := st.recvWindow - keep; g > 0 {
		st.recvWindow -= g
		st.sess.windowGrowth.Add(-g)
	}
}

// appendChunkLocked puts c at the end of the receive buffer.
func (st *Stream) appendChunkLocked(c *chunk) {
	c.next = nil
	if st.rtail == nil {
		st.rhead = c
	} else {
		st.rtail.next = c
	}
	st.rtail = c
}

// consumedLocked credits n bytes read by the application back to the peer
// in batches. Across a network a batch is a quarter window: the credit
// takes a round trip to arrive, and the sender can keep going only on what
// was credited before (with half-window batches a window-limited stream
// moves only half its window per round trip). Between two ends on the same
// host (see sameHost) the credit arrives within microseconds, so unless
// the link is long (a proxy that delays, round trips of minAutotuneRTT or
// more) a batch is three quarters of the window: fewer, larger updates mean
// fewer system calls and fewer bytes queued ahead of other streams' frames
// on average, as the sender has at most the window minus the credit held
// back in flight.
//
// It also autotunes the window. A stream needs a window of its
// bandwidth-delay product, so when the application drains it at a rate
// (taken over a round trip at least while other streams are open) that,
// over two minimum round trips, exceeds the window, the window grows to
// that (at least doubling, at most MaxStreamWindow, within the session's
// growth budget). On a long fat link a stream thus grows to fill it, and
// streams that share it grow alike: a stream with a larger window takes
// more of the link, so each takes up the largest window of those updating
// lately, within an equal share of the budget. On a short one (round trips
// under minAutotuneRTT) it keeps its initial window, which keeps the bytes
// queued ahead of other streams' frames, and so their latency, low, unless
// the stream is alone in its session or the others are quiet (none received
// data since its previous update, nor within activeSpan): with nobody to
// delay, it grows to loneStreamWindow (one such window's growth in the
// whole session), and gives the growth back, returning less credit as the
// application reads, once another stream receives data (one the peer opens
// does with its SYN). No window grows beyond maxGrownWindow.
func (st *Stream) consumedLocked(n int) {
	s := st.sess
	if st.has(stReadClosed) {
		s.discarded(n)
	} else {
		s.consumed(n)
	}
	if st.has(stRecvFIN | stReset | stClosed) {
		// The peer can send no more, or nobody will read it (a Read that
		// got data as Close ran): the stream needs no credit, and the
		// window growth that what this Read took had filled goes back.
		st.releaseGrowthLocked()
		return
	}
	st.unacked += int64(n)
	rtt := s.minRTT()
	short := rtt < minAutotuneRTT
	batch := st.recvWindow / 4
	if short && s.sameHost.Load() {
		batch = st.recvWindow * 3 / 4
	}
	if st.unacked < batch {
		return
	}
	inc := st.unacked
	now := s.clock()
	// target is the window this update moves to: up by sending more
	// credit than was consumed, down by sending less.
	target := st.recvWindow
	budget := int64(s.cfg.SessionWindow / 2)
	alone := s.numStreams.Load() == 1
	if short {
		// One lone window's growth in the whole session: a stream that
		// grew while the others were quiet and then stalled keeps its
		// window (credit granted stays valid), and streams growing
		// after it in turn would each keep one too, spending the
		// session window that stalled streams must leave the others
		// (with 11 grown, 22 more stalled streams blocked the session,
		// where 64 of 256 KiB fit in its 16 MiB).
		lone := min(loneStreamWindow, s.maxGrownWindow())
		budget = max(0, lone-int64(s.cfg.InitialStreamWindow))
		target = int64(s.cfg.InitialStreamWindow)
		// The others count as quiet if none received data since this
		// stream's previous update (when its drain rate's sample,
		// unused on a short link, began), nor within activeSpan.
		quiet := s.othersQuiet(st.id, st.rateStart, now)
		st.rateStart, st.rateBytes = min(now, s.lastRecv.Load()), 0
		if alone || quiet {
			target = max(target, lone)
		}
	} else {
		// want is twice the bandwidth-delay product at the rate the
		// application drains the stream. With other streams open that
		// rate is taken over a round trip at least: streams that share a
		// link take turns in its queue, so a stream's window can arrive
		// in one burst, and a rate taken over the burst let the first
		// stream to update take most of the growth budget (16 streams on
		// a 40 ms link finished 8 times apart).
		st.rateBytes += inc
		if span := now - st.rateStart; span >= rtt || alone {
			want := float64(st.rateBytes) * 2 * float64(rtt) / float64(max(span, 1))
			st.rateStart, st.rateBytes = now, 0
			st.busy = want >= float64(s.cfg.InitialStreamWindow)
			if want > float64(st.recvWindow) {
				target = max(2*st.recvWindow, int64(min(want, maxWindow)))
			}
		}
		most := s.maxGrownWindow()
		if !alone {
			// Busy streams that share the link get equal windows: one
			// that grew first takes more of the link, drains faster,
			// and would grow again (they finished up to 2 times
			// apart). So each takes up the largest window among them,
			// within an equal share of the growth budget.
			n, largest := s.countGrower(st, now, rtt)
			if st.busy {
				target = max(target, largest)
			}
			most = min(most, int64(s.cfg.InitialStreamWindow)+int64(s.cfg.SessionWindow/2)/int64(n))
		}
		target = min(target, most)
	}
	if st.has(stReadClosed) {
		// Nobody reads it: a larger window would only queue discarded
		// bytes ahead of other streams' frames.
		target = int64(s.cfg.InitialStreamWindow)
	}
	if grow := target - st.recvWindow; grow > 0 {
		// As far as the budget allows: what streams above their share
		// give back frees more at their next updates.
		grow = s.reserveGrowth(grow, budget)
		st.recvWindow += grow
		inc += grow
	} else if cut := min(-grow, inc); cut > 0 {
		// Another stream opened (or the link turned out short, or more
		// streams share it): what this one has queued would delay the
		// others' frames.
		st.recvWindow -= cut
		inc -= cut
		s.windowGrowth.Add(-cut)
	}
	st.unacked = 0
	if inc == 0 {
		return // all of it went to shrinking the window
	}
	st.recvAvail += inc
	s.wmu.Lock()
	s.queueUpdateLocked(&st.updateAt, st.id, inc)
	s.wmu.Unlock()
	if s.w.raw == nil {
		s.wakeWriter()
		return
	}
	// Read writes it directly, or the token holder will.
	st.updatePending = true
}

// Write writes p to the stream, cut into frames of at most MaxFrameSize
// bytes that the session's writer interleaves fairly with other streams'.
// It blocks until all of p has been handed to the writer (the writer copies
// it; p is never touched after Write returns) or an error occurs. It waits
// for send credit while the peer's window is full, so a peer that stops
// reading makes Write block until the write deadline, which returns
// os.ErrDeadlineExceeded with the count of bytes already taken, leaving the
// stream usable. A deadline already in the past sends nothing. After Close
// or CloseWrite it fails with an error matching net.ErrClosed; after the
// peer's RST, with ErrStreamReset or ErrStreamRefused; when the session
// ends, with the session's error, also if it ended before the Write
// returned, even with all of p taken (its bytes may never have gone out),
// unless the stream was refused or reset before, which is then reported;
// from the moment Session.Close begins, with an error matching
// net.ErrClosed, also if Close half-closed the connection before the Write
// returned. A zero-length Write sends nothing.
func (st *Stream) Write(p []byte) (int, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for st.has(stWriting) {
		if err := st.writeErrLocked(); err != nil {
			return 0, err
		}
		st.wcond.Wait()
	}
	if err := st.writeErrLocked(); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	st.state |= stWriting
	st.wbuf = p
	if s := st.sess; s.w.raw == nil {
		s.scheduleLocked(st)
	} else if !s.writeAloneLocked(st) && s.enqueueLocked(st) {
		// Write it from here if the connection is free; if it is not,
		// its holder wakes the writer goroutine when it lets go.
		st.mu.Unlock()
		s.writeDirect(st)
		st.mu.Lock()
	}
	var err error
	for len(st.wbuf) > 0 {
		if err = st.writeErrLocked(); err != nil {
			break
		}
		if st.sendCredit > 0 && st.sess.sendWindow.Load() > 0 {
			st.uncountLocked(stCreditWait) // credit came right after giving way
			st.wcond.Wait()                // for the write token's holder to frame it
			continue
		}
		st.awaitLocked(true)
	}
	st.uncountLocked(stCreditWait)
	n := len(p) - len(st.wbuf)
	if err == nil {
		// A direct write of this call may have failed and ended the
		// session: what it framed never went out. So may the part
		// framed after Close's half-close, which is dropped (credit
		// that came during Close let the writer frame the rest of a
		// Write that had not yet seen Close begin).
		err = st.sess.Err()
		if err == nil && st.sess.writeShut.Load() {
			err = errSessionClosed
		}
		if err != nil && st.has(stReset) {
			// Refused or reset before the session ended (a GOAWAY
			// refusing it, say): that is what the data met, and
			// ErrStreamRefused tells the caller a retry is safe.
			err = st.resetErrLocked()
		}
	}
	wasPending := len(st.wbuf) > 0
	st.wbuf = nil
	st.state &^= stWriting
	if wasPending && st.has(stFinPending|stSynPending) {
		// Given up with data left (CloseWrite, Close, a deadline): a
		// stream parked for session credit owes now only a SYN or FIN,
		// which need none.
		st.sess.scheduleLocked(st)
	}
	st.wcond.Broadcast() // another Write may be waiting for the slot
	return n, err
}

// writtenOrStuck reports whether a direct writer can stop for this
// stream: its Write is done, cannot progress (no credit, closed), or has
// passed its deadline.
func (st *Stream) writtenOrStuck() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.pendingLocked()) == 0 || !st.readyLocked() || st.dl != nil && st.dl.write.expired
}

func (st *Stream) writeErrLocked() error {
	switch {
	case st.has(stClosed):
		return errStreamClosed
	case st.has(stWriteClosed):
		// Before the reset, as Close is: CloseWrite promises
		// net.ErrClosed to later Writes.
		return errWriteClosed
	case st.has(stReset):
		return st.resetErrLocked()
	}
	if err := st.sess.Err(); err != nil {
		return err
	}
	if st.sess.closing.Load() {
		return errSessionClosed // nothing more goes out
	}
	if st.dl != nil && st.dl.write.expired {
		return os.ErrDeadlineExceeded
	}
	return nil
}

// CloseWrite half-closes the stream: the peer reads io.EOF after the data
// already written, and can still write back. Later Writes fail with an error
// matching net.ErrClosed; Read keeps working.
func (st *Stream) CloseWrite() error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.has(stClosed) {
		return errStreamClosed
	}
	if st.has(stWriteClosed) {
		return nil
	}
	st.state |= stWriteClosed
	if st.has(stReset) {
		return st.resetErrLocked()
	}
	if err := st.sess.Err(); err != nil {
		return err
	}
	st.state |= stFinPending
	st.sess.scheduleLocked(st)
	st.wcond.Broadcast()
	st.sess.interruptRead(st)
	return nil
}

// CloseRead shuts down the reading side, as on a TCP connection: data
// received but not read is discarded, and so is what the peer sends
// afterwards, credited back to it so that its Writes never wait for a
// reader that is gone. The peer is not told; Close or Reset stop its
// sending. A blocked Read returns at once, and later Reads fail, with an
// error matching net.ErrClosed; Write keeps working. CloseRead after Close
// fails with an error matching net.ErrClosed; after the peer's RST, with
// ErrStreamReset or ErrStreamRefused; when the session has ended, with the
// session's error. Calling it again does nothing.
func (st *Stream) CloseRead() error {
	st.mu.Lock()
	if st.has(stClosed) {
		st.mu.Unlock()
		return errStreamClosed
	}
	if st.has(stReadClosed) {
		st.mu.Unlock()
		return nil
	}
	st.state |= stReadClosed
	st.rcond.Broadcast()
	st.sess.interruptRead(st)
	err := st.sess.Err()
	if st.has(stReset) {
		err = st.resetErrLocked()
	}
	if st.sess.Err() == nil {
		// Data the peer finished with FIN stays readable after its RST;
		// dropped here, its session credit goes back.
		n := st.buffered
		st.freeBufferLocked()
		st.consumedLocked(n)
	}
	kick := st.updatePending
	st.updatePending = false
	st.mu.Unlock()
	if kick {
		st.sess.writeDirect(nil)
	}
	return err
}

// Close closes the stream. Data already written is still delivered, followed
// by FIN, so the peer reads everything and then io.EOF; data received but
// not read is discarded, and if the peer keeps sending (or has used up the
// stream's credit, or, on a stream the peer opened, the session's; or, on
// one this side opened, 8192 streams this side opened and closed already
// wait for the peer to finish them, as Linux resets orphaned sockets past
// tcp_max_orphans), the stream is reset right behind the FIN: the peer's
// Writes fail with ErrStreamReset, while what this side wrote stays
// readable to it up to io.EOF. Blocked Read and Write calls return at once
// with an error matching net.ErrClosed, as do all later calls. Close never blocks on the network. Closing twice returns an error
// matching net.ErrClosed.
func (st *Stream) Close() error {
	st.mu.Lock()
	if st.has(stClosed) {
		st.mu.Unlock()
		return errStreamClosed
	}
	st.state |= stClosed
	if !st.has(stWriteClosed|stReset) && st.sess.Err() == nil {
		st.state |= stFinPending
		st.sess.scheduleLocked(st)
	}
	st.state |= stWriteClosed
	st.discardLocked()
	st.releaseGrowthLocked()
	st.stopDeadlinesLocked()
	st.rcond.Broadcast()
	st.wcond.Broadcast()
	st.sess.interruptRead(st)
	// A peer that has used up its credit, the stream's or the session's
	// (other streams' unread data), waits for more that may never come:
	// it would neither finish nor send the DATA that makes this side
	// reset the stream.
	// Session credit counts only on a stream the peer opened: on one this
	// side opened the peer may have sent nothing yet, and the stream is
	// reset once more DATA arrives.
	starved := st.recvAvail == 0 || st.sess.peerStarved.Load() && st.sess.isPeerID(st.id)
	waits := !st.has(stRecvFIN|stReset) && st.sess.Err() == nil
	reset := waits && starved && st.stopPeerLocked()
	if waits && !reset && !st.has(stResetAfterFIN) && !st.sess.isPeerID(st.id) && !st.sess.orphan(st) {
		// Past maxOrphans: reset, as Linux resets orphaned TCP
		// sockets past tcp_max_orphans.
		reset = st.stopPeerLocked()
	}
	done := st.removableLocked()
	st.mu.Unlock()
	if done {
		st.sess.removeStream(st)
	}
	if reset {
		st.sess.queueControl(frameHeader{typ: frameReset, streamID: st.id, length: uint32(codeCancel)})
	}
	return nil
}

// Reset aborts the stream, as closing a TCP socket with a zero linger time
// resets the connection: what this side has not sent yet is dropped, what
// it received is discarded, and the peer is sent an RST at once, so its
// Reads and Writes fail with ErrStreamReset (a peer that had already
// received this side's FIN still reads what came before it, then io.EOF).
// Use it when the stream failed, so that the peer does not take what it
// received for the whole; Close ends a stream gracefully. Blocked and
// later calls on the stream fail with an error matching net.ErrClosed, as
// does Reset after Close. A stream reset before anything was sent on it
// costs the peer nothing to forget; one this side opened and resets
// before the peer sent anything on it, and before CloseWrite or Close sent
// its FIN, counts against this side in the peer's glitch budget (see
// Config.MaxGlitches: "rapid reset").
func (st *Stream) Reset() error { return st.reset(codeCancel) }

// reset is Reset, sending code in the RST.
func (st *Stream) reset(code errCode) error {
	st.mu.Lock()
	if st.has(stClosed) {
		st.mu.Unlock()
		return errStreamClosed
	}
	s := st.sess
	// A stream whose SYN has not gone out is unknown to the peer.
	send := !st.has(stReset|stSynPending) && s.Err() == nil
	st.state |= stClosed | stWriteClosed
	if !st.has(stReset) {
		st.resetLocked(0)
	} else {
		// Reset by the peer after its FIN: what the FIN completed was
		// kept for Read, and nobody will read it now.
		st.discardLocked()
		st.releaseGrowthLocked()
	}
	st.stopDeadlinesLocked()
	s.interruptRead(st)
	done := st.removableLocked()
	st.mu.Unlock()
	if done {
		s.removeStream(st)
	}
	if send {
		s.queueControl(frameHeader{typ: frameReset, streamID: st.id, length: uint32(code)})
	}
	return nil
}

// stopPeerLocked stops the peer's sending on a stream closed here: with an
// RST CANCEL right behind this side's FIN if that is still to go (sent
// before it, the RST would make the peer discard what the FIN completes),
// or else at once, in which case it reports true and the caller sends the
// RST. st.mu is held.
func (st *Stream) stopPeerLocked() bool {
	if st.has(stFinPending) {
		st.state |= stResetAfterFIN
		return false
	}
	st.resetLocked(0)
	return true
}

// refuse ends a stream the peer opened that the application never
// accepted, as a TCP listener's backlog is reset when it closes: the peer
// sees ErrStreamRefused, which tells it that nothing of the stream was
// processed and a retry is safe, where Close's FIN would read as an empty
// reply.
func (st *Stream) refuse() { st.reset(codeRefused) }

// discardLocked frees buffered data, crediting the session window so
// discarded bytes never leak the peer's credit.
func (st *Stream) discardLocked() {
	st.sess.discarded(st.buffered)
	st.freeBufferLocked()
}

// freeBufferLocked frees buffered data, crediting nothing.
func (st *Stream) freeBufferLocked() {
	for c := st.rhead; c != nil; {
		next := c.next
		putChunk(c)
		c = next
	}
	st.rhead, st.rtail, st.buffered = nil, nil, 0
}

// removableLocked reports whether the session can forget the stream: both
// directions are done (each side sent FIN, or either sent RST) and it is
// not forgotten yet. A stream the peer opened and then reset is kept,
// counted under MaxIncomingStreams, until the application has closed it
// too, so that opening and resetting streams ("rapid reset") cannot leave
// the application with more streams than the limit.
func (st *Stream) removableLocked() bool {
	switch {
	case st.has(stRemoved):
		return false
	case st.has(stReset):
		return st.has(stClosed) || !st.has(stResetByPeer) || !st.sess.isPeerID(st.id)
	}
	return st.has(stSentFIN) && st.has(stRecvFIN)
}

// resetLocked finishes the stream after an RST sent or received. Data the
// peer completed with FIN before its own RST is kept for Read: the peer
// only stopped receiving (it closed the stream while this side still sent,
// as a server that answers a request before reading all of it does). An
// RST this side sends ends what it will read too.
func (st *Stream) resetLocked(flags streamState) {
	st.state |= stReset | flags
	st.state &^= stFinPending | stSynPending | stResetAfterFIN
	// A stream parked for session credit has nothing more to send: out of
	// the parked list, or it stays there until credit comes.
	st.sess.wmu.Lock()
	if st.parked {
		st.sess.sched.unlinkParked(st)
	}
	st.sess.wmu.Unlock()
	if !st.has(stRecvFIN) || flags&stResetByPeer == 0 {
		st.discardLocked()
	}
	st.releaseGrowthLocked() // after the discard: what it kept holds none
	st.rcond.Broadcast()
	st.wcond.Broadcast()
}

// SetDeadline sets the read and write deadlines, as net.Conn documents.
// After Close it fails with an error matching net.ErrClosed.
func (st *Stream) SetDeadline(t time.Time) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.has(stClosed) {
		return errStreamClosed // a timer would keep the stream alive until t
	}
	st.deadlinesLocked().read.set(st, &st.rcond, t)
	st.dl.write.set(st, &st.wcond, t)
	st.sess.interruptRead(st)
	return nil
}

// SetReadDeadline sets the deadline for Read calls, including ones already
// blocked. A zero value means no deadline. After Close it fails with an
// error matching net.ErrClosed.
func (st *Stream) SetReadDeadline(t time.Time) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.has(stClosed) {
		return errStreamClosed
	}
	st.deadlinesLocked().read.set(st, &st.rcond, t)
	st.sess.interruptRead(st)
	return nil
}

// SetWriteDeadline sets the deadline for Write calls, including ones already
// blocked. A zero value means no deadline. After Close it fails with an
// error matching net.ErrClosed.
func (st *Stream) SetWriteDeadline(t time.Time) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.has(stClosed) {
		return errStreamClosed
	}
	st.deadlinesLocked().write.set(st, &st.wcond, t)
	st.sess.interruptRead(st)
	return nil
}

func (st *Stream) deadlinesLocked() *deadlines {
	if st.dl == nil {
		st.dl = new(deadlines)
	}
	return st.dl
}

func (st *Stream) stopDeadlinesLocked() {
	if st.dl != nil {
		st.dl.read.stop()
		st.dl.write.stop()
	}
}

// deadlines live outside Stream so that streams that never set one (most)
// do not pay for them.
type deadlines struct {
	read, write deadline
}

// deadline follows net.Pipe's pipeDeadline: one timer, re-armed on each set,
// waking blocked calls when it fires.
type deadline struct {
	when    time.Time
	timer   *time.Timer
	expired bool
}

// set arms d for t; st.mu is held. Waiters on cond re-check when it fires.
func (d *deadline) set(st *Stream, cond *sync.Cond, t time.Time) {
	d.when = t
	d.expired = false
	if d.timer != nil {
		d.timer.Stop()
	}
	if t.IsZero() {
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		d.expired = true
		cond.Broadcast()
		return
	}
	if d.timer == nil {
		d.timer = time.AfterFunc(wait, func() {
			st.mu.Lock()
			defer st.mu.Unlock()
			// A timer re-armed for a later deadline may still fire for the
			// earlier one, and one for a deadline without a monotonic
			// clock reading may fire before the wall clock gets there:
			// only a deadline that has really passed counts, and one that
			// has not is armed again, or it would never fire.
			if d.when.IsZero() || d.expired {
				return
			}
			if wait := time.Until(d.when); wait > 0 {
				d.timer.Reset(wait)
				return
			}
			d.expired = true
			cond.Broadcast()
		})
		return
	}
	d.timer.Reset(wait)
}

func (d *deadline) stop() {
	// A callback already under way (waiting for st.mu) must find the
	// deadline spent, or it arms the timer again.
	d.when = time.Time{}
	if d.timer != nil {
		d.timer.Stop()
	}
}

// chunk is a piece of a stream's receive buffer. Chunks come from pools so
// the read path does not allocate per frame; small ones hold the first few
// bytes of an idle stream so that many streams with a little unread data do
// not pin large buffers.
type chunk struct {
	next *chunk
	r, w int
	buf  []byte
}

const (
	smallChunkSize = 1 << 10
	largeChunkSize = 16 << 10
)

var (
	smallChunks = sync.Pool{New: func() any { return &chunk{buf: make([]byte, smallChunkSize)} }}
	largeChunks = sync.Pool{New: func() any { return &chunk{buf: make([]byte, largeChunkSize)} }}
)

// getChunk returns an empty chunk for n more bytes of a stream; empty
// reports whether the stream holds less than a large chunk's worth. Such a
// stream gets a large chunk only for at least half of one, so that its
// free part is never more than the data in it (a 1025-byte frame, with
// MaxFrameSize raised, took 16 KiB).
func getChunk(n int, empty bool) *chunk {
	if empty && n < largeChunkSize/2 {
		return smallChunks.Get().(*chunk)
	}
	return largeChunks.Get().(*chunk)
}

func putChunk(c *chunk) {
	c.next, c.r, c.w = nil, 0, 0
	if len(c.buf) == smallChunkSize {
		smallChunks.Put(c)
	} else {
		largeChunks.Put(c)
	}
}

// deliverLocked hands payload received from the peer to the stream: straight
// into a blocked Read's buffer when one waits and nothing is queued ahead,
// the rest into chunks.
func (st *Stream) deliverLocked(p []byte) {
	if st.buffered == 0 && len(st.rwait) > st.rgot {
		n := copy(st.rwait[st.rgot:], p)
		st.rgot += n
		p = p[n:]
		if st.has(stWaitCounted) {
			st.uncountLocked(stWaitCounted)
			st.sess.rt.delivered = true
		}
		st.rcond.Broadcast()
	}
	if len(p) == 0 {
		return
	}
	wasEmpty := st.buffered == 0
	st.buffered += len(p)
	for len(p) > 0 {
		c := st.rtail
		if c == nil || c.w == len(c.buf) {
			// Small chunks until the stream holds a large chunk's worth
			// or a frame brings half of one (see getChunk): a large
			// one's unused tail is then at most what is buffered, so a
			// peer cannot pin far more memory than its window.
			c = getChunk(len(p), st.buffered-len(p) < largeChunkSize)
			st.appendChunkLocked(c)
		}
		n := copy(c.buf[c.w:], p)
		c.w += n
		p = p[n:]
	}
	if st.rhead != st.rtail && st.wastefulLocked() {
		// A Read left a large chunk partly read, and a new one came
		// with a few bytes.
		st.repackLocked()
	}
	if wasEmpty {
		st.rcond.Broadcast()
	}
}

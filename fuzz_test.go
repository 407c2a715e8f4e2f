package tcpchan

import (
	"io"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// FuzzSession feeds arbitrary bytes from the peer to a whole session while
// the application on our side uses a stream of its own and accepts the
// peer's. Whatever the bytes, the session must not panic, must end (at the
// latest through its timeouts: the test runs in a synctest bubble, so a
// hang is reported as a deadlock), must release every goroutine, and must
// keep its bookkeeping within its limits.
//
// mode selects: bit 0, the input includes the preface (else a valid one is
// sent first); bit 1, our side is the client (else the server); bit 2, the
// peer never reads (our writer blocks until WriteTimeout).
func FuzzSession(f *testing.F) {
	// The checked-in corpus is under testdata/fuzz/FuzzSession; these
	// cover the basics should it be missing.
	f.Add(byte(0), dataFrame(flagSYN|flagFIN, 1, []byte("hello")))
	f.Add(byte(1), []byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add(byte(2), hdr(framePing, 0, 0, 7))
	f.Fuzz(func(t *testing.T, mode byte, in []byte) {
		synctest.Test(t, func(t *testing.T) { fuzzSession(t, mode, in) })
	})
}

// fuzzConfig keeps every limit small, so that inputs of a few hundred bytes
// can reach them.
var fuzzConfig = Config{
	MaxIncomingStreams:     4,
	AcceptBacklog:          2,
	MaxQueuedControlFrames: 32,
	MaxGlitches:            16,
	GlitchesPerSecond:      1,
	KeepAliveInterval:      time.Second,
	KeepAliveTimeout:       time.Second,
	WriteTimeout:           time.Second,
	HandshakeTimeout:       time.Second,
}

func fuzzSession(t *testing.T, mode byte, in []byte) {
	c1, c2 := net.Pipe()
	cfg := fuzzConfig
	newSession := Server
	if mode&2 != 0 {
		newSession = Client
	}
	s, err := newSession(c1, &cfg)
	if err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup // every goroutine of the test; all end with the session
	if mode&4 == 0 {
		wg.Go(func() { io.Copy(io.Discard, c2) })
	}
	wg.Go(func() { // the peer
		if mode&1 == 0 {
			c2.Write(appendPreface(nil, settings{streamWindow: 64 << 10, sessionWindow: 1 << 20, maxFrameSize: 1024, maxStreams: 4}))
		}
		c2.Write(in)
		time.Sleep(3 * time.Second) // let timers run, then hang up
		c2.Close()
	})
	wg.Go(func() { // our application's own stream
		st, err := s.OpenStream()
		if err != nil {
			return
		}
		go func() {
			st.Write(make([]byte, 3000))
			st.CloseWrite()
		}()
		io.Copy(io.Discard, st)
		st.Close()
	})
	wg.Go(func() { // our application serving the peer's streams: echo
		for {
			st, err := s.AcceptStream()
			if err != nil {
				return
			}
			wg.Go(func() {
				io.Copy(st, io.LimitReader(st, 4096))
				st.Close()
			})
		}
	})

	<-s.Done()
	if s.Err() == nil {
		t.Fatal("session done without an error")
	}
	s.smu.Lock()
	incoming := 0
	for id := range s.streams {
		if s.isPeerID(id) {
			incoming++
		}
	}
	if incoming != s.incoming || s.incoming > cfg.MaxIncomingStreams {
		t.Errorf("%d peer streams in the table, %d counted, limit %d", incoming, s.incoming, cfg.MaxIncomingStreams)
	}
	s.smu.Unlock()
	s.wmu.Lock()
	if n := len(s.sched.ctrl); n > cfg.MaxQueuedControlFrames+16 {
		t.Errorf("%d control frames queued, limit %d", n, cfg.MaxQueuedControlFrames)
	}
	s.wmu.Unlock()
	if g := s.windowGrowth.Load(); g < 0 || g > int64(s.cfg.SessionWindow) {
		t.Errorf("window growth budget %d", g)
	}
	c2.Close()
	wg.Wait()
	s.Close()
}

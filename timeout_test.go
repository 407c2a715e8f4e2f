package tcpchan

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"testing/synctest"
	"time"
)

// These tests run in a synctest bubble: time is virtual, so each timeout is
// checked to the exact duration with no sleeping.

// silentPeer answers the handshake with a valid preface, then reads and
// discards everything and sends nothing more.
func silentPeer(conn net.Conn) {
	conn.Write(appendPreface(nil, settings{streamWindow: 256 << 10, sessionWindow: 16 << 20, maxFrameSize: 1024, maxStreams: 100}))
	io.Copy(io.Discard, conn)
}

func TestHandshakeFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		peer    func(net.Conn)
		elapsed time.Duration // when the session must fail
		want    string
	}{
		{"garbage", func(c net.Conn) { c.Write([]byte("GET / HTTP/1.1\r\nHost: example\r\n\r\n")); io.Copy(io.Discard, c) },
			0, `did not send the tcpchan preface (got "G")`},
		{"silence", func(c net.Conn) { io.Copy(io.Discard, c) },
			2 * time.Second, "no preface from the peer within 2s"},
		{"partial preface then silence", func(c net.Conn) { c.Write(magic[:5]); io.Copy(io.Discard, c) },
			2 * time.Second, "no preface from the peer within 2s"},
		{"other version", func(c net.Conn) {
			b := appendPreface(nil, settings{streamWindow: 1 << 16, sessionWindow: 1 << 20, maxFrameSize: 1024, maxStreams: 100})
			b[7] = 9
			c.Write(b)
			io.Copy(io.Discard, c)
		}, 0, "protocol version 9, want 1"},
		{"hang up", func(c net.Conn) { c.Close() }, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c1, c2 := net.Pipe()
				defer c2.Close()
				go tc.peer(c2)
				start := time.Now()
				s, err := Server(c1, &Config{HandshakeTimeout: 2 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				<-s.Done()
				if got := time.Since(start); got != tc.elapsed {
					t.Errorf("session failed after %v, want %v", got, tc.elapsed)
				}
				if err := s.Err(); !errors.Is(err, ErrHandshake) || !contains(err, tc.want) {
					t.Errorf("Err() = %v, want ErrHandshake saying %q", err, tc.want)
				}
				if _, err := s.AcceptStream(); !errors.Is(err, ErrHandshake) {
					t.Errorf("AcceptStream: %v, want ErrHandshake", err)
				}
			})
		})
	}
}

func contains(err error, s string) bool {
	return err != nil && stringsContains(err.Error(), s)
}

func TestKeepAliveDetectsSilentPeer(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		defer c2.Close()
		go silentPeer(c2)
		cfg := &Config{KeepAliveInterval: 10 * time.Second, KeepAliveTimeout: 5 * time.Second}
		start := time.Now()
		s, err := Client(c1, cfg)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := s.OpenStream()
		readErr := make(chan error, 1)
		go func() {
			_, err := st.Read(make([]byte, 1))
			readErr <- err
		}()
		<-s.Done()
		if got, want := time.Since(start), 15*time.Second; got != want {
			t.Errorf("silent peer detected after %v, want KeepAliveInterval+KeepAliveTimeout = %v", got, want)
		}
		var ne net.Error
		if err := s.Err(); !errors.Is(err, ErrKeepAliveTimeout) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("Err() = %v, want ErrKeepAliveTimeout, a net.Error with Timeout()", err)
		}
		if err := <-readErr; !errors.Is(err, ErrKeepAliveTimeout) {
			t.Errorf("blocked Read: %v, want ErrKeepAliveTimeout", err)
		}
	})
}

func TestKeepAliveKeepsLivePeer(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		cfg := &Config{KeepAliveInterval: time.Second, KeepAliveTimeout: time.Second}
		client, _ := Client(c1, cfg)
		server, _ := Server(c2, cfg)
		time.Sleep(time.Minute) // both idle: pings keep each other alive
		if client.Err() != nil || server.Err() != nil {
			t.Errorf("idle sessions died: %v / %v", client.Err(), server.Err())
		}
		client.Close()
		server.Close()
	})
}

func TestWriteTimeoutClosesStuckSession(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		defer c2.Close()
		// The peer sends its preface, reads ours, then never reads again.
		go func() {
			c2.Write(appendPreface(nil, settings{streamWindow: 256 << 10, sessionWindow: 16 << 20, maxFrameSize: 1024, maxStreams: 100}))
			io.ReadFull(c2, make([]byte, prefaceSize+headerSize))
		}()
		cfg := &Config{WriteTimeout: 3 * time.Second, KeepAliveInterval: -1}
		s, _ := Client(c1, cfg)
		synctest.Wait()
		st, _ := s.OpenStream()
		start := time.Now()
		n, err := st.Write(make([]byte, 100<<10))
		if !errors.Is(err, ErrWriteTimeout) {
			t.Errorf("Write to a peer that stopped reading: %d, %v; want ErrWriteTimeout", n, err)
		}
		if got := time.Since(start); got != 3*time.Second {
			t.Errorf("stuck session closed after %v, want WriteTimeout = 3s", got)
		}
		<-s.Done()
	})
}

func stringsContains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// TestSetDeadlineAfterClose: after Close every deadline setter fails with
// net.ErrClosed, as on a TCPConn, and arms nothing: a timer would keep the
// closed stream and its session in memory until it fired.
func TestSetDeadlineAfterClose(t *testing.T) {
	t.Parallel()
	client, server := pipeSessions(t, nil, nil)
	for _, set := range []struct {
		name string
		f    func(*Stream, time.Time) error
	}{
		{"SetDeadline", (*Stream).SetDeadline},
		{"SetReadDeadline", (*Stream).SetReadDeadline},
		{"SetWriteDeadline", (*Stream).SetWriteDeadline},
	} {
		st, _ := streamPair(t, client, server)
		st.Close()
		if err := set.f(st, time.Now().Add(time.Hour)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s after Close: %v, want net.ErrClosed", set.name, err)
		}
		st.mu.Lock()
		if st.dl != nil && (st.dl.read.timer.Stop() || st.dl.write.timer.Stop()) {
			t.Errorf("%s after Close armed a timer", set.name)
		}
		st.mu.Unlock()
	}
}

// TestDeadlineTimerEarly: a deadline's timer that fires before the deadline
// (re-armed for a later one, or a deadline without a monotonic clock
// reading while the wall clock is slewed) must not be spent: the deadline
// still ends a blocked Read, when it comes.
func TestDeadlineTimerEarly(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c1, c2 := net.Pipe()
		client, err := Client(c1, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		server, err := Server(c2, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer server.Close()
		st, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		st.SetReadDeadline(start.Add(100 * time.Millisecond).Round(0)) // wall clock only
		st.mu.Lock()
		st.dl.read.timer.Reset(time.Millisecond) // as if it fired early
		st.mu.Unlock()
		guard := time.AfterFunc(time.Minute, func() { st.Close() })
		defer guard.Stop()
		_, err = st.Read(make([]byte, 1))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Read: %v, want os.ErrDeadlineExceeded (the timer was spent early)", err)
		}
		if got := time.Since(start); got != 100*time.Millisecond {
			t.Errorf("Read returned after %v, want 100ms", got)
		}
	})
}

// TestDeadlineTimerStoppedAtClose: a deadline timer whose callback is
// already waiting for the stream's lock when the application moves the
// deadline later and closes the stream must not arm the timer again: it
// would hold the closed stream, and its session, until the later deadline.
func TestDeadlineTimerStoppedAtClose(t *testing.T) {
	t.Parallel()
	client, server := tcpSessions(t, nil, nil)
	a, b := streamPair(t, client, server)
	defer b.Close()
	a.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	a.mu.Lock()
	time.Sleep(50 * time.Millisecond)                     // the timer fires; its callback waits for a.mu
	a.dl.read.set(a, &a.rcond, time.Now().Add(time.Hour)) // SetReadDeadline, under the lock held
	a.state |= stClosed                                   // and Close
	a.stopDeadlinesLocked()
	a.mu.Unlock()
	time.Sleep(50 * time.Millisecond) // the callback runs
	a.mu.Lock()
	armed := a.dl.read.timer.Stop()
	a.mu.Unlock()
	if armed {
		t.Error("the read deadline timer of a closed stream was armed again (for an hour)")
	}
}

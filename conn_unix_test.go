//go:build unix

package tcpchan

import (
	"errors"
	"io"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestResetErr: a socket reports a reset once, to whichever call comes
// first. When a write takes it, the read after it sees a plain EOF, as
// after a FIN; resetErr must still tell the two apart, or a reset session
// blames "connection closed by peer" (as TestConnectionCut/reset sometimes
// did). A TCP peer that closes with nothing unread sends a FIN, not a
// reset; a Unix socket's close is never a reset.
func TestResetErr(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		unix  bool
		cut   func(net.Conn)
		reset bool
	}{
		{"TCP FIN", false, func(c net.Conn) { c.(*net.TCPConn).CloseWrite() }, false},
		{"TCP close", false, func(c net.Conn) { c.Close() }, false},
		{"TCP RST taken by a write", false, func(c net.Conn) {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}, true},
		{"Unix close", true, func(c net.Conn) { c.Close() }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var c, peer net.Conn
			if tc.unix {
				c, peer = connPair(t, "unix", filepath.Join(t.TempDir(), "s"))
			} else {
				c, peer = tcpConnPair(t)
			}
			defer c.Close()
			defer peer.Close()
			tc.cut(peer)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if tc.reset {
				var err error
				for err == nil {
					_, err = c.Write([]byte("x"))
				}
				if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
					t.Fatalf("write after the peer's RST: %v", err)
				}
			}
			if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
				t.Fatalf("Read = %d, %v; want 0, EOF", n, err)
			}
			raw, _ := newRawReader(c)
			err := raw.resetErr()
			if tc.reset && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("resetErr after a reset a write took: %v, want EPIPE or ECONNRESET", err)
			}
			if !tc.reset && err != nil {
				t.Errorf("resetErr after a clean close: %v, want nil", err)
			}
		})
	}
}

// TestDirectWriteErrorReported: a Write that finds the connection idle
// writes its frames itself. If that write fails, the session ends inside
// the call, and the Write must report it: its bytes never went out, as a
// *net.TCPConn's Write would say.
func TestDirectWriteErrorReported(t *testing.T) {
	t.Parallel()
	c1, c2 := tcpConnPair(t)
	client, server := sessionPair(t, c1, c2, nil, nil)
	a, b := streamPair(t, client, server)
	if _, err := a.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(b, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the client's writer idle", func() bool {
		client.wmu.Lock()
		defer client.wmu.Unlock()
		return !client.w.held && len(client.w.pending) == 0 && len(client.sched.ctrl) == 0 && client.sched.head == nil
	})
	rc, err := c1.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) { syscall.Shutdown(int(fd), syscall.SHUT_WR) })
	n, err := a.Write([]byte("hello"))
	if serr := client.Err(); serr != nil && err == nil {
		t.Fatalf("Write returned %d, nil although the session ended as it wrote (%v): nothing was sent", n, serr)
	}
}

// openFileLimit is the process's open-file limit (0: unknown).
func openFileLimit() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	return int(min(lim.Cur, 1<<30))
}

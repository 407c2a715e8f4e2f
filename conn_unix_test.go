//go:build unix

package tcpchan

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestResetErr: a socket reports a reset once, to whichever call comes
// first. When a write takes it, the read after it sees a plain EOF, as
// after a FIN; resetErr must still tell the two apart, or a reset session
// blames "connection closed by peer" (TestConnectionCut/reset did, in about
// 1 run in 30).
func TestResetErr(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		cut   func(*net.TCPConn)
		reset bool
	}{
		{"FIN", func(c *net.TCPConn) { c.CloseWrite() }, false},
		{"RST taken by a write", func(c *net.TCPConn) {
			c.SetLinger(0)
			c.Close()
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, peer := tcpConnPair(t)
			defer c.Close()
			defer peer.Close()
			tc.cut(peer.(*net.TCPConn))
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
				t.Fatalf("Read = %d, %v; want 0, EOF (the reset was taken)", n, err)
			}
			raw, _ := newRawReader(c)
			err := raw.resetErr()
			if tc.reset && err == nil {
				t.Error("resetErr after a reset a write took: nil, want an error")
			}
			if !tc.reset && err != nil {
				t.Errorf("resetErr after a FIN: %v, want nil", err)
			}
		})
	}
}

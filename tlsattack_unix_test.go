//go:build unix

package tcpchan

// TLS attacks that need socket options set before connecting.

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tlsKeyUpdatePair makes a TLS 1.3 connection over loopback TCP with small
// buffers: the victim's server-side tls.Conn, the attacker's raw socket
// and a sealer for the
// attacker's records.
func tlsKeyUpdatePair(t *testing.T) (*tls.Conn, net.Conn, *tls13Sealer) {
	serverTLS, clientTLS := testTLSConfigs(t)
	var keyLog bytes.Buffer
	clientTLS.KeyLogWriter = &keyLog
	clientTLS.MinVersion = tls.VersionTLS13
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The attacker's receive buffer is set before connecting, so that its
	// window starts small.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1) })
	}}
	c2, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c1, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c1.Close(); c2.Close() })
	v, at := tls.Server(c1, serverTLS), tls.Client(c2, clientTLS)
	handshakeBoth(t, v, at)
	c1.(*net.TCPConn).SetWriteBuffer(1)
	sealer := clientSealer(t, at, keyLog.Bytes())
	return v, c2, sealer
}

func stacksWith(sub string) bool {
	buf := make([]byte, 1<<20)
	return strings.Contains(string(buf[:runtime.Stack(buf, true)]), sub)
}

// TestHandshakeTimeoutTLSKeyUpdateHang: a TLS 1.3 peer that sends, before
// the tcpchan preface is complete, KeyUpdates asking for an answer and
// reads nothing. The reader goroutine blocks in crypto/tls's answer (no
// deadline, under the tls.Conn's output lock); HandshakeTimeout's fail
// then calls tls.Conn.Close, which (no Write in flight) sends close_notify
// under that lock and blocks for good: the session never ends and Close
// never returns. (A Listener's drain calls fail the same way for a session
// whose preface has not come.)
func TestHandshakeTimeoutTLSKeyUpdateHang(t *testing.T) {
	t.Parallel()
	for _, wrapped := range []bool{false, true} {
		// Not parallel: the skip below looks at every goroutine's stack.
		t.Run(fmt.Sprintf("wrapped=%v", wrapped), func(t *testing.T) {
			handshakeTimeoutKeyUpdates(t, wrapped)
		})
	}
}

// netConnWrapper wraps a connection and exposes it with NetConn, as a
// wrapper around a *tls.Conn might.
type netConnWrapper struct{ net.Conn }

func (w netConnWrapper) NetConn() net.Conn { return w.Conn }

// handshakeTimeoutKeyUpdates is TestHandshakeTimeoutTLSKeyUpdateHang, the
// session on the tls.Conn itself or on a wrapper of it (the socket must be
// found under both).
func handshakeTimeoutKeyUpdates(t *testing.T, wrapped bool) {
	v, c2, sealer := tlsKeyUpdatePair(t)
	var conn net.Conn = v
	if wrapped {
		conn = netConnWrapper{v}
	}
	victim, err := Server(conn, &Config{HandshakeTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// 16 KeyUpdates (crypto/tls's limit of non-advancing records), then
	// one byte of the preface, which resets the count: all of it but the
	// last byte.
	pre := appendPreface(nil, attackerSettings)
	var raw []byte
	for i := 0; i < len(pre); i++ {
		for range 16 {
			raw = append(raw, sealer.keyUpdate()...)
		}
		if i < len(pre)-1 {
			raw = append(raw, sealer.seal(23, pre[i:i+1])...)
		}
	}
	go c2.Write(raw)
	time.Sleep(300 * time.Millisecond)
	if !stacksWith("handleKeyUpdate") {
		t.Skip("the victim's KeyUpdate answers did not fill its send buffer")
	}
	select {
	case <-victim.Done():
		t.Logf("the session ended with %v", victim.Err())
	case <-time.After(5 * time.Second):
		t.Errorf("the session did not end within 5 s (HandshakeTimeout 500 ms; err %v); tls.Conn.Close blocked in closeNotify: %v",
			victim.Err(), stacksWith("closeNotify"))
		if !closeWithin(victim, 3*time.Second) {
			t.Errorf("Close did not return within 3 s either")
		}
	}
}

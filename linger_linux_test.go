//go:build linux

package tcpchan

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"
)

// TestLingerUnixWaitsForPeersRead: on a Unix socket TIOCOUTQ counts what
// the peer has not yet read (not what it has not acknowledged, as for TCP),
// and closing a Unix socket drops nothing already sent: the peer reads it
// all, then sees ECONNRESET. So lingerAfterGoAway there waits, for nothing,
// until the peer's application reads or the second ends.
func TestLingerUnixWaitsForPeersRead(t *testing.T) {
	t.Parallel()
	c1, c2 := connPair(t, "unix", filepath.Join(t.TempDir(), "s"))
	victim, a := newAttackOn(t, c1, c2, nil, attackerSettings)
	a.sync(t)
	// The bad frame (type 9), and behind it more than the victim's read
	// buffer takes, which stays unread in the socket.
	go a.send(unknownFrame, bytes.Repeat(hdr(framePing, 0, 0, 42), 100<<10/headerSize))
	waitFor(t, "the protocol error", func() bool { return victim.Err() != nil })
	start := time.Now()
	waitDone(t, victim) // the attacker reads nothing meanwhile
	took := time.Since(start)
	// The GOAWAY reached the attacker all the same.
	var hs []frameHeader
	for {
		h, err := a.readFrame()
		if err != nil {
			t.Logf("the attacker's read ended with %v", err)
			break
		}
		hs = append(hs, h)
	}
	checkToldProtocolError(t, hs)
	if took > 300*time.Millisecond {
		t.Errorf("the session took %v to end after the protocol error on a Unix socket, with nothing to wait for", took.Round(time.Millisecond))
	}
}

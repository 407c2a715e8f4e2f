package tcpchan

import (
	"net"
	"testing"
)

// TestQueueProbes: the receive-queue probe counts what the peer sent and
// nobody read yet, the send-queue probe what the peer has not taken, both
// without allocating (the receive one runs per PONG under TLS, and
// BenchmarkPingPongUnderBulk calls it per echo); on a closed socket they
// report 0. Not parallel: AllocsPerRun.
func TestQueueProbes(t *testing.T) {
	c1, c2 := tcpConnPair(t)
	defer c1.Close()
	recvQueue := newBacklogProbe(exposedConn{c2})
	sendQueue := newSendQueueProbe(c1)
	if recvQueue == nil || sendQueue == nil {
		t.Fatal("no probe for a TCP socket")
	}
	if got := recvQueue(); got != 0 {
		t.Fatalf("receive queue before any write: %d bytes", got)
	}
	const n = 10000
	if _, err := c1.Write(make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the bytes written to be queued at the receiver", func() bool { return recvQueue() == n })
	waitFor(t, "the sender's queue to empty (the peer acknowledges on receipt)", func() bool { return sendQueue() == 0 })
	buf := make([]byte, 4000)
	if _, err := c2.Read(buf); err != nil {
		t.Fatal(err)
	}
	if got, want := recvQueue(), n-len(buf); got != want {
		t.Errorf("receive queue after reading %d bytes: %d, want %d", len(buf), got, want)
	}
	if allocs := testing.AllocsPerRun(100, func() { recvQueue(); sendQueue() }); allocs != 0 && !raceEnabled {
		t.Errorf("probes allocated %.1f times per call, want 0", allocs)
	}
	c2.Close()
	if got := recvQueue(); got != 0 {
		t.Errorf("receive queue of a closed socket: %d bytes, want 0", got)
	}
}

// The probes find no socket under a connection that is not one.
func TestQueueProbesNeedASocket(t *testing.T) {
	t.Parallel()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	if newBacklogProbe(exposedConn{c1}) != nil || newSendQueueProbe(c1) != nil {
		t.Error("a probe for a net.Pipe end")
	}
}

package tcpchan

import (
	"net"
	"sync"
	"testing"
)

// TestQueueProbes: the receive-queue probe counts what the peer sent and
// nobody read yet, the send-queue probe what the peer has not taken, both
// without allocating (the receive one runs per PONG under TLS, and
// BenchmarkPingPongUnderBulk calls it per ping); on a closed socket they
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
	read, err := c2.Read(make([]byte, 4000))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := recvQueue(), n-read; got != want {
		t.Errorf("receive queue after reading %d bytes: %d, want %d", read, got, want)
	}
	if allocs := testing.AllocsPerRun(100, func() { recvQueue(); sendQueue() }); allocs != 0 && !raceEnabled {
		t.Errorf("the two probes allocated %.1f times per pair of calls, want 0", allocs)
	}
	c2.Close()
	if got := recvQueue(); got != 0 {
		t.Errorf("receive queue of a closed socket: %d bytes, want 0", got)
	}
}

// TestSendQueueProbeCountsUnacknowledged: with the receiver's buffer full,
// what the sender wrote beyond it stays in the sender's queue, and the
// probe says so.
func TestSendQueueProbeCountsUnacknowledged(t *testing.T) {
	t.Parallel()
	c1, c2 := tcpConnPair(t)
	defer c1.Close()
	defer c2.Close()
	c2.(*net.TCPConn).SetReadBuffer(4 << 10)
	sendQueue := newSendQueueProbe(c1)
	// Writes that return once the kernel took the bytes, until the
	// receiver's window is shut and some stay queued at the sender.
	c1.(*net.TCPConn).SetWriteBuffer(64 << 10)
	buf := make([]byte, 16<<10)
	for range 64 {
		if sendQueue() > 0 {
			break
		}
		if _, err := c1.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "bytes queued at the sender", func() bool { return sendQueue() > 0 })
}

// TestQueueProbeConcurrent: a probe may be called from several goroutines
// at once (the race detector checks its shared results).
func TestQueueProbeConcurrent(t *testing.T) {
	t.Parallel()
	c1, c2 := tcpConnPair(t)
	defer c1.Close()
	defer c2.Close()
	if _, err := c1.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	recvQueue := newBacklogProbe(exposedConn{c2})
	waitFor(t, "the bytes to arrive", func() bool { return recvQueue() == 1000 })
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				if got := recvQueue(); got != 1000 {
					t.Errorf("receive queue: %d, want 1000", got)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestQueueProbesNeedASocket: a connection with no socket under it gets no
// probe.
func TestQueueProbesNeedASocket(t *testing.T) {
	t.Parallel()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	if newBacklogProbe(exposedConn{c1}) != nil || newSendQueueProbe(c1) != nil {
		t.Error("a probe for a net.Pipe end")
	}
}

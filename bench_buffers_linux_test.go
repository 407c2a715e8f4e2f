package tcpchan

import (
	"net"
	"syscall"
	"testing"
)

// BenchmarkPingUnderBulkSmallBuffers is BenchmarkPingPongUnderBulk
// with small kernel buffers at both ends of every TCP connection (see
// smallSocketBuffers), and the bulk transfer alone under the same buffers
// (alone/tcp, alone/tcpchan: BenchmarkBulk's 32 KiB writes), for its solo
// rate. Small buffers keep most of what a bulk transfer has in flight out
// of the kernel's queues: a ping on a connection of its own then waits
// behind far less, and a multiplexer could frame its ping ahead of the
// bulk frames still in user space. What they change shows which queue the
// ping beside a bulk stream waits in:
//
//	go test -run '^$' -bench PingUnderBulkSmallBuffers -benchtime 3000x .
func BenchmarkPingUnderBulkSmallBuffers(b *testing.B) {
	for _, kind := range kinds {
		b.Run("alone/"+kind, func(b *testing.B) {
			w, r := tunedPair(b, kind, smallSocketBuffers)
			benchTransfer(b, w, r, 32<<10)
		})
	}
	for _, kib := range []int{0, 256, 1024} {
		b.Run(underBulkName(kib), func(b *testing.B) { pingUnderBulk(b, kib, 0, smallSocketBuffers) })
	}
}

// smallSocketBuffers sets a 64 KiB receive buffer on c's socket (the
// kernel doubles it for its bookkeeping; the receiving queue then held up
// to 100 KiB of data) and TCP_NOTSENT_LOWAT to 16 KiB, so that a write
// waits while the socket holds more than that unsent.
func smallSocketBuffers(b *testing.B, c net.Conn) {
	b.Helper()
	tc := c.(*net.TCPConn)
	if err := tc.SetReadBuffer(64 << 10); err != nil {
		b.Fatal(err)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpNotSentLowat, 16<<10)
	}); err != nil {
		b.Fatal(err)
	}
	if serr != nil {
		b.Fatal("TCP_NOTSENT_LOWAT:", serr)
	}
}

// tcpNotSentLowat is TCP_NOTSENT_LOWAT from <linux/tcp.h>, which package
// syscall does not define.
const tcpNotSentLowat = 25

package tcpchan

import (
	"io"
	"sync"
	"syscall"
	"unsafe"
)

// newBacklogProbe returns, for a connection that wraps a TCP or Unix socket
// and exposes it with NetConn (as *tls.Conn does), a function that reports
// how many bytes wait unread in that socket's receive queue; nil for
// anything else. Such a wrapper's Read returns one record at a time, so
// connReader cannot tell from its reads whether the session is behind.
func newBacklogProbe(conn io.ReadWriteCloser) func() int {
	inner := innerConn(conn)
	if inner == nil {
		return nil
	}
	return queueProbe(inner, syscall.TIOCINQ)
}

// newSendQueueProbe returns, for a TCP or Unix socket or a connection that
// wraps one and exposes it with NetConn, a function that reports how many
// bytes the socket's send queue holds that the peer has not taken (TCP: not
// yet acknowledged); nil for anything else. While a write is blocked, the
// queue shrinking is progress a system call does not show: the kernel
// wakes the writer only once a third of the send buffer is free, which for
// a slow reader behind megabytes of buffer can take longer than
// WriteTimeout.
func newSendQueueProbe(conn io.ReadWriteCloser) func() int {
	if inner := innerConn(conn); inner != nil {
		conn = inner
	}
	return queueProbe(conn, syscall.TIOCOUTQ)
}

// queueProbe returns a function that asks the socket under conn, if it is
// one, for the length of a queue with ioctl request req. The function is
// safe for concurrent use and does not allocate: RawConn.Control's callback
// and its results are made once, as a callback made per call would escape
// to the heap with what it captures.
func queueProbe(conn io.ReadWriteCloser, req uintptr) func() int {
	rc, _ := socketOf(conn)
	if rc == nil {
		return nil
	}
	var (
		mu     sync.Mutex // guards queued and errno, which ioctl sets
		queued int32
		errno  syscall.Errno
	)
	ioctl := func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(&queued)))
	}
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		queued, errno = 0, 0
		if err := rc.Control(ioctl); err != nil || errno != 0 {
			return 0
		}
		return int(queued)
	}
}

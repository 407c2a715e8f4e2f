package tcpchan

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// newBacklogProbe returns, for a connection that wraps a TCP or Unix socket
// and exposes it with NetConn (as *tls.Conn does), a function that reports
// how many bytes wait unread in that socket's receive queue; nil for
// anything else. Such a wrapper's Read returns one record at a time, so
// connReader cannot tell from its reads whether the session is behind.
func newBacklogProbe(conn io.ReadWriteCloser) func() int {
	w, ok := conn.(interface{ NetConn() net.Conn })
	if !ok {
		return nil
	}
	rc, _ := socketOf(w.NetConn())
	if rc == nil {
		return nil
	}
	return func() int {
		var queued int32
		var errno syscall.Errno
		err := rc.Control(func(fd uintptr) {
			_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&queued)))
		})
		if err != nil || errno != 0 {
			return 0
		}
		return int(queued)
	}
}

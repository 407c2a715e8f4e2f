//go:build unix

package tcpchan

import (
	"io"
	"net"
	"syscall"
)

// rawWriter writes without blocking: tryWrite returns how much the socket
// buffer took.
type rawWriter interface {
	tryWrite(b []byte) (int, error)
}

// newRawWriter returns a non-blocking writer for connections backed by a
// socket (TCP, Unix), or nil for the others (TLS, pipes, wrappers), which then always
// go through the writer goroutine.
func newRawWriter(conn io.ReadWriteCloser) rawWriter {
	// Only the socket types themselves: a wrapper that embeds one (for
	// metrics, throttling, a cipher) has SyscallConn too, and writing to
	// its socket would bypass its Write.
	var sc syscall.Conn
	switch c := conn.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &socketWriter{rc: rc}
	w.writeFD = w.write // bound once: a closure per call would allocate
	return w
}

// socketWriter is used only by the write token's holder, so its fields need
// no lock.
type socketWriter struct {
	rc      syscall.RawConn
	writeFD func(fd uintptr) bool
	b       []byte
	n       int
	err     error
}

func (w *socketWriter) tryWrite(b []byte) (int, error) {
	w.b, w.n, w.err = b, 0, nil
	err := w.rc.Write(w.writeFD)
	if err == nil {
		err = w.err
	}
	n := w.n
	w.b, w.err = nil, nil
	return n, err
}

// write is the RawConn callback: it writes until done or the socket buffer
// is full, and never asks to wait.
func (w *socketWriter) write(fd uintptr) bool {
	for w.n < len(w.b) {
		k, err := syscall.Write(int(fd), w.b[w.n:])
		if k > 0 {
			w.n += k
		}
		switch err {
		case nil:
			if k == 0 {
				w.err = io.ErrShortWrite
				return true
			}
		case syscall.EINTR:
		case syscall.EAGAIN:
			return true // full: the writer goroutine waits for it
		default:
			w.err = err
			return true
		}
	}
	return true
}

//go:build unix

package tcpchan

import (
	"io"
	"net"
	"syscall"
	"time"
)

// rawWriter writes without blocking: tryWrite returns how much the socket
// buffer took. writeAll blocks until all of b is written, calling the
// progress function given to newRawWriter after each system call that
// wrote some.
type rawWriter interface {
	tryWrite(b []byte) (int, error)
	writeAll(b []byte) (int, error)
}

// newRawWriter returns a non-blocking writer for connections backed by a
// socket (TCP, Unix), or nil for the others (TLS, pipes, wrappers), which then always
// go through the writer goroutine.
func newRawWriter(conn io.ReadWriteCloser, progress func()) rawWriter {
	rc, _ := socketOf(conn)
	if rc == nil {
		return nil
	}
	w := &socketWriter{rc: rc, progress: progress}
	w.writeFD = w.write // bound once: a closure per call would allocate
	return w
}

// socketWriter is used only by the write token's holder, so its fields need
// no lock.
type socketWriter struct {
	rc       syscall.RawConn
	writeFD  func(fd uintptr) bool
	progress func()
	b        []byte
	n        int
	err      error
	wait     bool // writeAll: wait for room rather than return
}

func (w *socketWriter) tryWrite(b []byte) (int, error) {
	return w.run(b, false)
}

func (w *socketWriter) writeAll(b []byte) (int, error) {
	return w.run(b, true)
}

func (w *socketWriter) run(b []byte, wait bool) (int, error) {
	w.b, w.n, w.err, w.wait = b, 0, nil, wait
	err := w.rc.Write(w.writeFD)
	if err == nil {
		err = w.err
	}
	n := w.n
	w.b, w.err = nil, nil
	return n, err
}

// write is the RawConn callback: it writes until done or the socket buffer
// is full; then it asks to wait for room only in writeAll.
func (w *socketWriter) write(fd uintptr) bool {
	for w.n < len(w.b) {
		k, err := syscall.Write(int(fd), w.b[w.n:])
		if k > 0 {
			w.n += k
			if w.wait {
				w.progress()
			}
		}
		switch err {
		case nil:
			if k == 0 {
				w.err = io.ErrShortWrite
				return true
			}
		case syscall.EINTR:
		case syscall.EAGAIN:
			return !w.wait // full: tryWrite leaves the rest to the writer goroutine
		default:
			w.err = err
			return true
		}
	}
	return true
}

// readDeadliner interrupts a blocked read of the connection.
type readDeadliner interface{ SetReadDeadline(time.Time) error }

// rawReader reads without blocking: tryRead returns 0 and no error when
// nothing has arrived.
type rawReader interface {
	tryRead(b []byte) (int, error)
	resetErr() error
}

// newRawReader returns a non-blocking reader and the means to interrupt a
// blocked read for connections backed by a socket (TCP, Unix), whose
// deadlines are known to interrupt reads, or nils for the others (see
// reader.go).
func newRawReader(conn io.ReadWriteCloser) (rawReader, readDeadliner) {
	rc, dl := socketOf(conn)
	if rc == nil {
		return nil, nil
	}
	_, tcp := conn.(*net.TCPConn)
	r := &socketReader{rc: rc, tcp: tcp}
	r.readFD = r.read // bound once: a closure per call would allocate
	return r, dl
}

// socketOf returns the raw socket of a *net.TCPConn or *net.UnixConn, and
// the conn itself for its read deadline; nils for anything else. Only the
// socket types themselves: a wrapper that embeds one (for metrics,
// throttling, a cipher) has SyscallConn too, and using its socket would
// bypass its Read and Write.
func socketOf(conn io.ReadWriteCloser) (syscall.RawConn, readDeadliner) {
	var sc interface {
		syscall.Conn
		readDeadliner
	}
	switch c := conn.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return nil, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, nil
	}
	return rc, sc
}

// socketReader is used only by the read token's holder, so its fields need
// no lock.
type socketReader struct {
	rc     syscall.RawConn
	readFD func(fd uintptr) bool
	b      []byte
	n      int
	err    error
	tcp    bool // a TCP socket, which resetErr can probe
}

func (r *socketReader) tryRead(b []byte) (int, error) {
	r.b, r.n, r.err = b, 0, nil
	err := r.rc.Read(r.readFD)
	if err == nil {
		err = r.err
	}
	n := r.n
	r.b, r.err = nil, nil
	return n, err
}

// read is the RawConn callback: one read, never asking to wait.
func (r *socketReader) read(fd uintptr) bool {
	for {
		k, err := syscall.Read(int(fd), r.b)
		switch err {
		case nil:
			if k == 0 {
				r.err = io.EOF
			}
			r.n = k
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
		default:
			r.err = err
		}
		return true
	}
}

// resetErr tells, after a read returned EOF, whether the TCP connection
// was in fact torn down (reset, or timed out) rather than closed with a
// FIN, returning the error that says so: the socket reports the cause
// once, to whichever call comes first, so a write racing the read may have
// taken it and failed with it an instant too late to be the session's
// cause. A write of nothing fails (EPIPE) once the connection is torn down
// and succeeds after a mere FIN. Not on Unix sockets, where it fails after
// any close by the peer. Like any write to a reset socket it raises
// SIGPIPE, which Go ignores for sockets.
func (r *socketReader) resetErr() error {
	if !r.tcp {
		return nil
	}
	var werr error
	err := r.rc.Control(func(fd uintptr) {
		_, werr = syscall.Write(int(fd), nil)
	})
	if err != nil {
		return nil // closed here: not the peer's doing
	}
	return werr
}

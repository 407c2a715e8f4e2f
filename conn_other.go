//go:build !unix

package tcpchan

import "io"

type rawWriter interface {
	tryWrite(b []byte) (int, error)
}

// newRawWriter returns nil: without a portable non-blocking write, all
// writes go through the writer goroutine.
func newRawWriter(io.ReadWriteCloser) rawWriter { return nil }

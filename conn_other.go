//go:build !unix

package tcpchan

import (
	"io"
	"time"
)

type rawWriter interface {
	tryWrite(b []byte) (int, error)
	writeAll(b []byte) (int, error)
}

// newRawWriter returns nil: without a portable non-blocking write, all
// writes go through the writer goroutine.
func newRawWriter(io.ReadWriteCloser, func()) rawWriter { return nil }

type readDeadliner interface{ SetReadDeadline(time.Time) error }

type rawReader interface {
	tryRead(b []byte) (int, error)
	resetErr() error
}

// newRawReader returns nils: the reader goroutine always reads.
func newRawReader(io.ReadWriteCloser) (rawReader, readDeadliner) { return nil, nil }

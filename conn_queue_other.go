//go:build !linux

package tcpchan

import "io"

// newBacklogProbe returns nil: where the receive queue's length is not
// read, every round-trip sample over a wrapped connection counts.
func newBacklogProbe(io.ReadWriteCloser) func() int { return nil }

// newSendQueueProbe returns nil: where the send queue's length is not read,
// a blocked write makes progress for WriteTimeout only when a system call
// writes some.
func newSendQueueProbe(io.ReadWriteCloser) func() int { return nil }

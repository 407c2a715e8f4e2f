//go:build !unix

package tcpchan

// openFileLimit is the process's open-file limit: unknown here.
func openFileLimit() int { return 0 }

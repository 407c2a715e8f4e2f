//go:build unix

package main

import "syscall"

// fdLimit returns how many descriptors the process may open.
func fdLimit() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 1024
	}
	return int(r.Cur)
}

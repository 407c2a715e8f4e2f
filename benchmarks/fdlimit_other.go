//go:build !unix

package main

// fdLimit returns how many descriptors the process may open: where there is
// no such limit to read (Windows counts sockets as handles, without a soft
// limit), more than idle-mem ever asks for.
func fdLimit() int { return 1 << 20 }

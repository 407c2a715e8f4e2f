//go:build !unix

package main

// fdLimit is how many descriptors the process may open: where there is no
// such limit to read (Windows counts sockets as handles, without a soft
// limit), as many as idle-mem ever asks for.
func fdLimit() int { return 1 << 20 }

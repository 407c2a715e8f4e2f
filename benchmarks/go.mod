module github.com/tcpchan/tcpchan/benchmarks

go 1.26.0

replace github.com/tcpchan/tcpchan => ../

require (
	github.com/google/go-cmp v0.7.0
	github.com/hashicorp/yamux v0.1.2
	github.com/libp2p/go-yamux/v5 v5.1.0
	github.com/tcpchan/tcpchan v0.0.0-00010101000000-000000000000
	github.com/xtaci/smux v1.5.56
	golang.org/x/exp v0.0.0-20261113113407-e3970619a1a4
)

require (
	github.com/libp2p/go-buffer-pool v0.0.2 // indirect
	golang.org/x/sync v0.24.0 // indirect
)

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/tcpchan/tcpchan"
)

// serveOptions configure runServe.
type serveOptions struct {
	tunnelOptions
	// Config configures the tcpchan sessions; nil means the defaults.
	Config *tcpchan.Config
	// TLS, if set, makes the tunnel listener accept TLS connections.
	TLS *tls.Config
}

func parseServe(fs *flag.FlagSet, args []string) (runFunc, error) {
	setUsage(fs, "tcpchan serve [-listen addr] -to host:port [flags]",
		`The tunnel's exit. Accepts tcpchan connections (from 'tcpchan forward')
and, for every stream they carry, dials the target and copies bytes both
ways, half-closes included. On SIGINT or SIGTERM it stops accepting, tells
each forward to open no more streams, lets connections in flight finish
for up to -grace, then exits.
`)
	listen := fs.String("listen", ":7000", "`address` to accept tunnel connections on")
	to := fs.String("to", "", "`host:port` of the target to dial for every stream (required)")
	cert := fs.String("tls-cert", "", "PEM `file` with the certificate (chain): serve TLS on -listen (needs -tls-key)")
	key := fs.String("tls-key", "", "PEM `file` with the private key of -tls-cert")
	dialTimeout := fs.Duration("dial-timeout", defaultDialTimeout, "give up dialing the target after this `duration`")
	grace := fs.Duration("grace", defaultGrace, "on shutdown, let connections in flight finish for up to this `duration`")
	verbose := fs.Bool("v", false, "log every tunnel connection and stream (default: errors only)")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if err := checkHostPort("listen", *listen, false); err != nil {
		return nil, err
	}
	if err := checkHostPort("to", *to, true); err != nil {
		return nil, err
	}
	if (*cert == "") != (*key == "") {
		return nil, usageError("-tls-cert and -tls-key go together")
	}
	if *dialTimeout <= 0 || *grace <= 0 {
		return nil, usageError("-dial-timeout and -grace must be positive")
	}
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		opts := serveOptions{tunnelOptions: tunnelOptions{
			DialTimeout: *dialTimeout,
			Grace:       *grace,
			Log:         newLogger(stderr, *verbose),
		}}
		if *cert != "" {
			cfg, err := serverTLSConfig(*cert, *key)
			if err != nil {
				return err
			}
			opts.TLS = cfg
		}
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return err
		}
		opts.Log.Info("listening", "addr", ln.Addr().String(), "to", *to, "tls", opts.TLS != nil)
		return runServe(ctx, ln, *to, opts)
	}, nil
}

// runServe runs the tunnel's exit on ln until ctx ends: it accepts
// tcpchan connections (over TLS if opts.TLS is set), and for every stream
// they carry dials target and pipes the two together. When ctx ends it
// closes ln, sends GOAWAY so that clients open no more streams, waits up to
// opts.Grace for the streams in flight, resets what remains and returns
// nil once every goroutine it started has exited. It returns an error if
// ln fails for good. runServe owns ln.
func runServe(ctx context.Context, ln net.Listener, target string, opts serveOptions) error {
	opts.fill()
	log := opts.Log
	inner := net.Listener(loggingListener{ln, log, "tunnel connection accepted"})
	if opts.TLS != nil {
		inner = tls.NewListener(inner, opts.TLS)
	}
	tl := tcpchan.NewListener(inner, opts.Config)
	r := newRelay()
	dialer := &net.Dialer{Timeout: opts.DialTimeout}

	handle := func(st *tcpchan.Stream) {
		start := time.Now()
		session := st.RemoteAddr().String()
		tc, err := dialer.DialContext(r.ctx, "tcp", target)
		if err != nil {
			log.Error("dialing target", "target", target, "session", session, "stream", st.ID(), "err", err)
			abort(st) // the client's connection is reset: nothing reached the target
			return
		}
		if !r.track(st, tc) {
			return
		}
		log.Debug("stream opened", "session", session, "stream", st.ID(), "target", tc.RemoteAddr().String())
		up, down, err := pipe(st, tc, "tunnel", "target")
		logStream(log, err, r.untrack(st, tc), "session", session, "stream", st.ID(),
			"bytes_to_target", up, "bytes_from_target", down, "dur", time.Since(start).Round(time.Microsecond))
	}

	loopDone := make(chan error, 1)
	go func() {
		for {
			st, err := tl.AcceptStream()
			if err != nil {
				loopDone <- err
				return
			}
			r.wg.Go(func() { handle(st) })
		}
	}()

	var err error
	select {
	case <-ctx.Done():
		log.Info("shutting down: no new streams", "grace", opts.Grace)
		tl.Close()
		<-loopDone
	case err = <-loopDone:
		err = fmt.Errorf("accepting tunnel connections: %w", err)
		log.Error("listener failed, shutting down", "err", err)
		tl.Close()
	}
	if n := r.drain(opts.Grace); n > 0 {
		log.Error("grace period over: reset the connections still open", "conns", n)
	}
	// Every stream is closed: the sessions finish at once.
	sctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if serr := tl.Shutdown(sctx); serr != nil && !errors.Is(serr, net.ErrClosed) {
		log.Error("closing tunnel connections", "err", serr)
	}
	log.Info("stopped")
	return err
}

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/tcpchan/tcpchan"
)

// forwardOptions configure runForward.
type forwardOptions struct {
	tunnelOptions
}

func parseForward(fs *flag.FlagSet, args []string) (runFunc, error) {
	setUsage(fs, "tcpchan forward [-listen addr] -via host:port [flags]",
		`The tunnel's entry. Accepts local TCP connections and carries each as a
stream over one persistent tcpchan connection to 'tcpchan serve' at -via,
which connects it to its target. The tunnel connection is dialled with the
first local connection and dialled again when it drops. Half-closes are
carried both ways. On SIGINT or SIGTERM it stops accepting, lets
connections in flight finish for up to -grace, then exits.

TLS on the tunnel link: -tls verifies serve's certificate against the
system's CAs, -tls-ca against the CAs in a file, -tls-insecure not at all.
`)
	listen := fs.String("listen", "127.0.0.1:8080", "`address` to accept local TCP connections on")
	via := fs.String("via", "", "`host:port` of 'tcpchan serve' (required)")
	useTLS := fs.Bool("tls", false, "use TLS on the tunnel link (implied by -tls-ca and -tls-insecure)")
	ca := fs.String("tls-ca", "", "PEM `file` with the CA certificate(s) that signed serve's certificate")
	insecure := fs.Bool("tls-insecure", false, "use TLS but do not verify serve's certificate (testing only)")
	serverName := fs.String("tls-server-name", "", "`name` serve's certificate must be valid for (default: the host of -via)")
	dialTimeout := fs.Duration("dial-timeout", defaultDialTimeout, "give up opening a stream (connecting the tunnel and waiting for serve's handshake included) after this `duration`")
	grace := fs.Duration("grace", defaultGrace, "on shutdown, let connections in flight finish for up to this `duration`")
	verbose := fs.Bool("v", false, "log every tunnel connection and stream (default: errors only)")
	if err := parseFlags(fs, args); err != nil {
		return nil, err
	}
	if err := checkHostPort("listen", *listen, false); err != nil {
		return nil, err
	}
	if err := checkHostPort("via", *via, true); err != nil {
		return nil, err
	}
	if *ca != "" && *insecure {
		return nil, usageError("-tls-ca and -tls-insecure exclude each other")
	}
	if *dialTimeout <= 0 || *grace <= 0 {
		return nil, usageError("-dial-timeout and -grace must be positive")
	}
	*useTLS = *useTLS || *ca != "" || *insecure
	if *serverName != "" && !*useTLS {
		return nil, usageError("-tls-server-name needs TLS (-tls, -tls-ca or -tls-insecure)")
	}
	return func(ctx context.Context, stdout, stderr io.Writer) error {
		opts := forwardOptions{tunnelOptions{
			DialTimeout: *dialTimeout,
			Grace:       *grace,
			Log:         newLogger(stderr, *verbose),
		}}
		var tlsCfg *tls.Config
		if *useTLS {
			var err error
			if tlsCfg, err = clientTLSConfig(*ca, *insecure, *serverName); err != nil {
				return err
			}
		}
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return err
		}
		opts.Log.Info("listening", "addr", ln.Addr().String(), "via", *via, "tls", tlsCfg != nil)
		d := newTunnelDialer(tlsCfg, *dialTimeout, opts.Log)
		defer d.Close()
		return runForward(ctx, ln, d, *via, opts)
	}, nil
}

// newTunnelDialer returns the Dialer of forward: its sessions run over TLS
// with tlsCfg if set, give up on serve's handshake after handshake (a
// stream goes out before serve's preface arrives, so the dial's own
// timeout does not cover that wait), and every tunnel connection it dials
// is logged.
func newTunnelDialer(tlsCfg *tls.Config, handshake time.Duration, log *slog.Logger) *tcpchan.Dialer {
	nd := &net.Dialer{}
	dial := nd.DialContext
	if tlsCfg != nil {
		dial = (&tls.Dialer{NetDialer: nd, Config: tlsCfg}).DialContext
	}
	return &tcpchan.Dialer{
		Config: &tcpchan.Config{HandshakeTimeout: handshake},
		DialConn: func(ctx context.Context, network, address string) (net.Conn, error) {
			c, err := dial(ctx, network, address)
			if err != nil {
				return nil, err
			}
			log.Info("tunnel connected", "via", address, "local", c.LocalAddr().String(), "tls", tlsCfg != nil)
			return c, nil
		},
	}
}

// runForward runs the tunnel's entry on ln until ctx ends: for every
// connection ln accepts it opens a stream to via with d (which keeps one
// tcpchan connection to via and redials it when it drops) and pipes the two
// together. When ctx ends it closes ln, waits up to opts.Grace for the
// connections in flight, resets what remains and returns nil once every
// goroutine it started has exited. It returns an error if ln fails for
// good. runForward owns ln; the caller owns d and closes it afterwards.
func runForward(ctx context.Context, ln net.Listener, d *tcpchan.Dialer, via string, opts forwardOptions) error {
	opts.fill()
	log := opts.Log
	r := newRelay()

	handle := func(c net.Conn) {
		start := time.Now()
		client := c.RemoteAddr().String()
		dctx, cancel := context.WithTimeout(r.ctx, opts.DialTimeout)
		st, err := d.DialStream(dctx, "tcp", via)
		cancel()
		if err != nil {
			log.Error("opening a stream through the tunnel", "via", via, "client", client, "err", err)
			abort(c) // a reset: nothing reached the target
			return
		}
		if !r.track(c, st) {
			return
		}
		log.Debug("stream opened", "client", client, "stream", st.ID())
		up, down, err := pipe(c, st, "client", "tunnel")
		logStream(log, err, r.untrack(c, st), "client", client, "stream", st.ID(),
			"bytes_up", up, "bytes_down", down, "dur", time.Since(start).Round(time.Microsecond))
	}

	loopDone := make(chan error, 1)
	go func() { loopDone <- acceptLoop(ln, r, handle) }()

	var err error
	select {
	case <-ctx.Done():
		log.Info("shutting down: no new connections", "grace", opts.Grace)
		ln.Close()
		<-loopDone
	case err = <-loopDone:
		ln.Close()
		if !errors.Is(err, net.ErrClosed) {
			err = fmt.Errorf("accepting local connections: %w", err)
			log.Error("listener failed, shutting down", "err", err)
		}
	}
	if n := r.drain(opts.Grace); n > 0 {
		log.Error("grace period over: reset the connections still open", "conns", n)
	}
	log.Info("stopped")
	return err
}

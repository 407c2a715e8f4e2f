// Command tcpchan demonstrates the tcpchan stream multiplexer and runs a TCP
// tunnel that carries many connections over one.
//
// Usage:
//
//	tcpchan demo [-duration 8s] [-streams 1000]
//	tcpchan serve [-listen :7000] -to host:port [-tls-cert file -tls-key file]
//	tcpchan forward [-listen 127.0.0.1:8080] -via host:7000 [-tls-ca file | -tls-insecure]
//
// demo starts a server and a client in one process on loopback, runs a few
// workloads over tcpchan and over raw TCP and prints a table of what it
// measured.
//
// serve and forward are the two ends of a tunnel: forward accepts local TCP
// connections and carries each as a stream over one persistent tcpchan
// connection (redialled when it drops) to serve, which dials the target for
// every stream. Half-closes are carried through both ways. Both shut down
// cleanly on SIGINT or SIGTERM: they stop accepting, let the connections in
// flight finish for up to -grace, then exit.
//
// Exit status: 0 on success, 1 on failure, 2 on bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, restore the default handling, so that a
	// second one ends the process at once if draining takes too long.
	context.AfterFunc(ctx, stop)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// command is one subcommand: parse reads its flags (errors are usage
// errors) and returns the function that runs it.
type command struct {
	name    string
	summary string
	parse   func(fs *flag.FlagSet, args []string) (runFunc, error)
}

// runFunc runs a parsed subcommand until it is done or ctx ends.
type runFunc func(ctx context.Context, stdout, stderr io.Writer) error

var commands = []command{
	{"demo", "run workloads over tcpchan and raw TCP on loopback and print a table", parseDemo},
	{"serve", "tunnel exit: accept tcpchan connections, dial the target for every stream", parseServe},
	{"forward", "tunnel entry: accept local TCP connections, carry each as a stream to serve", parseForward},
}

// usageErr is an error that is the user's: bad flags or arguments.
type usageErr struct{ msg string }

func (e *usageErr) Error() string { return e.msg }

// usageError returns a usage error with the message to show.
func usageError(format string, args ...any) error {
	return &usageErr{fmt.Sprintf(format, args...)}
}

// run dispatches args (without the program name) to a subcommand and
// returns the exit status. It is main without the process: tests call it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "tcpchan: no command given")
		mainUsage(stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		if name == "help" && len(args) > 1 {
			// "tcpchan help serve" is "tcpchan serve -h".
			return run(ctx, []string{args[1], "-h"}, stdout, stderr)
		}
		mainUsage(stdout)
		return exitOK
	}
	for _, c := range commands {
		if c.name != name {
			continue
		}
		fs := flag.NewFlagSet("tcpchan "+c.name, flag.ContinueOnError)
		fs.SetOutput(stderr)
		runIt, err := c.parse(fs, args[1:])
		switch {
		case errors.Is(err, flag.ErrHelp):
			return exitOK // the flag package printed the help
		case errors.As(err, new(*usageErr)):
			fmt.Fprintf(stderr, "tcpchan %s: %v\n", c.name, err)
			fmt.Fprintf(stderr, "Run 'tcpchan %s -h' for help.\n", c.name)
			return exitUsage
		case err != nil:
			// The flag package has already printed the error and usage.
			return exitUsage
		}
		if err := runIt(ctx, stdout, stderr); err != nil {
			fmt.Fprintf(stderr, "tcpchan %s: %v\n", c.name, err)
			return exitFail
		}
		return exitOK
	}
	fmt.Fprintf(stderr, "tcpchan: unknown command %q\n", name)
	mainUsage(stderr)
	return exitUsage
}

func mainUsage(w io.Writer) {
	fmt.Fprint(w, `tcpchan carries many streams over one connection.

Usage:
  tcpchan <command> [flags]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Examples:
  tcpchan demo
  tcpchan serve -listen :7000 -to 127.0.0.1:80          # on the server
  tcpchan forward -via server:7000                       # on the client (listens on 127.0.0.1:8080)
  curl http://127.0.0.1:8080/                           # every connection rides one tunnel connection

Run 'tcpchan <command> -h' for a command's flags.
`)
}

// setUsage makes fs print a description before its flags on -h.
func setUsage(fs *flag.FlagSet, synopsis, description string) {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: %s\n\n%s\nFlags:\n", synopsis, description)
		fs.PrintDefaults()
	}
}

// parseFlags parses args with fs and rejects positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("unexpected argument %q (flags only)", fs.Arg(0))
	}
	return nil
}

// newLogger returns the structured logger of the tunnel commands: errors
// only, or everything down to per-stream records if verbose.
func newLogger(w io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelError
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

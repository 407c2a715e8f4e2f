package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Bad usage exits with status 2 and says what is wrong; -h exits with 0
// and explains every flag.
func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string // in stderr (stdout for the main help)
	}{
		{nil, exitUsage, "no command given"},
		{[]string{"bogus"}, exitUsage, `unknown command "bogus"`},
		{[]string{"-h"}, exitOK, "Commands:"},
		{[]string{"help"}, exitOK, "forward"},
		{[]string{"help", "serve"}, exitOK, "-tls-cert"},

		{[]string{"serve"}, exitUsage, "-to is required"},
		{[]string{"serve", "-to", "localhost"}, exitUsage, `-to "localhost": want host:port`},
		{[]string{"serve", "-to", ":80"}, exitUsage, "missing host"},
		{[]string{"serve", "-to", "127.0.0.1:99999"}, exitUsage, `-to "127.0.0.1:99999": address 99999: invalid port`},
		{[]string{"serve", "-to", "127.0.0.1:nosuchport"}, exitUsage, `-to "127.0.0.1:nosuchport"`},
		{[]string{"serve", "-to", "127.0.0.1:80", "-listen", "127.0.0.1:70000"}, exitUsage, `-listen "127.0.0.1:70000"`},
		{[]string{"serve", "-to", "127.0.0.1:80", "-listen", "7000"}, exitUsage, "-listen"},
		{[]string{"serve", "-to", "127.0.0.1:80", "extra"}, exitUsage, `unexpected argument "extra"`},
		{[]string{"serve", "-to", "127.0.0.1:80", "-tls-cert", "c.pem"}, exitUsage, "-tls-cert and -tls-key go together"},
		{[]string{"serve", "-to", "127.0.0.1:80", "-grace", "0s"}, exitUsage, "must be positive"},
		{[]string{"serve", "-to", "127.0.0.1:80", "-grace", "soon"}, exitUsage, "invalid value"},
		{[]string{"serve", "-nope"}, exitUsage, "flag provided but not defined: -nope"},
		{[]string{"serve", "-h"}, exitOK, "of the target to dial for every stream"},

		{[]string{"forward"}, exitUsage, "-via is required"},
		{[]string{"forward", "-via", "127.0.0.1:99999"}, exitUsage, `-via "127.0.0.1:99999": address 99999: invalid port`},
		{[]string{"forward", "-via", "host:7000", "-tls-ca", "ca.pem", "-tls-insecure"}, exitUsage, "exclude each other"},
		{[]string{"forward", "-via", "host:7000", "-tls-server-name", "x"}, exitUsage, "needs TLS"},
		{[]string{"forward", "-via", "host:7000", "-dial-timeout", "-1s"}, exitUsage, "must be positive"},
		{[]string{"forward", "-h"}, exitOK, "-tls-insecure"},

		{[]string{"demo", "-duration", "0"}, exitUsage, "-duration 0s: want at least 6ms"},
		{[]string{"demo", "-streams", "0"}, exitUsage, "-streams 0: want 1 to"},
		{[]string{"demo", "-streams", "lots"}, exitUsage, "invalid value"},
		{[]string{"demo", "now"}, exitUsage, "unexpected argument"},
		{[]string{"demo", "-h"}, exitOK, "-streams"},

		// Runtime failures are not usage errors.
		{[]string{"serve", "-to", "127.0.0.1:80", "-tls-cert", "/nonexistent/c.pem", "-tls-key", "/nonexistent/k.pem"}, exitFail, "loading TLS certificate"},
		{[]string{"forward", "-via", "127.0.0.1:7000", "-tls-ca", "/nonexistent/ca.pem"}, exitFail, "reading TLS CA file"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit status %d, want %d\nstderr:\n%s", code, tc.code, &stderr)
			}
			if out := stdout.String() + stderr.String(); !strings.Contains(out, tc.want) {
				t.Errorf("output does not contain %q:\n%s", tc.want, out)
			}
			if tc.code == exitUsage && !strings.Contains(stderr.String(), "tcpchan") {
				t.Errorf("usage error does not name the program:\n%s", &stderr)
			}
		})
	}
}

// Every flag of every command is explained by its -h.
func TestHelpExplainsEveryFlag(t *testing.T) {
	for _, c := range commands {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), []string{c.name, "-h"}, &stdout, &stderr); code != exitOK {
			t.Fatalf("%s -h: exit status %d", c.name, code)
		}
		help := stderr.String()
		if !strings.Contains(help, "Usage: tcpchan "+c.name) {
			t.Errorf("%s -h has no synopsis:\n%s", c.name, help)
		}
		flags := regexp.MustCompile(`(?m)^  -(\S+)`).FindAllStringSubmatch(help, -1)
		if len(flags) < 2 {
			t.Errorf("%s -h lists %d flags:\n%s", c.name, len(flags), help)
		}
		for _, f := range flags {
			// The description follows a tab on the same line (one-letter
			// boolean flags) or on the next line, indented.
			if !regexp.MustCompile(`(?m)^  -` + regexp.QuoteMeta(f[1]) + `(\t\S|.*\n\s+\S)`).MatchString(help) {
				t.Errorf("%s -h: flag -%s has no description", c.name, f[1])
			}
		}
	}
}

// The demo runs with tiny durations and prints its table, with tcpchan on
// one TCP connection per workload.
func TestDemo(t *testing.T) {
	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := run(context.Background(), []string{"demo", "-duration", "600ms", "-streams", "50"}, &stdout, &stderr)
	out := stdout.String()
	if code != exitOK {
		t.Fatalf("demo: exit status %d\nstdout:\n%s\nstderr:\n%s", code, out, &stderr)
	}
	t.Logf("demo took %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	for _, want := range []string{"50 streams at once", "echoes/s", "bulk MB/s", "ping p99", "ops/s", "tcpchan", "raw TCP"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q", want)
		}
	}
	if strings.Contains(out, "error") {
		t.Errorf("table reports an error")
	}
	// TCP connections: tcpchan 1 per workload; raw TCP one per stream.
	rows := regexp.MustCompile(`TCP connections\s+(\S+)\s+(\S+)`).FindAllStringSubmatch(out, -1)
	if len(rows) != 3 {
		t.Fatalf("found %d TCP connection rows, want 3", len(rows))
	}
	if rows[0][1] != "1" || rows[0][2] != "50" || rows[1][1] != "1" || rows[1][2] != "2" || rows[2][1] != "1" {
		t.Errorf("TCP connection rows %q", rows)
	}
	if !strings.Contains(stderr.String(), "demo [6/6]") {
		t.Errorf("no progress on stderr:\n%s", &stderr)
	}
}

// serve and forward run through run(), as from the command line, and stop
// with status 0 when the context ends (as on SIGINT).
func TestRunServeForward(t *testing.T) {
	target := newHTTPTarget(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := func(args ...string) (addr string, errOut *syncBuffer, code chan int) {
		errOut, code = &syncBuffer{}, make(chan int, 1)
		go func() { code <- run(ctx, args, io.Discard, errOut) }()
		re := regexp.MustCompile(`msg=listening addr=(\S+)`)
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if m := re.FindStringSubmatch(errOut.String()); m != nil {
				return m[1], errOut, code
			}
		}
		t.Fatalf("%s did not log its address:\n%s", args[0], errOut)
		return
	}
	serveAddr, serveLog, serveCode := start("serve", "-v", "-listen", "127.0.0.1:0", "-to", target.addr())
	fwdAddr, fwdLog, fwdCode := start("forward", "-v", "-listen", "127.0.0.1:0", "-via", serveAddr)

	c := newClient(t, fwdAddr, nil)
	for i := range 5 {
		got, err := get(c, fmt.Sprintf("http://target/hello/%d", i))
		if err != nil || got != fmt.Sprintf("hello %d", i) {
			t.Fatalf("GET through the tunnel: %q, %v", got, err)
		}
	}
	c.CloseIdleConnections()
	cancel()
	for name, ch := range map[string]chan int{"serve": serveCode, "forward": fwdCode} {
		select {
		case code := <-ch:
			if code != exitOK {
				t.Errorf("%s exited with %d", name, code)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s still running 20s after cancel", name)
		}
	}
	if t.Failed() {
		t.Logf("serve:\n%s\nforward:\n%s", serveLog, fwdLog)
	}
	if n := strings.Count(serveLog.String(), `msg="tunnel connection accepted"`); n != 1 {
		t.Errorf("serve logged %d tunnel connections, want 1", n)
	}
	if _, err := net.Dial("tcp", fwdAddr); err == nil {
		t.Errorf("forward still listening after exit")
	}
}

// Without -v the tunnel logs nothing when all goes well.
func TestQuietByDefault(t *testing.T) {
	var b bytes.Buffer
	log := newLogger(&b, false)
	log.Info("listening")
	log.Debug("stream opened")
	log.Error("dialing target")
	if got := b.String(); strings.Contains(got, "listening") || strings.Contains(got, "stream opened") || !strings.Contains(got, "dialing target") {
		t.Errorf("quiet logger wrote:\n%s", got)
	}
}

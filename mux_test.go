package tcpchan

import (
	"bytes"
	"io"
	"net"
	"testing"

	"golang.org/x/net/nettest"
)

func TestEcho(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		pair func(testing.TB, *Config, *Config) (*Session, *Session)
	}{{"tcp", tcpSessions}, {"pipe", pipeSessions}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			client, server := tc.pair(t, nil, nil)
			go func() {
				for {
					st, err := server.AcceptStream()
					if err != nil {
						return
					}
					go func() {
						io.Copy(st, st)
						st.Close()
					}()
				}
			}()
			st, err := client.OpenStream()
			if err != nil {
				t.Fatal(err)
			}
			msg := bytes.Repeat([]byte("hello, tcpchan "), 10000)
			go func() {
				st.Write(msg)
				st.CloseWrite()
			}()
			got, err := io.ReadAll(st)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, msg) {
				t.Fatalf("echo returned %d bytes, want %d", len(got), len(msg))
			}
			st.Close()
		})
	}
}

func TestNetConn(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		conn func(testing.TB) (net.Conn, net.Conn)
	}{
		{"tcp", tcpConnPair},
		{"pipe", func(testing.TB) (net.Conn, net.Conn) { return net.Pipe() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
				a, b := tc.conn(t)
				client, err := Client(a, nil)
				if err != nil {
					return nil, nil, nil, err
				}
				server, err := Server(b, nil)
				if err != nil {
					return nil, nil, nil, err
				}
				s1, err := client.OpenStream()
				if err != nil {
					return nil, nil, nil, err
				}
				s2, err := server.AcceptStream()
				if err != nil {
					return nil, nil, nil, err
				}
				stop = func() {
					closeAndWait(t, client)
					closeAndWait(t, server)
				}
				return s1, s2, stop, nil
			})
		})
	}
}

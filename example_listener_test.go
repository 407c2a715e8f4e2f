package tcpchan_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tcpchan/tcpchan"
)

// An http.Server serves on a Listener as on any net.Listener; every request
// arrives on a stream of the client's one connection. Shutdown is graceful
// as with TCP: http.Server.Shutdown closes the Listener, which sends GOAWAY
// to each client and lets requests in flight finish; Listener.Shutdown then
// waits until the sessions have drained.
func ExampleListen() {
	ln, err := tcpchan.Listen("tcp", "127.0.0.1:0", nil)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s", r.URL.Path)
	})}
	go srv.Serve(ln)

	d := &tcpchan.Dialer{}
	defer d.Close()
	client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	defer client.CloseIdleConnections()
	for _, path := range []string{"/a", "/b"} {
		resp, err := client.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(string(body))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Println("http.Server.Shutdown:", srv.Shutdown(ctx))
	fmt.Println("Listener.Shutdown:", ln.Shutdown(ctx))
	// Output:
	// hello from /a
	// hello from /b
	// http.Server.Shutdown: <nil>
	// Listener.Shutdown: <nil>
}

// A Dialer is the dial function of an http.Transport: concurrent requests
// each get a stream, and all of them share one TCP connection to the
// server, so none waits for a TCP or TLS handshake once it is up.
func ExampleDialer() {
	ln, err := tcpchan.Listen("tcp", "127.0.0.1:0", nil)
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	clientConns := map[string]bool{} // the client's address of each connection
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		clientConns[r.RemoteAddr] = true
		mu.Unlock()
		fmt.Fprint(w, "ok")
	})}
	go srv.Serve(ln)

	// For TLS, set DialConn: (&tls.Dialer{Config: cfg}).DialContext.
	d := &tcpchan.Dialer{}
	client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			resp, err := client.Get("http://" + ln.Addr().String())
			if err != nil {
				log.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	wg.Wait()
	fmt.Printf("20 concurrent requests over %d TCP connection(s)\n", len(clientConns))

	client.CloseIdleConnections()
	d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	ln.Shutdown(ctx)
	// Output:
	// 20 concurrent requests over 1 TCP connection(s)
}

// One message per stream: the sender writes the message and calls
// CloseWrite; the receiver reads to io.EOF. There is no length prefix to
// agree on, no size ceiling (a 4-byte prefix caps messages at 4 GB), and
// neither side needs the whole message in memory: here the receiver hashes
// it as it arrives and answers on the same stream.
func Example_messages() {
	ln, err := tcpchan.Listen("tcp", "127.0.0.1:0", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Shutdown(context.Background())
	go func() {
		for {
			st, err := ln.AcceptStream()
			if err != nil {
				return // closed
			}
			go func() {
				defer st.Close()
				h := sha256.New()
				n, err := io.Copy(h, st) // the whole message: up to EOF
				if err != nil {
					return // the sender's stream or session failed: no reply
				}
				fmt.Fprintf(st, "%d %x", n, h.Sum(nil))
			}()
		}
	}()

	d := &tcpchan.Dialer{}
	defer d.Close()
	send := func(msg io.Reader) (string, error) {
		st, err := d.DialStream(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			return "", err
		}
		defer st.Close()
		h := sha256.New()
		n, err := io.Copy(st, io.TeeReader(msg, h))
		if err != nil {
			return "", err
		}
		st.CloseWrite() // end of message; the reply comes back on the stream
		reply, err := io.ReadAll(st)
		if err != nil {
			return "", err
		}
		if string(reply) != fmt.Sprintf("%d %x", n, h.Sum(nil)) {
			return "", fmt.Errorf("receiver got something else: %s", reply)
		}
		return fmt.Sprintf("%d bytes, checksum ok", n), nil
	}
	for _, msg := range []io.Reader{
		strings.NewReader("hello"),
		strings.NewReader(""),
		io.LimitReader(rand.NewChaCha8([32]byte{1}), 20<<20), // generated as it is sent
	} {
		result, err := send(msg)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(result)
	}
	// Output:
	// 5 bytes, checksum ok
	// 0 bytes, checksum ok
	// 20971520 bytes, checksum ok
}

// Several files and a message in one transfer, sent in parallel, one stream
// each: a small header carries the name (2-byte length, then the name), the
// content follows up to CloseWrite, and the receiver answers with the
// checksum it computed. A large file does not hold up the small ones, as
// the streams' frames are interleaved, and a failed file fails alone.
func Example_files() {
	ln, err := tcpchan.Listen("tcp", "127.0.0.1:0", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Shutdown(context.Background())
	go func() {
		for {
			st, err := ln.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				defer st.Close()
				r := bufio.NewReader(st)
				var size uint16
				if binary.Read(r, binary.BigEndian, &size) != nil {
					return
				}
				name := make([]byte, size)
				if _, err := io.ReadFull(r, name); err != nil {
					return
				}
				h := sha256.New()
				n, err := io.Copy(h, r) // stored to disk in real life
				if err != nil {
					return
				}
				fmt.Fprintf(st, "%s %d %x", name, n, h.Sum(nil))
			}()
		}
	}()

	files := map[string][]byte{
		"message":     []byte("three files follow"),
		"photo.jpg":   make([]byte, 3<<20),
		"archive.tar": make([]byte, 700<<10),
		"empty":       nil,
	}
	rand.NewChaCha8([32]byte{2}).Read(files["photo.jpg"])
	rand.NewChaCha8([32]byte{3}).Read(files["archive.tar"])

	d := &tcpchan.Dialer{}
	defer d.Close()
	sendFile := func(name string, content []byte) (string, error) {
		st, err := d.DialStream(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			return "", err
		}
		defer st.Close()
		header := binary.BigEndian.AppendUint16(nil, uint16(len(name)))
		if _, err := st.Write(append(header, name...)); err != nil {
			return "", err
		}
		if _, err := st.Write(content); err != nil {
			return "", err
		}
		st.CloseWrite()
		reply, err := io.ReadAll(st)
		if err != nil {
			return "", err
		}
		sum := sha256.Sum256(content)
		if want := fmt.Sprintf("%s %d %s", name, len(content), hex.EncodeToString(sum[:])); string(reply) != want {
			return "", fmt.Errorf("%s: receiver answered %q", name, reply)
		}
		return fmt.Sprintf("%s: %d bytes, checksum ok", name, len(content)), nil
	}

	var mu sync.Mutex
	var results []string
	var wg sync.WaitGroup
	for name, content := range files {
		wg.Go(func() {
			result, err := sendFile(name, content)
			if err != nil {
				log.Fatal(err)
			}
			mu.Lock()
			results = append(results, result)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(results)
	for _, r := range results {
		fmt.Println(r)
	}
	// Output:
	// archive.tar: 716800 bytes, checksum ok
	// empty: 0 bytes, checksum ok
	// message: 18 bytes, checksum ok
	// photo.jpg: 3145728 bytes, checksum ok
}

package tcpchan_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/tcpchan/tcpchan"
)

// Both ends of one TCP connection open streams; here the client dials three
// and the server echoes each in upper case.
func Example() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()

	serverDone := make(chan struct{})
	go func() {
		defer close(serverDone)
		conn, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		session, err := tcpchan.Server(conn, nil)
		if err != nil {
			log.Fatal(err)
		}
		defer session.Close()
		for range 3 {
			stream, err := session.Accept()
			if err != nil {
				log.Fatal(err)
			}
			msg, _ := io.ReadAll(stream)
			stream.Write([]byte(strings.ToUpper(string(msg))))
			stream.Close()
		}
	}()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	session, err := tcpchan.Client(conn, nil) // one TCP connection...
	if err != nil {
		log.Fatal(err)
	}
	defer session.Close()
	for _, word := range []string{"one", "two", "three"} {
		stream, err := session.OpenStream() // ...many streams, no round trip to open
		if err != nil {
			log.Fatal(err)
		}
		stream.Write([]byte(word))
		stream.CloseWrite() // the server reads EOF, and can still answer
		reply, err := io.ReadAll(stream)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("stream %d: %s\n", stream.ID(), reply)
		stream.Close()
	}
	<-serverDone
	// Output:
	// stream 1: ONE
	// stream 3: TWO
	// stream 5: THREE
}

// A Session is a net.Listener, so an http.Server serves on it; the other
// side's Session.DialContext is the dial function of an http.Transport.
// Every request rides its own stream over the one connection.
func ExampleSession_Accept_http() {
	c1, c2 := net.Pipe()
	server, _ := tcpchan.Server(c2, nil)
	client, _ := tcpchan.Client(c1, nil)
	defer client.Close()

	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s", r.URL.Path)
	})}
	go srv.Serve(server)
	defer srv.Close() // closes the session

	hc := &http.Client{Transport: &http.Transport{DialContext: client.DialContext}}
	defer hc.CloseIdleConnections()
	for _, path := range []string{"/a", "/b"} {
		resp, err := hc.Get("http://tcpchan" + path)
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(string(body))
	}
	// Output:
	// hello from /a
	// hello from /b
}

// An http.Server serving a session's StreamListener shuts down
// gracefully: the request in flight finishes, then the session closes.
func ExampleSession_StreamListener() {
	c1, c2 := net.Pipe()
	server, _ := tcpchan.Server(c2, nil)
	client, _ := tcpchan.Client(c1, nil)
	defer client.Close()

	inHandler := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(inHandler)
		time.Sleep(50 * time.Millisecond) // still working when Shutdown starts
		fmt.Fprint(w, "finished")
	})}
	go srv.Serve(server.StreamListener())

	hc := &http.Client{Transport: &http.Transport{DialContext: client.DialContext}}
	defer hc.CloseIdleConnections()
	go func() {
		<-inHandler
		srv.Shutdown(context.Background())
	}()
	resp, err := hc.Get("http://tcpchan/")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))
	hc.CloseIdleConnections()
	<-server.Done()
	fmt.Println("session closed:", server.Err() != nil)
	// Output:
	// finished
	// session closed: true
}

// Shutdown is graceful: the peer may not open new streams, open ones
// finish, then the session closes.
func ExampleSession_Shutdown() {
	c1, c2 := net.Pipe()
	server, _ := tcpchan.Server(c2, nil)
	client, _ := tcpchan.Client(c1, nil)
	defer client.Close()

	stream, _ := client.OpenStream()
	stream.Write([]byte("in flight"))
	stream.CloseWrite()
	accepted, _ := server.AcceptStream()

	done := make(chan error)
	go func() { done <- server.Shutdown(context.Background()) }()

	msg, _ := io.ReadAll(accepted)
	accepted.Write([]byte("finished: " + string(msg)))
	accepted.Close()
	reply, _ := io.ReadAll(stream)
	fmt.Println(string(reply))
	fmt.Println("Shutdown:", <-done)
	// Output:
	// finished: in flight
	// Shutdown: <nil>
}

package tcpchan

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFrameHeaderRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		h    frameHeader
		wire []byte
	}{
		{"data", frameHeader{typ: frameData, streamID: 1, length: 1024},
			[]byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 4, 0}},
		{"data syn fin", frameHeader{typ: frameData, flags: flagSYN | flagFIN, streamID: 0x01020304, length: 0},
			[]byte{0, 3, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0}},
		{"window update", frameHeader{typ: frameWindowUpdate, streamID: 2, length: 65536},
			[]byte{1, 0, 0, 0, 0, 0, 0, 2, 0, 1, 0, 0}},
		{"session window update", frameHeader{typ: frameWindowUpdate, streamID: 0, length: maxWindow},
			[]byte{1, 0, 0, 0, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff}},
		{"ping", frameHeader{typ: framePing, length: 0xdeadbeef},
			[]byte{2, 0, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef}},
		{"ping ack", frameHeader{typ: framePing, flags: flagACK, length: 7},
			[]byte{2, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7}},
		{"rst refused", frameHeader{typ: frameReset, streamID: 9, length: uint32(codeRefused)},
			[]byte{3, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 2}},
		{"goaway", frameHeader{typ: frameGoAway, streamID: 41, length: uint32(codeNoError)},
			[]byte{4, 0, 0, 0, 0, 0, 0, 41, 0, 0, 0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := appendHeader(nil, tc.h)
			if !bytes.Equal(got, tc.wire) {
				t.Errorf("appendHeader = % x, want % x", got, tc.wire)
			}
			dec, err := decodeHeader(tc.wire, maxFrameSizeLimit)
			if err != nil {
				t.Fatalf("decodeHeader: %v", err)
			}
			if diff := cmp.Diff(tc.h, dec, cmp.AllowUnexported(frameHeader{})); diff != "" {
				t.Errorf("decodeHeader mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeHeaderErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		wire []byte
		want string // in the error text
	}{
		{"unknown type", []byte{9, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}, "unknown frame type 9"},
		{"reserved bytes", []byte{0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0}, "reserved bytes"},
		{"ack on data", []byte{0, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}, "flags 0x4 not allowed"},
		{"syn on ping", []byte{2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "flags 0x1 not allowed"},
		{"data on stream 0", []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, "DATA frame on stream 0"},
		{"data too long", []byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 4, 1}, "length 1025 exceeds the maximum frame size 1024"},
		{"zero window update", []byte{1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}, "increment 0"},
		{"huge window update", []byte{1, 0, 0, 0, 0, 0, 0, 1, 0x80, 0, 0, 0}, "increment 2147483648"},
		{"ping on stream", []byte{2, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0}, "PING frame on stream 3"},
		{"rst on stream 0", []byte{3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, "RST frame on stream 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeHeader(tc.wire, 1024)
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("decodeHeader error = %v, want ErrProtocol", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestPreface(t *testing.T) {
	t.Parallel()
	want := settings{streamWindow: 256 << 10, sessionWindow: 16 << 20, maxFrameSize: 1024, maxStreams: 100}
	b := appendPreface(nil, want)
	if len(b) != prefaceSize {
		t.Fatalf("preface is %d bytes, want %d", len(b), prefaceSize)
	}
	got, err := decodePreface(b)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("decodePreface = %+v, want %+v", got, want)
	}

	bad := []struct {
		name   string
		mutate func([]byte)
		want   string
	}{
		{"magic", func(b []byte) { copy(b, "GET / H") }, "did not send the tcpchan preface"},
		{"version", func(b []byte) { b[7] = 2 }, "protocol version 2"},
		{"small window", func(b []byte) { b[8], b[9], b[10], b[11] = 0, 0, 0, 1 }, "stream window 1"},
		{"small session window", func(b []byte) { b[12], b[13], b[14], b[15] = 0, 0, 0, 1 }, "session window 1"},
		{"small frame", func(b []byte) { b[16], b[17], b[18], b[19] = 0, 0, 0, 1 }, "max frame size 1"},
		{"huge frame", func(b []byte) { b[16], b[17], b[18], b[19] = 0, 2, 0, 0 }, "max frame size 131072"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			b := appendPreface(nil, want)
			tc.mutate(b)
			_, err := decodePreface(b)
			if !errors.Is(err, ErrHandshake) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("decodePreface error = %v, want ErrHandshake mentioning %q", err, tc.want)
			}
		})
	}
}

// FuzzFrame feeds arbitrary bytes to the header and preface decoders: they
// must return an error or a value that encodes back to the same bytes, and
// never panic.
func FuzzFrame(f *testing.F) {
	f.Add(appendHeader(nil, frameHeader{typ: frameData, flags: flagSYN, streamID: 1, length: 5}), uint32(1024))
	f.Add(appendHeader(nil, frameHeader{typ: frameWindowUpdate, streamID: 0, length: 1}), uint32(1024))
	f.Add(appendHeader(nil, frameHeader{typ: framePing, flags: flagACK, length: 3}), uint32(65536))
	f.Add(appendHeader(nil, frameHeader{typ: frameReset, streamID: 3, length: 2}), uint32(1024))
	f.Add(appendHeader(nil, frameHeader{typ: frameGoAway, streamID: 8, length: 1}), uint32(1024))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, uint32(0))
	f.Add(appendPreface(nil, settings{streamWindow: 1 << 16, sessionWindow: 1 << 20, maxFrameSize: 1024}), uint32(1024))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), uint32(1024))
	f.Add([]byte{}, uint32(1024))
	f.Fuzz(func(t *testing.T, b []byte, maxPayload uint32) {
		if len(b) >= headerSize {
			h, err := decodeHeader(b[:headerSize], maxPayload)
			if err == nil {
				if got := appendHeader(nil, h); !bytes.Equal(got, b[:headerSize]) {
					t.Fatalf("header % x decoded to %v, which encodes to % x", b[:headerSize], h, got)
				}
				if h.typ == frameData && h.length > maxPayload {
					t.Fatalf("accepted DATA of %d bytes over the maximum %d", h.length, maxPayload)
				}
			} else if !errors.Is(err, ErrProtocol) {
				t.Fatalf("decodeHeader error %v does not wrap ErrProtocol", err)
			}
		}
		if len(b) >= prefaceSize {
			s, err := decodePreface(b[:prefaceSize])
			if err == nil {
				if got := appendPreface(nil, s); !bytes.Equal(got, b[:prefaceSize]) {
					t.Fatalf("preface % x decoded to %+v, which encodes to % x", b[:prefaceSize], s, got)
				}
			} else if !errors.Is(err, ErrHandshake) {
				t.Fatalf("decodePreface error %v does not wrap ErrHandshake", err)
			}
		}
	})
}

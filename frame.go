package tcpchan

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The wire format is described in PROTOCOL.md; this file is its only
// implementation of encoding and stateless validation.

const (
	// protocolVersion is carried in the preface; a peer announcing another
	// version fails the handshake.
	protocolVersion = 1

	// prefaceSize is the length of the handshake preface each side sends
	// first: 7 bytes of magic, 1 byte of version, 4 settings of 4 bytes.
	prefaceSize = 24

	// headerSize is the length of every frame header.
	headerSize = 12

	// minFrameSize is the smallest MaxFrameSize a peer may announce, and the
	// size a sender uses before it has read the peer's preface.
	minFrameSize = 1024
	// maxFrameSizeLimit is the largest MaxFrameSize a peer may announce.
	maxFrameSizeLimit = 64 << 10

	// minStreamWindow is the smallest initial stream window a peer may
	// announce; a sender assumes it for new streams until the preface
	// arrives, which is what lets data follow a SYN with no round trip.
	minStreamWindow = 64 << 10
	// minSessionWindow is the smallest session window a peer may announce,
	// assumed likewise until the preface arrives.
	minSessionWindow = 1 << 20
	// maxWindow bounds every window and credit, as in HTTP/2.
	maxWindow = 1<<31 - 1
	// maxStreamID is the largest stream ID: a side that has used it opens
	// no more streams.
	maxStreamID = 1<<31 - 1
)

// magic opens the preface. It is not valid as the start of HTTP, TLS or SSH,
// so a peer speaking any of those fails at its first bytes.
var magic = [7]byte{'T', 'C', 'P', 'C', 'H', 'A', 'N'}

// frameType identifies a frame's meaning.
type frameType uint8

const (
	frameData         frameType = 0 // stream data; SYN opens, FIN half-closes
	frameWindowUpdate frameType = 1 // adds send credit to a stream or, on stream 0, the session
	framePing         frameType = 2 // liveness and RTT; ACK answers
	frameReset        frameType = 3 // aborts one stream with an error code
	frameGoAway       frameType = 4 // no new streams; carries the last stream ID accepted
	frameTypeCount              = 5
)

var frameTypeNames = [frameTypeCount]string{"DATA", "WINDOW_UPDATE", "PING", "RST", "GOAWAY"}

func (t frameType) String() string {
	if int(t) < len(frameTypeNames) {
		return frameTypeNames[t]
	}
	return fmt.Sprintf("UNKNOWN(%d)", uint8(t))
}

// Frame flags.
const (
	flagSYN uint8 = 1 << 0 // DATA: first frame of a stream
	flagFIN uint8 = 1 << 1 // DATA: last frame the sender will send on the stream
	flagACK uint8 = 1 << 2 // PING: answer to a ping
)

// allowedFlags lists, per frame type, the flags it may carry.
var allowedFlags = [frameTypeCount]uint8{
	frameData: flagSYN | flagFIN,
	framePing: flagACK,
}

// errCode is carried by RST and GOAWAY frames.
type errCode uint32

const (
	codeNoError     errCode = 0 // GOAWAY: graceful shutdown
	codeProtocol    errCode = 1 // the peer broke the protocol
	codeRefused     errCode = 2 // RST: stream not accepted (limit or backlog full, or shutting down); safe to retry
	codeCancel      errCode = 3 // RST: the receiver closed the stream and discards further data
	codeFlowControl errCode = 4 // a window was overrun
	codeInternal    errCode = 5 // any other local failure
)

func (c errCode) String() string {
	switch c {
	case codeNoError:
		return "no error"
	case codeProtocol:
		return "protocol error"
	case codeRefused:
		return "refused"
	case codeCancel:
		return "cancel"
	case codeFlowControl:
		return "flow control error"
	case codeInternal:
		return "internal error"
	}
	return fmt.Sprintf("code %d", uint32(c))
}

// frameHeader is the fixed 12-byte header that starts every frame:
//
//	type(1) flags(1) reserved(2, zero) streamID(4) length(4)
//
// For DATA, length is the payload length. The other types have no payload and
// length carries their value: the credit increment (WINDOW_UPDATE), the
// opaque ping value (PING) or the error code (RST, GOAWAY).
type frameHeader struct {
	typ      frameType
	flags    uint8
	streamID uint32
	length   uint32
}

func (h frameHeader) String() string {
	return fmt.Sprintf("%v flags=%#x stream=%d length=%d", h.typ, h.flags, h.streamID, h.length)
}

// appendHeader appends the encoding of h to b.
func appendHeader(b []byte, h frameHeader) []byte {
	return append(b, byte(h.typ), h.flags, 0, 0,
		byte(h.streamID>>24), byte(h.streamID>>16), byte(h.streamID>>8), byte(h.streamID),
		byte(h.length>>24), byte(h.length>>16), byte(h.length>>8), byte(h.length))
}

// decodeHeader parses and validates a header from b (headerSize bytes).
// maxPayload is the largest DATA payload the decoding side accepts. Every
// rule that needs no session state is checked here, before anything is
// allocated for the frame; the error names what was wrong and wraps
// ErrProtocol.
func decodeHeader(b []byte, maxPayload uint32) (frameHeader, error) {
	_ = b[headerSize-1]
	h := frameHeader{
		typ:      frameType(b[0]),
		flags:    b[1],
		streamID: binary.BigEndian.Uint32(b[4:]),
		length:   binary.BigEndian.Uint32(b[8:]),
	}
	if h.typ >= frameTypeCount {
		return h, protocolErrorf("unknown frame type %d", b[0])
	}
	if b[2] != 0 || b[3] != 0 {
		return h, protocolErrorf("%v frame: reserved bytes %#02x%02x are not zero", h.typ, b[2], b[3])
	}
	if extra := h.flags &^ allowedFlags[h.typ]; extra != 0 {
		return h, protocolErrorf("%v frame: flags %#x not allowed", h.typ, extra)
	}
	switch h.typ {
	case frameData:
		if h.streamID == 0 {
			return h, protocolErrorf("DATA frame on stream 0")
		}
		if h.length > maxPayload {
			return h, protocolErrorf("DATA frame on stream %d: length %d exceeds the maximum frame size %d", h.streamID, h.length, maxPayload)
		}
	case frameWindowUpdate:
		if h.length == 0 || h.length > maxWindow {
			return h, protocolErrorf("WINDOW_UPDATE on stream %d: increment %d outside 1..%d", h.streamID, h.length, maxWindow)
		}
	case framePing:
		if h.streamID != 0 {
			return h, protocolErrorf("PING frame on stream %d, want 0", h.streamID)
		}
	case frameReset:
		if h.streamID == 0 {
			return h, protocolErrorf("RST frame on stream 0")
		}
	case frameGoAway:
		// streamID is the last stream accepted; any value is valid.
	}
	return h, nil
}

// settings are what each side announces in its preface about what it
// accepts.
type settings struct {
	streamWindow  uint32 // initial receive window of every stream
	sessionWindow uint32 // receive window shared by all streams
	maxFrameSize  uint32 // largest DATA payload accepted
	maxStreams    uint32 // most concurrent streams the peer may open
}

// assumedSettings are what a side may rely on before it has read the peer's
// preface: the smallest values a valid preface can announce, and no stream
// limit (none is known yet: the peer refuses what exceeds its own).
var assumedSettings = settings{
	streamWindow:  minStreamWindow,
	sessionWindow: minSessionWindow,
	maxFrameSize:  minFrameSize,
	maxStreams:    1<<32 - 1,
}

// appendPreface appends the handshake preface announcing s.
func appendPreface(b []byte, s settings) []byte {
	b = append(b, magic[:]...)
	b = append(b, protocolVersion)
	b = binary.BigEndian.AppendUint32(b, s.streamWindow)
	b = binary.BigEndian.AppendUint32(b, s.sessionWindow)
	b = binary.BigEndian.AppendUint32(b, s.maxFrameSize)
	b = binary.BigEndian.AppendUint32(b, s.maxStreams)
	return b
}

// checkPrefaceStart checks the first bytes of a preface, up to the
// version (up to len(magic)+1 bytes), as far as b goes. Errors wrap
// ErrHandshake.
func checkPrefaceStart(b []byte) error {
	if k := min(len(b), len(magic)); string(b[:k]) != string(magic[:k]) {
		return fmt.Errorf("%w: peer did not send the tcpchan preface (got %q)", ErrHandshake, b)
	}
	if len(b) > len(magic) && b[len(magic)] != protocolVersion {
		return fmt.Errorf("%w: peer speaks protocol version %d, want %d", ErrHandshake, b[len(magic)], protocolVersion)
	}
	return nil
}

// decodePreface parses and validates a preface (prefaceSize bytes). Errors
// wrap ErrHandshake.
func decodePreface(b []byte) (settings, error) {
	_ = b[prefaceSize-1]
	if err := checkPrefaceStart(b[:len(magic)+1]); err != nil {
		return settings{}, err
	}
	s := settings{
		streamWindow:  binary.BigEndian.Uint32(b[8:]),
		sessionWindow: binary.BigEndian.Uint32(b[12:]),
		maxFrameSize:  binary.BigEndian.Uint32(b[16:]),
		maxStreams:    binary.BigEndian.Uint32(b[20:]),
	}
	switch {
	case s.streamWindow < minStreamWindow || s.streamWindow > maxWindow:
		return s, fmt.Errorf("%w: peer announced stream window %d outside %d..%d", ErrHandshake, s.streamWindow, minStreamWindow, maxWindow)
	case s.sessionWindow < minSessionWindow || s.sessionWindow > maxWindow:
		return s, fmt.Errorf("%w: peer announced session window %d outside %d..%d", ErrHandshake, s.sessionWindow, minSessionWindow, maxWindow)
	case s.maxFrameSize < minFrameSize || s.maxFrameSize > maxFrameSizeLimit:
		return s, fmt.Errorf("%w: peer announced max frame size %d outside %d..%d", ErrHandshake, s.maxFrameSize, minFrameSize, maxFrameSizeLimit)
	}
	return s, nil
}

// Errors reported by sessions and streams. Match them with errors.Is: the
// errors returned wrap them with detail.
var (
	// ErrStreamReset means the peer aborted the stream (RST). Data the peer
	// had sent but that was not yet read is discarded, except data it had
	// completed with FIN before the RST, which stays readable up to io.EOF.
	ErrStreamReset = errors.New("tcpchan: stream reset by peer")
	// ErrStreamRefused means the peer did not accept the stream: its stream
	// limit or accept backlog was full, or it is shutting down. The peer
	// processed none of the stream's data, so it is safe to retry.
	ErrStreamRefused = errors.New("tcpchan: stream refused by peer")
	// ErrGoAway means the session no longer opens streams: the peer sent
	// GOAWAY, or Shutdown was called locally.
	ErrGoAway = errors.New("tcpchan: session going away")
	// ErrProtocol means the peer broke the protocol; the session is closed
	// and the error says what was wrong. The peer is told with a GOAWAY
	// carrying PROTOCOL_ERROR before the connection closes (a tcpchan peer
	// then ends with ErrGoAway), if that frame goes out within a second:
	// not to a peer that stopped reading, nor after Close or Shutdown
	// half-closed the connection.
	ErrProtocol = errors.New("tcpchan: protocol error")
	// ErrHandshake means the peer's preface was missing, late, malformed or
	// of another protocol version.
	ErrHandshake = errors.New("tcpchan: handshake failed")
	// ErrKeepAliveTimeout means the peer sent nothing for longer than
	// KeepAliveInterval+KeepAliveTimeout; it is a net.Error whose Timeout
	// method reports true.
	ErrKeepAliveTimeout error = timeoutError("tcpchan: keepalive timeout: peer silent")
	// ErrWriteTimeout means the connection accepted no writes for
	// WriteTimeout; it is a net.Error whose Timeout method reports true.
	ErrWriteTimeout error = timeoutError("tcpchan: write timeout: connection accepts no data")
)

// timeoutError is a net.Error whose Timeout method reports true.
type timeoutError string

func (e timeoutError) Error() string   { return string(e) }
func (e timeoutError) Timeout() bool   { return true }
func (e timeoutError) Temporary() bool { return false }

func protocolErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

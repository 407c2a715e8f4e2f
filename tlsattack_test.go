package tcpchan

// Attacks that need TLS records the attacker seals itself: a TLS 1.3 peer
// whose KeyUpdates make crypto/tls write from inside Read.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordCounter counts the TLS records written through it, from reset on.
type recordCounter struct {
	net.Conn
	mu      sync.Mutex
	records uint64
	need    int // bytes left of the current record's header and body
	hdr     []byte
}

func (c *recordCounter) Write(b []byte) (int, error) {
	c.mu.Lock()
	for p := b; len(p) > 0; {
		if c.need > 0 {
			k := min(c.need, len(p))
			c.need -= k
			p = p[k:]
			continue
		}
		k := min(5-len(c.hdr), len(p))
		c.hdr = append(c.hdr, p[:k]...)
		p = p[k:]
		if len(c.hdr) == 5 {
			c.records++
			c.need = int(binary.BigEndian.Uint16(c.hdr[3:]))
			c.hdr = c.hdr[:0]
		}
	}
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *recordCounter) reset() {
	c.mu.Lock()
	c.records = 0
	c.mu.Unlock()
}

func (c *recordCounter) count() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.records
}

func hkdfExpandLabel(h func() hash.Hash, secret []byte, label string, n int) []byte {
	label = "tls13 " + label
	info := []byte{byte(n >> 8), byte(n), byte(len(label))}
	info = append(info, label...)
	info = append(info, 0)
	out, err := hkdf.Expand(h, secret, string(info), n)
	if err != nil {
		panic(err)
	}
	return out
}

// tls13Sealer seals TLS 1.3 records the way the client whose traffic
// secret it holds would, from sequence number seq.
type tls13Sealer struct {
	h      func() hash.Hash
	keyLen int
	secret []byte
	aead   cipher.AEAD
	iv     []byte
	seq    uint64
}

func (s *tls13Sealer) setSecret(secret []byte) {
	s.secret = secret
	block, err := aes.NewCipher(hkdfExpandLabel(s.h, secret, "key", s.keyLen))
	if err != nil {
		panic(err)
	}
	if s.aead, err = cipher.NewGCM(block); err != nil {
		panic(err)
	}
	s.iv = hkdfExpandLabel(s.h, secret, "iv", 12)
	s.seq = 0
}

func (s *tls13Sealer) seal(typ byte, data []byte) []byte {
	inner := append(append([]byte(nil), data...), typ)
	n := len(inner) + s.aead.Overhead()
	header := []byte{23, 3, 3, byte(n >> 8), byte(n)}
	nonce := append([]byte(nil), s.iv...)
	for i := range 8 {
		nonce[4+i] ^= byte(s.seq >> (56 - 8*i))
	}
	s.seq++
	return s.aead.Seal(header, nonce, inner, header)
}

// keyUpdate is a KeyUpdate with update_requested, after which the sealer
// uses the next traffic secret.
func (s *tls13Sealer) keyUpdate() []byte {
	rec := s.seal(22, []byte{24, 0, 0, 1, 1})
	s.setSecret(hkdfExpandLabel(s.h, s.secret, "traffic upd", len(s.secret)))
	return rec
}

// keyUpdates returns n KeyUpdates asking for an answer, each followed by
// an application data record carrying data (crypto/tls accepts at most 16
// records in a row that carry no data).
func (s *tls13Sealer) keyUpdates(n int, data []byte) []byte {
	var raw []byte
	for range n {
		raw = append(raw, s.keyUpdate()...)
		raw = append(raw, s.seal(23, data)...)
	}
	return raw
}

// closeWithin closes s and reports whether Close returned within d.
func closeWithin(s *Session, d time.Duration) bool {
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
		return true
	case <-time.After(d):
		return false
	}
}

// handshakeBoth completes the TLS handshake of server v and client at.
func handshakeBoth(t *testing.T, v, at *tls.Conn) {
	t.Helper()
	hs := make(chan error, 1)
	go func() { hs <- v.Handshake() }()
	if err := at.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-hs; err != nil {
		t.Fatal(err)
	}
}

// clientSealer returns a sealer for the TLS 1.3 client at's records under
// its first application traffic secret, found in keyLog (its
// KeyLogWriter's output), from sequence number 0.
func clientSealer(t *testing.T, at *tls.Conn, keyLog []byte) *tls13Sealer {
	t.Helper()
	sealer := &tls13Sealer{}
	switch cs := at.ConnectionState().CipherSuite; cs {
	case tls.TLS_AES_128_GCM_SHA256:
		sealer.h, sealer.keyLen = sha256.New, 16
	case tls.TLS_AES_256_GCM_SHA384:
		sealer.h, sealer.keyLen = sha512.New384, 32
	default:
		t.Skipf("cipher suite %v", tls.CipherSuiteName(cs))
	}
	var secret []byte
	sc := bufio.NewScanner(bytes.NewReader(keyLog))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "CLIENT_TRAFFIC_SECRET_0" {
			secret, _ = hex.DecodeString(f[2])
		}
	}
	if secret == nil {
		t.Fatal("no client traffic secret logged")
	}
	sealer.setSecret(secret)
	return sealer
}

// keyUpdateVictim makes a TLS 1.3 victim session with cfg whose peer's
// receive window is closed, its writer idle, and a sealer for the peer's
// records.
func keyUpdateVictim(t *testing.T, cfg *Config) (*Session, *attacker, net.Conn, *recordCounter, *tls13Sealer) {
	serverTLS, clientTLS := testTLSConfigs(t)
	var keyLog bytes.Buffer
	clientTLS.KeyLogWriter = &keyLog
	clientTLS.MinVersion = tls.VersionTLS13
	c1, c2 := tcpConnPair(t)
	c1.(*net.TCPConn).SetWriteBuffer(16 << 10)
	c2.(*net.TCPConn).SetReadBuffer(4 << 10)
	rc := &recordCounter{Conn: c2}
	v, at := tls.Server(c1, serverTLS), tls.Client(rc, clientTLS)
	handshakeBoth(t, v, at)
	rc.reset() // from here the client's records are under its traffic secret, from 0
	sealer := clientSealer(t, at, keyLog.Bytes())

	victim, a := newAttackOn(t, v, at, cfg, attackerSettings)
	t.Cleanup(func() { c2.Close() }) // before the attacker's tls.Conn: a raw write may be blocked on it
	st := a.openAccepted(t, victim, 1)
	if _, err := st.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	a.sync(t)
	if err := a.send(hdr(frameWindowUpdate, 0, 0, maxWindow-attackerSettings.sessionWindow), hdr(frameWindowUpdate, 0, st.id, 1<<30)); err != nil {
		t.Fatal(err)
	}
	// The attacker reads no more: the victim writes until the attacker's
	// receive window is closed (its send queue keeps unacknowledged data),
	// with its writer idle and room left in its send buffer.
	queued := newSendQueueProbe(c1)
	if queued == nil {
		t.Skip("no send queue probe here")
	}
	filled := false
	for range 4000 {
		if _, err := st.Write(make([]byte, 1024)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := victim.flush(ctx)
		cancel()
		if err != nil {
			t.Skip("the victim's writer blocked before the peer's window closed")
		}
		time.Sleep(5 * time.Millisecond)
		if q := queued(); q > 0 {
			time.Sleep(50 * time.Millisecond)
			if queued() > 0 {
				filled = true
				break
			}
		}
	}
	if !filled {
		t.Skip("the peer's window never closed")
	}
	t.Logf("victim's send queue: %d bytes unacknowledged", queued())

	return victim, a, c2, rc, sealer
}

// TestLingerTLSKeyUpdateHang: after a protocol error the session lingers,
// discarding input until the peer has its GOAWAY. It read through the
// tls.Conn, so it handled the peer's post-handshake messages: a KeyUpdate
// with update_requested makes crypto/tls write a KeyUpdate from inside
// Read, under the tls.Conn's output lock and with no write deadline, and a
// peer that does not read (its receive window closed, which is what keeps
// the linger going) lets such writes fill the send buffer until one blocks
// for good. The session never ended and Close never returned. The linger
// now reads the TCP socket under the tls.Conn.
func TestLingerTLSKeyUpdateHang(t *testing.T) {
	t.Parallel()
	victim, a, c2, rc, sealer := keyUpdateVictim(t, nil)
	if err := a.send(unknownFrame); err != nil {
		t.Fatal(err)
	}
	// Behind the bad frame, raw records the victim's tls.Conn accepts:
	// KeyUpdates asking for an answer, each followed by a byte of
	// application data (crypto/tls allows 16 non-advancing records in a row).
	sealer.seq = rc.count()
	raw := sealer.keyUpdates(4000, []byte{0})
	go c2.Write(raw) // blocks once the victim stops reading; the cleanup's Close ends it
	start := time.Now()
	select {
	case <-victim.Done():
		t.Logf("the session ended after %v", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		var where []string
		for g := range strings.SplitSeq(stacks, "\n\n") {
			if strings.Contains(g, "handleKeyUpdate") || strings.Contains(g, "closeNotify") {
				where = append(where, g)
			}
		}
		t.Errorf("the session did not end within 5 s of the protocol error (err %v); blocked:\n%s", victim.Err(), strings.Join(where, "\n\n"))
		if !closeWithin(victim, 3*time.Second) {
			t.Errorf("Close did not return within 3 s either")
		}
	}
}

// TestCloseTLSKeyUpdateHang: KeyUpdates from a peer that does not read,
// with no protocol error: the reader goroutine blocks in crypto/tls's
// answer (no write deadline, under the tls.Conn's output lock), and Close,
// whose half-close sends close_notify under the same lock, hung for good.
// A past write deadline at the end of Close's second was not enough:
// closeNotify then sets its own, 5 s, and Close took 6 s. The socket under
// the tls.Conn is now closed when the second ends.
func TestCloseTLSKeyUpdateHang(t *testing.T) {
	t.Parallel()
	victim, _, c2, rc, sealer := keyUpdateVictim(t, nil)
	sealer.seq = rc.count()
	raw := sealer.keyUpdates(4000, dataFrame(0, 1, []byte{7}))
	go c2.Write(raw)
	time.Sleep(500 * time.Millisecond)
	start := time.Now()
	if !closeWithin(victim, 10*time.Second) {
		t.Fatalf("Close did not return within 10 s")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Close took %v, documented: at most one second (then the connection is closed)", took.Round(time.Millisecond))
	}
}

// TestFailTLSKeyUpdateHang: the same KeyUpdates from a peer that does not
// read, and the session then fails on its own: its keepalive, as nothing is
// heard while the reader goroutine is stuck in crypto/tls's answer. The
// session ends: tls.Conn.Close, which would send close_notify under the
// lock that answer holds, closes the socket at once while a Write (here
// the keepalive's PING, blocked on that lock) is in flight.
func TestFailTLSKeyUpdateHang(t *testing.T) {
	t.Parallel()
	// The attacker is silent while keyUpdateVictim fills its window too:
	// 500 ms in all timed the session out during that, once in CI.
	cfg := &Config{KeepAliveInterval: time.Second, KeepAliveTimeout: 2 * time.Second}
	victim, _, c2, rc, sealer := keyUpdateVictim(t, cfg)
	sealer.seq = rc.count()
	raw := sealer.keyUpdates(4000, dataFrame(0, 1, []byte{7})) // DATA needs no answer: the victim's writer stays idle
	go c2.Write(raw)
	select {
	case <-victim.Done():
		if err := victim.Err(); !errors.Is(err, ErrKeepAliveTimeout) {
			t.Errorf("the session ended with %v, want ErrKeepAliveTimeout", err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("the session did not end within 15 s (err %v)", victim.Err())
	}
}

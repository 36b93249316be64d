package tlsrecord

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
)

// The differential harness: the same records, sealed by a client-side
// sealer from the client's application traffic secret, go to this
// package's Conn and to a crypto/tls server connection holding the same
// keys (a real in-memory handshake, its secrets through the key-log hook).
// Both must take the same records, return the same application data, and
// end the same way at the same record: the end of the input,
// close_notify, the peer's alert, or a refusal with the same alert. What
// each wrote back (KeyUpdate answers, the alert) is decrypted and compared
// too. The divergences documented on the package are the only ones
// allowed, each at the record that causes it.

// diffCert is the server certificate of every handshake here (minting one
// per handshake would dominate the fuzzer's time).
var diffCert = sync.OnceValues(func() (tls.Certificate, error) {
	ca, err := devca.New()
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, _, _, err := ca.Issue(devca.Options{CommonName: "srv", Hosts: []string{"localhost"}})
	return cert, err
})

// bufPipe is one direction of an in-memory connection whose writes never
// block (crypto/tls's server writes its session ticket before the client
// reads anything).
type bufPipe struct {
	mu     sync.Mutex
	cond   sync.Cond
	buf    []byte
	closed bool
}

func newBufPipe() *bufPipe {
	p := &bufPipe{}
	p.cond.L = &p.mu
	return p
}

func (p *bufPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return 0, io.ErrClosedPipe
	}
	p.buf = append(p.buf, b...)
	p.cond.Broadcast()
	return len(b), nil
}

func (p *bufPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.buf) == 0 && !p.closed {
		p.cond.Wait()
	}
	if len(p.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	return n, nil
}

func (p *bufPipe) Close() {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
}

// pipeConn is one end of an in-memory connection.
type pipeConn struct{ r, w *bufPipe }

func (c *pipeConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c *pipeConn) Write(b []byte) (int, error)      { return c.w.Write(b) }
func (c *pipeConn) Close() error                     { c.r.Close(); c.w.Close(); return nil }
func (c *pipeConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (c *pipeConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (c *pipeConn) SetDeadline(time.Time) error      { return nil }
func (c *pipeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *pipeConn) SetWriteDeadline(time.Time) error { return nil }

// errScriptEnd is what the crypto/tls server reads once the script is
// over: not io.EOF, which it would take for a clean close.
var errScriptEnd = errors.New("end of the script")

// scriptConn is the crypto/tls server's transport: the in-memory
// connection during the handshake (whose records it keeps), then the
// script, served one record at a time so crypto/tls never reads past the
// record it works on.
type scriptConn struct {
	pipeConn
	scripted bool
	written  [][]byte // whole records written during the handshake
	wpend    []byte
	out      []byte // written once scripted
	in       []byte // the script
	off      int
	left     int   // bytes of the current record still to serve
	marks    []int // len(out) when each record began to be served
}

func (s *scriptConn) Write(p []byte) (int, error) {
	if s.scripted {
		s.out = append(s.out, p...)
		return len(p), nil
	}
	s.wpend = append(s.wpend, p...)
	for len(s.wpend) >= HeaderLen {
		n := HeaderLen + (int(s.wpend[3])<<8 | int(s.wpend[4]))
		if len(s.wpend) < n {
			break
		}
		s.written = append(s.written, bytes.Clone(s.wpend[:n]))
		s.wpend = s.wpend[n:]
	}
	return s.pipeConn.Write(p)
}

func (s *scriptConn) Read(p []byte) (int, error) {
	if !s.scripted {
		return s.pipeConn.Read(p)
	}
	if s.off == len(s.in) {
		return 0, errScriptEnd
	}
	if s.left == 0 {
		s.marks = append(s.marks, len(s.out))
		rest := s.in[s.off:]
		s.left = len(rest)
		if len(rest) >= HeaderLen {
			s.left = min(len(rest), HeaderLen+(int(rest[3])<<8|int(rest[4])))
		}
	}
	n := copy(p[:min(len(p), s.left)], s.in[s.off:])
	s.off += n
	s.left -= n
	return n, nil
}

// record is the record being served (or the last one).
func (s *scriptConn) record() int { return len(s.marks) - 1 }

// diffSession is one handshake's state: the crypto/tls server, the keys,
// and a client-side sealer.
type diffSession struct {
	suite         uint16
	clientSecret  []byte
	serverSecret  []byte
	tickets       uint64 // records crypto/tls sealed under serverSecret
	server        *tls.Conn
	transport     *scriptConn
	sealer        half // the client's write side
	sealerStarted bool
}

// keyLogSecrets keeps the two application traffic secrets crypto/tls logs.
type keyLogSecrets struct {
	mu             sync.Mutex
	client, server []byte
}

func (k *keyLogSecrets) Write(line []byte) (int, error) {
	var label, random string
	var secret []byte
	if _, err := fmt.Sscanf(string(line), "%s %s %x", &label, &random, &secret); err != nil {
		return 0, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	switch label {
	case "CLIENT_TRAFFIC_SECRET_0":
		k.client = secret
	case "SERVER_TRAFFIC_SECRET_0":
		k.server = secret
	}
	return len(line), nil
}

// newDiffSession runs a TLS 1.3 handshake between two crypto/tls ends in
// memory and returns the server's end, ready to be fed a script.
func newDiffSession(tb testing.TB) *diffSession {
	tb.Helper()
	cert, err := diffCert()
	if err != nil {
		tb.Fatal(err)
	}
	c2s, s2c := newBufPipe(), newBufPipe()
	transport := &scriptConn{pipeConn: pipeConn{r: c2s, w: s2c}}
	kl := &keyLogSecrets{}
	server := tls.Server(transport, &tls.Config{
		Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13,
		CurvePreferences: []tls.CurveID{tls.X25519}, KeyLogWriter: kl,
	})
	// The client checks nothing: who the server is does not matter to a
	// record layer, and verifying a chain per handshake would slow the
	// fuzzer down.
	client := tls.Client(&pipeConn{r: s2c, w: c2s}, &tls.Config{
		InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
		CurvePreferences: []tls.CurveID{tls.X25519},
	})
	done := make(chan error, 1)
	go func() { done <- client.Handshake() }()
	if err := server.Handshake(); err != nil {
		tb.Fatal(err)
	}
	if err := <-done; err != nil {
		tb.Fatal(err)
	}
	transport.scripted = true
	state := server.ConnectionState()
	if state.Version != tls.VersionTLS13 || kl.client == nil || kl.server == nil {
		tb.Fatalf("version %#x, secrets logged: %v %v", state.Version, kl.client != nil, kl.server != nil)
	}
	d := &diffSession{
		suite: state.CipherSuite, clientSecret: kl.client, serverSecret: kl.server,
		server: server, transport: transport,
	}
	if want := os.Getenv(wantSuiteEnv); want != "" && want != fmt.Sprintf("%#04x", d.suite) {
		tb.Fatalf("negotiated %#04x, want %s", d.suite, want)
	}
	d.tickets = TicketsSent(d.suite, d.serverSecret, transport.written)
	s, err := suiteByID(d.suite)
	if err != nil {
		tb.Fatal(err)
	}
	d.sealer = half{suite: s}
	if err := d.sealer.setSecret(bytes.Clone(d.clientSecret)); err != nil {
		tb.Fatal(err)
	}
	return d
}

// ours is this package's Conn on the session's keys.
func (d *diffSession) ours(tb testing.TB) *Conn {
	tb.Helper()
	c, err := New(d.suite, bytes.Clone(d.clientSecret), bytes.Clone(d.serverSecret), d.tickets)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// outcome is how a record layer ended a script.
type outcome struct {
	kind   string // "end", "close_notify", "peer alert", "refused"
	at     int    // the record it happened at (not for "end")
	alert  uint8  // the peer's alert, or the one sent
	data   []byte // the application data returned
	dataAt []int  // len(data) after each record
	out    []byte // what it wrote back
	marks  []int  // len(out) when each record began (crypto/tls only)
	err    error
}

func (o outcome) String() string {
	switch o.kind {
	case "end":
		return fmt.Sprintf("end of input (%d bytes of data)", len(o.data))
	case "close_notify":
		return fmt.Sprintf("close_notify at record %d", o.at)
	}
	return fmt.Sprintf("%s %d at record %d (%v)", o.kind, o.alert, o.at, o.err)
}

// dataBefore is the application data returned for records before i.
func (o outcome) dataBefore(i int) []byte {
	n := 0
	for r, end := range o.dataAt {
		if r < i {
			n = end
		}
	}
	return o.data[:n]
}

// runCryptoTLS feeds the script to the crypto/tls server.
func (d *diffSession) runCryptoTLS(script []byte) outcome {
	t := d.transport
	t.in = script
	var o outcome
	buf := make([]byte, 1<<15)
	for {
		n, err := d.server.Read(buf)
		if n > 0 {
			r := t.record()
			for len(o.dataAt) <= r {
				o.dataAt = append(o.dataAt, len(o.data))
			}
			o.data = append(o.data, buf[:n]...)
			o.dataAt[r] = len(o.data)
		}
		if err == nil {
			continue
		}
		o.err, o.at = err, t.record()
		var op *net.OpError
		switch {
		case errors.Is(err, errScriptEnd):
			o.kind = "end"
		case err == io.EOF:
			o.kind = "close_notify"
		case errors.As(err, &op) && op.Op == "remote error":
			o.kind = "peer alert"
		default:
			o.kind = "refused"
		}
		break
	}
	o.out, o.marks = t.out, t.marks
	return o
}

// runOurs feeds the script to c the way netloop does: what Pending holds
// after each record goes out, and on an *Error the alert SealAlert seals.
func runOurs(c *Conn, script []byte) outcome {
	var o outcome
	in := script
	for i := 0; ; i++ {
		n, data, err := c.Open(in)
		if err != nil {
			o.err, o.at = err, i
			var e *Error
			var a AlertReceived
			switch {
			case errors.Is(err, ErrCloseNotify):
				o.kind = "close_notify"
			case errors.As(err, &a):
				o.kind, o.alert = "peer alert", uint8(a)
			case errors.As(err, &e):
				o.kind, o.alert = "refused", e.Alert
				o.out = c.SealAlert(o.out, e.Alert)
			default:
				o.kind = "unexpected error type"
			}
			return o
		}
		if n == 0 {
			o.kind = "end"
			return o
		}
		o.out = append(o.out, c.Pending()...)
		o.data = append(o.data, data...)
		o.dataAt = append(o.dataAt, len(o.data))
		in = in[n:]
	}
}

// serverEvents decrypts what a server wrote after the handshake: its
// KeyUpdates and alerts, as text.
func (d *diffSession) serverEvents(out []byte) ([]string, error) {
	s, _ := suiteByID(d.suite)
	h := half{suite: s}
	if err := h.setSecret(bytes.Clone(d.serverSecret)); err != nil {
		return nil, err
	}
	h.seq = d.tickets
	var ev []string
	for i := 0; len(out) > 0; i++ {
		n, ok, err := RecordLen(out)
		if err != nil || !ok || len(out) < n {
			return ev, fmt.Errorf("record %d: not whole (%d bytes left)", i, len(out))
		}
		rec := bytes.Clone(out[:n])
		out = out[n:]
		nonce, err := h.nextNonce()
		if err != nil {
			return ev, err
		}
		plain, err := h.aead.Open(rec[HeaderLen:HeaderLen], nonce, rec[HeaderLen:], rec[:HeaderLen])
		if err != nil {
			return ev, fmt.Errorf("record %d does not decrypt", i)
		}
		j := len(plain) - 1
		for j >= 0 && plain[j] == 0 {
			j--
		}
		if j < 0 {
			return ev, fmt.Errorf("record %d has no content type", i)
		}
		typ, content := plain[j], plain[:j]
		switch {
		case typ == typeHandshake && bytes.Equal(content, []byte{24, 0, 0, 1, 0}):
			ev = append(ev, "KeyUpdate(update_not_requested)")
			if err := h.update(); err != nil {
				return ev, err
			}
		case typ == typeAlert && len(content) == 2:
			ev = append(ev, fmt.Sprintf("alert level %d description %d", content[0], content[1]))
		default:
			ev = append(ev, fmt.Sprintf("record type %d: % x", typ, content))
		}
	}
	return ev, nil
}

// scriptBuilder writes records as a client would, with the client's keys.
type scriptBuilder struct {
	sealer *half
	buf    []byte
	// inner is the inner plaintext of each record sealed, by the offset
	// of its header.
	inner   map[int][]byte
	records int
	tamper  int // flip a bit at this offset of the next sealed record, when >= 0
}

var tls12 = [2]byte{3, 3}

// sealed appends a record sealed under the client's keys with this outer
// type and version (the header authenticates, as additional data).
func (b *scriptBuilder) sealed(outer byte, vers [2]byte, inner []byte) {
	start := len(b.buf)
	n := len(inner) + tagLen
	b.buf = append(b.buf, outer, vers[0], vers[1], byte(n>>8), byte(n))
	b.buf = append(b.buf, inner...)
	nonce, err := b.sealer.nextNonce()
	if err != nil {
		panic(err)
	}
	b.buf = slices.Grow(b.buf, tagLen)
	b.sealer.aead.Seal(b.buf[start+HeaderLen:start+HeaderLen], nonce, b.buf[start+HeaderLen:], b.buf[start:start+HeaderLen])
	b.buf = b.buf[:start+HeaderLen+n]
	if b.tamper >= 0 {
		b.buf[start+b.tamper%(HeaderLen+n)] ^= 0x20
		b.tamper = -1
	}
	b.inner[start] = bytes.Clone(inner)
	b.records++
}

// record seals content of type typ with pad zero bytes of padding.
func (b *scriptBuilder) record(typ byte, content []byte, pad int) {
	inner := append(bytes.Clone(content), typ)
	inner = append(inner, make([]byte, pad)...)
	b.sealed(typeApplicationData, tls12, inner)
}

// raw appends bytes as they are.
func (b *scriptBuilder) raw(p []byte) {
	b.buf = append(b.buf, p...)
	b.records++
}

// keyUpdate seals a KeyUpdate, in pieces cut after the bytes set in cuts
// (bit k: after byte k+1), and moves the client's keys on if it is valid.
func (b *scriptBuilder) keyUpdate(value byte, cuts byte) {
	msg := []byte{24, 0, 0, 1, value}
	last := 0
	for k := range 4 {
		if cuts&(1<<k) != 0 {
			b.record(typeHandshake, msg[last:k+1], 0)
			last = k + 1
		}
	}
	b.record(typeHandshake, msg[last:], 0)
	if value <= 1 {
		if err := b.sealer.update(); err != nil {
			panic(err)
		}
	}
}

// program reads a fuzzer's input as a list of operations.
type program []byte

func (p *program) next() byte {
	if len(*p) == 0 {
		return 0
	}
	c := (*p)[0]
	*p = (*p)[1:]
	return c
}

func (p *program) take(n int) []byte {
	n = min(n, len(*p))
	c := (*p)[:n]
	*p = (*p)[n:]
	return c
}

// The program's operations (the first byte of each, modulo opCount).
const (
	opData = iota
	opEmptyData
	opKeyUpdate
	opHandshakeMessage
	opHandshakeBytes
	opAlert
	opPlainCCS
	opProtectedCCS
	opGarbage
	opOddHeader
	opInnerType
	opTamper
	opUserCanceled
	opEmptyInner
	opZeroInner
	opCloseNotify
	opRawBytes
	opRepeat
	opCount
)

const (
	maxScriptRecords = 400
	maxScriptBytes   = 1 << 20
)

// build turns a program into a script.
func (d *diffSession) build(p program) *scriptBuilder {
	b := &scriptBuilder{sealer: &d.sealer, inner: map[int][]byte{}, tamper: -1}
	for len(p) > 0 && b.records < maxScriptRecords && len(b.buf) < maxScriptBytes {
		switch p.next() % opCount {
		case opData:
			v := p.next()
			size := [4]int{int(v & 63), int(v&63) * 97, MaxPlaintext - int(v&7), 1000}[v>>6]
			pv := p.next()
			limit := MaxInnerPlaintext - size - 1 // padding that fills the record to the limit
			pad := [4]int{0, int(pv & 31), limit - 1 + int(pv%3), 255}[pv>>6]
			b.record(typeApplicationData, payload(size), max(pad, 0))
		case opEmptyData:
			b.record(typeApplicationData, nil, int(p.next()&3))
		case opKeyUpdate:
			v := p.next() % 3
			if v == 2 {
				v = p.next()
			}
			b.keyUpdate(v, p.next())
		case opHandshakeMessage:
			typ, sel := p.next(), p.next()
			length := int(sel & 31)
			switch sel >> 5 {
			case 1:
				length = maxHandshake - 1 + int(sel&3)
			case 2:
				length = maxHandshakeCertificate - 1 + int(sel&3)
			case 3:
				length = 4 + int(sel&7)
			}
			msg := []byte{typ, byte(length >> 16), byte(length >> 8), byte(length)}
			limit := maxHandshake
			if typ == hsCertificate {
				limit = maxHandshakeCertificate
			}
			body := make([]byte, min(length, limit+8))
			for i := range body {
				body[i] = byte(i*13) + typ
			}
			if len(body) > 0 {
				body[0] = p.next()
			}
			if sel>>5 == 3 { // shaped as CertificateVerify or CertificateStatus would be
				body[0], body[1], body[2], body[3] = 1, 0, byte((length-4)>>8), byte(length-4)
			}
			msg = append(msg, body...)
			frag := [5]int{1, 2, 3, 7, MaxPlaintext}[p.next()%5]
			if len(msg) > 4096 {
				frag = MaxPlaintext
			}
			for len(msg) > 0 {
				k := min(frag, len(msg))
				b.record(typeHandshake, msg[:k], 0)
				msg = msg[k:]
			}
			if typ == 24 && length == 1 && body[0] <= 1 {
				if err := b.sealer.update(); err != nil {
					panic(err)
				}
			}
		case opHandshakeBytes:
			b.record(typeHandshake, p.take(int(p.next()%12)), 0)
		case opAlert:
			lvl, desc := p.next(), p.next()
			content := [][]byte{{lvl, desc}, {}, {lvl}, {lvl, desc, 0}}[p.next()%4]
			b.record(typeAlert, content, 0)
		case opPlainCCS:
			switch p.next() % 6 {
			case 0:
				b.raw([]byte{20, 3, 3, 0, 1, 1})
			case 1:
				b.raw([]byte{20, 3, 3, 0, 1, 2})
			case 2:
				b.raw([]byte{20, 3, 3, 0, 2, 1, 1})
			case 3:
				b.raw([]byte{20, 3, 3, 0, 0})
			case 4:
				b.raw(append([]byte{20, 3, 3, 0x40, 0x01}, bytes.Repeat([]byte{1}, MaxPlaintext+1)...))
			case 5:
				b.raw([]byte{20, 3, 3, 0x41, 0x01, 1})
			}
		case opProtectedCCS:
			b.record(typeChangeCipherSpec, [][]byte{{1}, {1, 1}, {0}}[p.next()%3], 0)
		case opGarbage:
			outer, vers := p.next(), [4][2]byte{{3, 3}, {3, 1}, {3, 4}, {3, 0}}[p.next()%4]
			n := int(p.next())
			if n == 255 {
				n = MaxCiphertext + 1
			}
			b.raw(append([]byte{outer, vers[0], vers[1], byte(n >> 8), byte(n)}, p.take(n)...))
		case opOddHeader:
			outer, vers := p.next(), [4][2]byte{{3, 3}, {3, 1}, {3, 4}, {3, 0}}[p.next()%4]
			b.sealed(outer, vers, []byte("odd header\x17"))
		case opInnerType:
			b.record(p.next(), []byte("x"), 0)
		case opTamper:
			b.tamper = int(p.next())
		case opUserCanceled:
			b.record(typeAlert, []byte{p.next() % 3, AlertUserCanceled}, 0)
		case opEmptyInner:
			b.sealed(typeApplicationData, tls12, nil)
		case opZeroInner:
			b.sealed(typeApplicationData, tls12, make([]byte, 1+p.next()%4))
		case opCloseNotify:
			b.record(typeAlert, []byte{alertLevelWarning, AlertCloseNotify}, 0)
		case opRawBytes:
			b.raw(p.take(int(p.next() % 8)))
		case opRepeat:
			n, kind := int(p.next()%40), p.next()%3
			for range n {
				switch kind {
				case 0:
					b.keyUpdate(0, 0)
				case 1:
					b.record(typeApplicationData, nil, 0)
				case 2:
					b.record(typeAlert, []byte{alertLevelWarning, AlertUserCanceled}, 0)
				}
			}
		}
	}
	return b
}

// recordStarts are the offsets of the records in script, as a receiver
// frames them.
func recordStarts(script []byte) []int {
	var starts []int
	for off := 0; off < len(script); {
		starts = append(starts, off)
		if len(script)-off < HeaderLen {
			break
		}
		off += HeaderLen + (int(script[off+3])<<8 | int(script[off+4]))
	}
	return starts
}

// documentedDivergence reports whether record i of the script is one the
// package documents refusing where crypto/tls does not, or refusing with
// another alert, and why.
func documentedDivergence(b *scriptBuilder, script []byte, i int) (string, bool) {
	starts := recordStarts(script)
	if i >= len(starts) {
		return "", false
	}
	rec := script[starts[i]:]
	if bytes.HasPrefix(rec, []byte{20, 3, 3, 0, 1, 1}) {
		return "change_cipher_spec after the handshake", true
	}
	inner, ok := b.inner[starts[i]]
	if !ok {
		return "", false
	}
	j := len(inner) - 1
	for j >= 0 && inner[j] == 0 {
		j--
	}
	switch {
	case len(inner) == 0:
		return "empty inner plaintext", true
	case j >= 0 && inner[j] == typeChangeCipherSpec && bytes.Equal(inner[:j], []byte{1}):
		return "protected change_cipher_spec", true
	case j >= 0 && inner[j] == typeHandshake:
		// The first handshake message to end in record i.
		var hs []byte
		for _, s := range starts[:i] {
			if in, ok := b.inner[s]; ok {
				k := len(in) - 1
				for k >= 0 && in[k] == 0 {
					k--
				}
				if k >= 0 && in[k] == typeHandshake {
					hs = append(hs, in[:k]...)
				}
			}
		}
		for len(hs) >= hsHeaderLen { // whole messages before record i
			n := hsHeaderLen + (int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3]))
			if len(hs) < n {
				break
			}
			hs = hs[n:]
		}
		hs = append(hs, inner[:j]...)
		if len(hs) >= hsHeaderLen && len(hs) >= hsHeaderLen+(int(hs[1])<<16|int(hs[2])<<8|int(hs[3])) {
			switch hs[0] {
			case hsClientHello, hsServerHello, hsNewSessionTicket, hsEncryptedExtensions, hsCertificate, hsCertificateRequest:
				return fmt.Sprintf("handshake message %d not parsed", hs[0]), true
			}
		}
	}
	return "", false
}

// compare runs a program through both record layers and reports how
// they differ, if they do.
func compareOnProgram(tb testing.TB, prog []byte) (ours, theirs outcome, divergence string) {
	tb.Helper()
	d := newDiffSession(tb)
	conn := d.ours(tb)
	b := d.build(program(prog))
	ours = runOurs(conn, bytes.Clone(b.buf))
	theirs = d.runCryptoTLS(bytes.Clone(b.buf))
	ourEvents, err := d.serverEvents(ours.out)
	if err != nil {
		tb.Fatalf("what this package wrote does not decode: %v (events %q)", err, ourEvents)
	}
	theirEvents, err := d.serverEvents(theirs.out)
	if err != nil {
		tb.Fatalf("what crypto/tls wrote does not decode: %v (events %q)", err, theirEvents)
	}
	if theirs.kind == "refused" {
		// The alert crypto/tls sent is the last thing it wrote.
		if len(theirEvents) == 0 {
			tb.Fatalf("crypto/tls refused without an alert: %v", theirs.err)
		}
		if _, err := fmt.Sscanf(theirEvents[len(theirEvents)-1], "alert level 2 description %d", &theirs.alert); err != nil {
			tb.Fatalf("crypto/tls refused with %q: %v", theirEvents[len(theirEvents)-1], theirs.err)
		}
	}
	if theirs.kind == "peer alert" {
		// crypto/tls names the alert only in text: the script says which.
		if inner, ok := b.inner[recordStarts(b.buf)[theirs.at]]; ok && len(inner) >= 2 {
			theirs.alert = inner[1]
		}
	}
	same := ours.kind == theirs.kind && (ours.kind == "end" || ours.at == theirs.at && ours.alert == theirs.alert)
	if !same && ours.kind == "refused" && theirs.at >= ours.at {
		if why, ok := documentedDivergence(b, b.buf, ours.at); ok {
			// crypto/tls went on (or refused the same record with
			// another alert): compare what came before the record.
			if ours.alert != AlertUnexpectedMessage {
				tb.Fatalf("%s: refused with alert %d, want unexpected_message", why, ours.alert)
			}
			if !bytes.Equal(ours.data, theirs.dataBefore(ours.at)) {
				tb.Fatalf("%s at record %d: application data before it differs", why, ours.at)
			}
			before, err := d.serverEvents(theirs.out[:theirs.marks[ours.at]])
			if err != nil {
				tb.Fatal(err)
			}
			want := append(before, "alert level 2 description 10")
			if !slices.Equal(ourEvents, want) {
				tb.Fatalf("%s at record %d: wrote %q, crypto/tls %q before it", why, ours.at, ourEvents, before)
			}
			return ours, theirs, why
		}
	}
	if !same {
		tb.Fatalf("outcome: this package %v, crypto/tls %v", ours, theirs)
	}
	if !bytes.Equal(ours.data, theirs.data) {
		tb.Fatalf("application data: this package returned %d bytes, crypto/tls %d", len(ours.data), len(theirs.data))
	}
	if !slices.Equal(ourEvents, theirEvents) {
		tb.Fatalf("written back: this package %q, crypto/tls %q", ourEvents, theirEvents)
	}
	return ours, theirs, ""
}

// FuzzDifferential feeds the same record sequences to this package and to
// crypto/tls: application data with every padding up to the limit and past
// it, empty records, KeyUpdate chains whole and split across records,
// change_cipher_spec, alerts of every shape, oversize records, fragmented
// and oversized handshake messages of every type, odd headers, tampered
// records and garbage. The seed corpus is in testdata/fuzz/FuzzDifferential.
func FuzzDifferential(f *testing.F) {
	f.Fuzz(func(t *testing.T, prog []byte) {
		compareOnProgram(t, prog)
	})
}

// diffCases are record sequences with the outcome both record layers must
// reach (divergent: this package's, where the package documents refusing
// what crypto/tls lets through or refuses with another alert). They are
// FuzzDifferential's seed corpus too.
var diffCases = []struct {
	name      string
	prog      []byte
	kind      string
	at        int
	alert     uint8
	divergent bool
}{
	{"application data", []byte{opData, 10, 0}, "end", 0, 0, false},
	{"16 KeyUpdates then data", []byte{opRepeat, 16, 0, opData, 10, 0}, "end", 0, 0, false},
	{"17 KeyUpdates", []byte{opRepeat, 17, 0}, "refused", 16, AlertUnexpectedMessage, false},
	{"16 empty records, data, 16 more, data", []byte{opRepeat, 16, 1, opData, 10, 0, opRepeat, 16, 1, opData, 10, 0}, "end", 0, 0, false},
	{"17 empty records", []byte{opRepeat, 17, 1}, "refused", 16, AlertUnexpectedMessage, false},
	{"17 user_canceled", []byte{opRepeat, 17, 2}, "refused", 16, AlertUnexpectedMessage, false},
	{"17 of all kinds", []byte{opRepeat, 8, 0, opRepeat, 7, 1, opUserCanceled, 1, opEmptyData, 0}, "refused", 16, AlertUnexpectedMessage, false},
	{"fatal-level user_canceled then data", []byte{opUserCanceled, 2, opData, 10, 0}, "end", 0, 0, false},
	{"KeyUpdate asking for one, in 5 records", []byte{opKeyUpdate, 1, 0x0f, opData, 10, 0}, "end", 0, 0, false},
	{"split KeyUpdate counts once", []byte{opKeyUpdate, 0, 0x0f, opRepeat, 15, 0, opData, 10, 0}, "end", 0, 0, false},
	{"split KeyUpdate and 16 more", []byte{opKeyUpdate, 0, 0x0f, opRepeat, 16, 0}, "refused", 20, AlertUnexpectedMessage, false},
	{"KeyUpdate with bytes after it", []byte{opHandshakeBytes, 6, 24, 0, 0, 1, 0, 24}, "refused", 0, AlertUnexpectedMessage, false},
	{"KeyUpdate asking for one, bytes after it", []byte{opHandshakeBytes, 6, 24, 0, 0, 1, 1, 0}, "refused", 0, AlertUnexpectedMessage, false},
	{"two KeyUpdates in a record", []byte{opHandshakeBytes, 10, 24, 0, 0, 1, 0, 24, 0, 0, 1, 0}, "refused", 0, AlertUnexpectedMessage, false},
	{"KeyUpdate request_update 2", []byte{opKeyUpdate, 2, 2, 0}, "refused", 0, AlertDecodeError, false},
	{"KeyUpdate of 2 bytes", []byte{opHandshakeMessage, 24, 2, 0, 4}, "refused", 0, AlertDecodeError, false},
	{"data inside a split KeyUpdate", []byte{opHandshakeBytes, 2, 24, 0, opData, 10, 0}, "refused", 1, AlertUnexpectedMessage, false},
	{"close_notify inside a split KeyUpdate", []byte{opHandshakeBytes, 2, 24, 0, opCloseNotify}, "refused", 1, AlertUnexpectedMessage, false},
	{"change_cipher_spec inside a split KeyUpdate", []byte{opHandshakeBytes, 2, 24, 0, opPlainCCS, 0}, "refused", 1, AlertUnexpectedMessage, false},
	{"empty handshake record", []byte{opHandshakeBytes, 0}, "refused", 0, AlertUnexpectedMessage, false},
	{"handshake message over 64 KiB", []byte{opHandshakeMessage, hsFinished, 0x22, 0, 4}, "refused", 0, AlertInternalError, false},
	{"Finished of 64 KiB", []byte{opHandshakeMessage, hsFinished, 0x21, 0, 4}, "refused", 4, AlertUnexpectedMessage, false},
	{"Certificate over 256 KiB", []byte{opHandshakeMessage, hsCertificate, 0x42, 0, 4}, "refused", 0, AlertInternalError, false},
	{"Certificate of 256 KiB", []byte{opHandshakeMessage, hsCertificate, 0x41, 0, 4}, "refused", 16, AlertUnexpectedMessage, true},
	{"unknown handshake message", []byte{opHandshakeMessage, 99, 3, 0, 4}, "refused", 0, AlertUnexpectedMessage, false},
	{"HelloRequest with a body", []byte{opHandshakeMessage, hsHelloRequest, 1, 0, 4}, "refused", 0, AlertDecodeError, false},
	{"HelloRequest, byte by byte", []byte{opHandshakeMessage, hsHelloRequest, 0, 0}, "refused", 3, AlertUnexpectedMessage, false},
	{"CertificateVerify", []byte{opHandshakeMessage, hsCertificateVerify, 0x63, 0, 4}, "refused", 0, AlertUnexpectedMessage, false},
	{"malformed CertificateVerify", []byte{opHandshakeMessage, hsCertificateVerify, 5, 0, 4}, "refused", 0, AlertDecodeError, false},
	{"CertificateStatus", []byte{opHandshakeMessage, hsCertificateStatus, 0x63, 0, 4}, "refused", 0, AlertUnexpectedMessage, false},
	{"malformed CertificateStatus", []byte{opHandshakeMessage, hsCertificateStatus, 4, 1, 4}, "refused", 0, AlertDecodeError, false},
	{"ClientHello after the handshake", []byte{opHandshakeMessage, hsClientHello, 5, 0, 4}, "refused", 0, AlertUnexpectedMessage, true},
	{"NewSessionTicket from the client", []byte{opHandshakeMessage, hsNewSessionTicket, 5, 0, 4}, "refused", 0, AlertUnexpectedMessage, true},
	{"change_cipher_spec", []byte{opData, 10, 0, opPlainCCS, 0, opData, 10, 0}, "refused", 1, AlertUnexpectedMessage, true},
	{"change_cipher_spec of value 2", []byte{opPlainCCS, 1}, "refused", 0, AlertDecodeError, false},
	{"change_cipher_spec of 2 bytes", []byte{opPlainCCS, 2}, "refused", 0, AlertDecodeError, false},
	{"empty change_cipher_spec", []byte{opPlainCCS, 3}, "refused", 0, AlertDecodeError, false},
	{"change_cipher_spec of 16385 bytes", []byte{opPlainCCS, 4}, "refused", 0, AlertRecordOverflow, false},
	{"change_cipher_spec over the length limit", []byte{opPlainCCS, 5}, "refused", 0, AlertRecordOverflow, false},
	{"protected change_cipher_spec", []byte{opProtectedCCS, 0}, "refused", 0, AlertUnexpectedMessage, true},
	{"protected change_cipher_spec of 2 bytes", []byte{opProtectedCCS, 1}, "refused", 0, AlertDecodeError, false},
	{"inner plaintext of 2^14+1 bytes", []byte{opData, 0x80, 0x82, opData, 0x81, 0x82}, "end", 0, 0, false},
	{"inner plaintext of 2^14+2 bytes", []byte{opData, 0x80, 0x80}, "refused", 0, AlertRecordOverflow, false},
	{"inner plaintext of 2^14+2 bytes, 2 of padding", []byte{opData, 0x81, 0x80}, "refused", 0, AlertRecordOverflow, false},
	{"record over the length limit", []byte{opGarbage, 23, 0, 255}, "refused", 0, AlertRecordOverflow, false},
	{"record version 3.1", []byte{opGarbage, 23, 1, 5, 1, 2, 3, 4, 5}, "refused", 0, AlertProtocolVersion, false},
	{"sealed with version 3.4", []byte{opOddHeader, 23, 2}, "refused", 0, AlertProtocolVersion, false},
	{"sealed as a handshake record", []byte{opOddHeader, 22, 0}, "refused", 0, AlertUnexpectedMessage, false},
	{"garbage handshake record", []byte{opGarbage, 22, 0, 17, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17}, "refused", 0, AlertBadRecordMAC, false},
	{"shorter than a tag", []byte{opGarbage, 23, 0, 3, 1, 2, 3}, "refused", 0, AlertBadRecordMAC, false},
	{"tampered", []byte{opTamper, 7, opData, 10, 0}, "refused", 0, AlertBadRecordMAC, false},
	{"unknown content type", []byte{opInnerType, 99}, "refused", 0, AlertUnexpectedMessage, false},
	{"empty inner plaintext", []byte{opEmptyInner}, "refused", 0, AlertUnexpectedMessage, true},
	{"inner plaintext all zeros", []byte{opZeroInner, 2}, "refused", 0, AlertUnexpectedMessage, false},
	{"alert of 3 bytes", []byte{opAlert, 2, 40, 3}, "refused", 0, AlertUnexpectedMessage, false},
	{"empty alert", []byte{opAlert, 2, 40, 1}, "refused", 0, AlertUnexpectedMessage, false},
	{"fatal alert", []byte{opData, 10, 0, opAlert, 2, 40, 0}, "peer alert", 1, 40, false},
	{"warning-level alert", []byte{opAlert, 1, 42, 0}, "peer alert", 0, 42, false},
	{"close_notify", []byte{opData, 10, 0, opCloseNotify, opData, 10, 0}, "close_notify", 1, 0, false},
	{"fatal-level close_notify", []byte{opAlert, 2, 0, 0}, "close_notify", 0, 0, false},
	{"partial record at the end", []byte{opData, 10, 0, opRawBytes, 3, 23, 3, 3}, "end", 0, 0, false},
	{"partial header of a bad record at the end", []byte{opData, 10, 0, opRawBytes, 3, 23, 3, 1}, "end", 0, 0, false},
	{"header of a bad record at the end", []byte{opData, 10, 0, opRawBytes, 5, 23, 3, 1, 0, 20}, "refused", 1, AlertProtocolVersion, false},
}

// Each case against crypto/tls: both reach the outcome the case names.
func TestAgainstCryptoTLS(t *testing.T) {
	for _, c := range diffCases {
		t.Run(c.name, func(t *testing.T) {
			ours, theirs, why := compareOnProgram(t, c.prog)
			if ours.kind != c.kind || c.kind != "end" && (ours.at != c.at || ours.alert != c.alert) {
				t.Fatalf("this package: %v; want %s %d at record %d", ours, c.kind, c.alert, c.at)
			}
			if (why != "") != c.divergent {
				t.Fatalf("documented divergence %q, want one: %v (crypto/tls: %v)", why, c.divergent, theirs)
			}
			if why != "" {
				t.Logf("documented divergence (%s): crypto/tls %v", why, theirs)
			}
		})
	}
}

// wantSuiteEnv names the suite a child process of
// TestAgainstCryptoTLSWithChaCha20 must negotiate.
const wantSuiteEnv = "TLSRECORD_WANT_SUITE"

// Two crypto/tls ends pick TLS_AES_128_GCM_SHA256 where the CPU has AES
// instructions, TLS_CHACHA20_POLY1305_SHA256 where it has none. A child
// process whose Go runtime is told there are none (GODEBUG=cpu.aes=off)
// runs the differential cases and seed corpus again on ChaCha20-Poly1305.
func TestAgainstCryptoTLSWithChaCha20(t *testing.T) {
	if os.Getenv(wantSuiteEnv) != "" {
		t.Skip("this is the child")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^(TestAgainstCryptoTLS|FuzzDifferential)$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "GODEBUG=cpu.aes=off", wantSuiteEnv+"=0x1303")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if n := bytes.Count(out, []byte("--- PASS: FuzzDifferential/")); n < len(diffCases) {
		t.Fatalf("%d corpus entries passed, want %d or more:\n%s", n, len(diffCases), out)
	}
}

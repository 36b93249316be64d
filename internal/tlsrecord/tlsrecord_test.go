package tlsrecord

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"math/bits"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
)

// keyLog captures the traffic secrets crypto/tls logs for one connection.
type keyLog struct {
	mu      sync.Mutex
	secrets map[string][]byte
}

func (k *keyLog) Write(line []byte) (int, error) {
	f := strings.Fields(string(line))
	if len(f) == 3 {
		b, err := hex.DecodeString(f[2])
		if err != nil {
			return 0, err
		}
		k.mu.Lock()
		k.secrets[f[0]] = b
		k.mu.Unlock()
	}
	return len(line), nil
}

// recordConn is the server's side of the socket: reads stop at record
// boundaries (so crypto/tls takes nothing past its handshake), and every
// record written is kept.
type recordConn struct {
	net.Conn
	left    int // bytes of the current record still to hand out
	hdr     []byte
	written [][]byte
	pend    []byte
}

func (r *recordConn) Read(p []byte) (int, error) {
	if r.left == 0 {
		// Read the header alone, then the body.
		if len(r.hdr) < HeaderLen {
			n, err := r.Conn.Read(p[:min(len(p), HeaderLen-len(r.hdr))])
			r.hdr = append(r.hdr, p[:n]...)
			if len(r.hdr) == HeaderLen {
				r.left = int(r.hdr[3])<<8 | int(r.hdr[4])
				r.hdr = r.hdr[:0]
			}
			return n, err
		}
	}
	n, err := r.Conn.Read(p[:min(len(p), r.left)])
	r.left -= n
	return n, err
}

func (r *recordConn) Write(p []byte) (int, error) {
	r.pend = append(r.pend, p...)
	for {
		n, ok, _ := RecordLen(r.pend)
		if !ok || len(r.pend) < n {
			break
		}
		r.written = append(r.written, bytes.Clone(r.pend[:n]))
		r.pend = r.pend[n:]
	}
	return r.Conn.Write(p)
}

type pair struct {
	client *tls.Conn
	raw    net.Conn // the server's socket, once the record layer takes over
	server *Conn
}

// handshake runs crypto/tls on both ends of a loopback TCP connection and
// hands the server's side to a Conn, the way netloop does.
func handshake(t *testing.T) *pair {
	t.Helper()
	ca, err := devca.New()
	if err != nil {
		t.Fatal(err)
	}
	srvCert, _, _, err := ca.Issue(devca.Options{CommonName: "srv", Hosts: []string{"localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	cliCert, _, _, err := ca.Issue(devca.Options{CommonName: "5YJ3E1EA1KF000001"})
	if err != nil {
		t.Fatal(err)
	}
	kl := &keyLog{secrets: map[string][]byte{}}
	srvCfg := &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: ca.Pool(), MinVersion: tls.VersionTLS13, KeyLogWriter: kl}
	cliCfg := &tls.Config{Certificates: []tls.Certificate{cliCert}, RootCAs: ca.Pool(), ServerName: "localhost",
		ClientSessionCache: tls.NewLRUClientSessionCache(1)}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		rc    *recordConn
		state tls.ConnectionState
		err   error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		rc := &recordConn{Conn: c}
		s := tls.Server(rc, srvCfg)
		err = s.Handshake()
		done <- result{rc: rc, state: s.ConnectionState(), err: err}
	}()
	client, err := tls.Dial("tcp", ln.Addr().String(), cliCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	t.Cleanup(func() { res.rc.Close() })
	if res.state.Version != tls.VersionTLS13 {
		t.Fatalf("version %x", res.state.Version)
	}
	cs, ss := kl.secrets["CLIENT_TRAFFIC_SECRET_0"], kl.secrets["SERVER_TRAFFIC_SECRET_0"]
	seq := TicketsSent(res.state.CipherSuite, ss, res.rc.written)
	if seq == 0 {
		t.Fatal("no session ticket found among the handshake's records")
	}
	c, err := New(res.state.CipherSuite, cs, ss, seq)
	if err != nil {
		t.Fatal(err)
	}
	return &pair{client: client, raw: res.rc.Conn, server: c}
}

// readRecords reads from the raw socket until want bytes of application
// data arrived, opening records as they complete.
func (p *pair) serverRead(t *testing.T, want int) []byte {
	t.Helper()
	var in, got []byte
	buf := make([]byte, 64<<10)
	p.raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(got) < want {
		n, err := p.raw.Read(buf)
		if err != nil {
			t.Fatalf("read: %v (have %d of %d bytes)", err, len(got), want)
		}
		in = append(in, buf[:n]...)
		for {
			k, data, err := p.server.Open(in)
			if err != nil {
				t.Fatal(err)
			}
			if k == 0 {
				break
			}
			got = append(got, data...)
			in = in[k:]
		}
		if pend := p.server.Pending(); len(pend) > 0 {
			if _, err := p.raw.Write(pend); err != nil {
				t.Fatal(err)
			}
		}
	}
	return got
}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}

// Both directions against crypto/tls, with messages from empty to larger
// than one record.
func TestInteropWithCryptoTLS(t *testing.T) {
	p := handshake(t)
	for _, n := range []int{1, 100, MaxPlaintext, MaxPlaintext + 1, 70000} {
		msg := payload(n)
		if _, err := p.client.Write(msg); err != nil {
			t.Fatal(err)
		}
		if got := p.serverRead(t, n); !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes: server read different bytes", n)
		}
		reply := p.server.Seal(nil, msg)
		if _, err := p.raw.Write(reply); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, n)
		p.client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(p.client, got); err != nil {
			t.Fatalf("%d bytes: client read: %v", n, err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes: client read different bytes", n)
		}
	}
	// close_notify from the client ends the stream.
	p.client.Close()
	buf := make([]byte, 256)
	p.raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := p.raw.Read(buf)
	if _, _, err := p.server.Open(buf[:n]); !errors.Is(err, ErrCloseNotify) {
		t.Fatalf("after the client's Close: %v, want ErrCloseNotify", err)
	}
}

// The server asks crypto/tls for a KeyUpdate: the client answers with its
// own, and data keeps flowing both ways under the new keys.
func TestKeyUpdateWithCryptoTLS(t *testing.T) {
	p := handshake(t)
	for round := range 3 {
		out := p.server.seal(nil, typeHandshake, []byte{hsKeyUpdate, 0, 0, 1, keyUpdateRequested})
		if err := p.server.out.update(); err != nil {
			t.Fatal(err)
		}
		out = p.server.Seal(out, []byte("after-update"))
		if _, err := p.raw.Write(out); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len("after-update"))
		p.client.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(p.client, got); err != nil || string(got) != "after-update" {
			t.Fatalf("round %d: client read %q, %v", round, got, err)
		}
		// crypto/tls sent its KeyUpdate when it read ours; this data
		// follows it under the client's next secret.
		if _, err := p.client.Write([]byte("client-data")); err != nil {
			t.Fatal(err)
		}
		if got := p.serverRead(t, len("client-data")); string(got) != "client-data" {
			t.Fatalf("round %d: server read %q", round, got)
		}
	}
}

// peers returns a server-side Conn and a client-side one on the same
// secrets (swapped), to feed the server records crypto/tls would not send
// and to benchmark both directions.
func peers(t testing.TB, suite uint16) (server, client *Conn) {
	t.Helper()
	s, err := suiteByID(suite)
	if err != nil {
		t.Fatal(err)
	}
	n := s.hash().Size()
	cs, ss := payload(n), bytes.Repeat([]byte{0x5a}, n)
	// New clears the secrets it is given: each gets its own copies.
	server, err = New(suite, bytes.Clone(cs), bytes.Clone(ss), 0)
	if err != nil {
		t.Fatal(err)
	}
	client, err = New(suite, ss, cs, 0)
	if err != nil {
		t.Fatal(err)
	}
	return server, client
}

var suites = []uint16{TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256}

func openAll(t *testing.T, c *Conn, in []byte) ([]byte, error) {
	t.Helper()
	var got []byte
	for len(in) > 0 {
		n, data, err := c.Open(in)
		if err != nil {
			return got, err
		}
		if n == 0 {
			t.Fatalf("%d bytes left that are not a whole record", len(in))
		}
		got = append(got, data...)
		in = in[n:]
	}
	return got, nil
}

func TestEverySuiteBothWaysWithKeyUpdates(t *testing.T) {
	for _, suite := range suites {
		server, client := peers(t, suite)
		for round := range 4 {
			msg := payload(1000 + round*MaxPlaintext/2)
			got, err := openAll(t, server, client.Seal(nil, msg))
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("suite %#x round %d: client→server: %v", suite, round, err)
			}
			got, err = openAll(t, client, server.Seal(nil, msg))
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("suite %#x round %d: server→client: %v", suite, round, err)
			}
			// The client updates its keys, asking for an answer every
			// other round.
			req := []byte{hsKeyUpdate, 0, 0, 1, byte(round % 2)}
			rec := client.seal(nil, typeHandshake, req)
			if err := client.out.update(); err != nil {
				t.Fatal(err)
			}
			if _, err := openAll(t, server, rec); err != nil {
				t.Fatalf("suite %#x round %d: KeyUpdate: %v", suite, round, err)
			}
			answer := server.Pending()
			if (len(answer) > 0) != (round%2 == 1) {
				t.Fatalf("suite %#x round %d: answer of %d bytes", suite, round, len(answer))
			}
			if _, err := openAll(t, client, answer); err != nil {
				t.Fatalf("suite %#x round %d: the answer: %v", suite, round, err)
			}
		}
	}
}

// Padding and empty records are allowed; the content type is the last
// non-zero byte.
func TestPaddingAndEmptyRecords(t *testing.T) {
	server, client := peers(t, TLS_AES_128_GCM_SHA256)
	in := client.seal(nil, typeApplicationData, nil)
	in = client.seal(in, typeApplicationData, []byte("abc"))
	padded := append([]byte("def"), typeApplicationData)
	padded = append(padded, make([]byte, 100)...)
	in = client.sealInner(in, padded)
	got, err := openAll(t, server, in)
	if err != nil || string(got) != "abcdef" {
		t.Fatalf("got %q, %v", got, err)
	}
}

// Each refusal, with the alert crypto/tls sends for it (TestAgainstCryptoTLS
// checks the same against crypto/tls itself).
func TestRefusals(t *testing.T) {
	keyUpdate := []byte{hsKeyUpdate, 0, 0, 1, keyUpdateNotRequested}
	repeat := func(n int, rec func(cl *Conn) []byte) func(cl *Conn) []byte {
		return func(cl *Conn) []byte {
			var out []byte
			for range n {
				out = append(out, rec(cl)...)
			}
			return out
		}
	}
	for _, c := range []struct {
		name  string
		make  func(client *Conn) []byte
		alert uint8
	}{
		{"tampered", func(cl *Conn) []byte { r := cl.Seal(nil, []byte("hello")); r[7] ^= 1; return r }, AlertBadRecordMAC},
		{"tampered header type", func(cl *Conn) []byte { r := cl.Seal(nil, []byte("hello")); r[0] = typeHandshake; return r }, AlertBadRecordMAC},
		{"record version 3.1", func(cl *Conn) []byte { r := cl.Seal(nil, []byte("hello")); r[2] = 1; return r }, AlertProtocolVersion},
		{"record version 3.1, header alone", func(*Conn) []byte { return []byte{23, 3, 1, 0, 20} }, AlertProtocolVersion},
		{"replayed order", func(cl *Conn) []byte { cl.Seal(nil, []byte("first")); return cl.Seal(nil, []byte("second")) }, AlertBadRecordMAC},
		{"too long", func(*Conn) []byte { return []byte{23, 3, 3, 0x41, 0x01} }, AlertRecordOverflow},
		{"garbage of another record type", func(*Conn) []byte {
			return []byte{22, 3, 3, 0, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}
		}, AlertBadRecordMAC},
		{"sealed as a handshake record", func(cl *Conn) []byte { return sealRecord(cl, typeHandshake, []byte("hi\x17")) }, AlertUnexpectedMessage},
		{"shorter than a tag", func(*Conn) []byte { return []byte{23, 3, 3, 0, 3, 1, 2, 3} }, AlertBadRecordMAC},
		{"no content type", func(cl *Conn) []byte { return cl.sealInner(nil, make([]byte, 8)) }, AlertUnexpectedMessage},
		{"empty inner plaintext", func(cl *Conn) []byte { return sealRecord(cl, typeApplicationData, nil) }, AlertUnexpectedMessage},
		{"unknown content type", func(cl *Conn) []byte { return cl.seal(nil, 99, []byte("x")) }, AlertUnexpectedMessage},
		{"change_cipher_spec", func(*Conn) []byte { return []byte{20, 3, 3, 0, 1, 1} }, AlertUnexpectedMessage},
		{"change_cipher_spec of value 2", func(*Conn) []byte { return []byte{20, 3, 3, 0, 1, 2} }, AlertDecodeError},
		{"change_cipher_spec of 16385 bytes", func(*Conn) []byte {
			return append([]byte{20, 3, 3, 0x40, 0x01}, make([]byte, MaxPlaintext+1)...)
		}, AlertRecordOverflow},
		{"protected change_cipher_spec", func(cl *Conn) []byte { return cl.seal(nil, typeChangeCipherSpec, []byte{1}) }, AlertUnexpectedMessage},
		{"protected change_cipher_spec of 2 bytes", func(cl *Conn) []byte { return cl.seal(nil, typeChangeCipherSpec, []byte{1, 1}) }, AlertDecodeError},
		{"plaintext too long", func(cl *Conn) []byte { return cl.seal(nil, typeApplicationData, make([]byte, MaxPlaintext+1)) }, AlertRecordOverflow},
		{"inner plaintext too long by its padding", func(cl *Conn) []byte {
			return cl.sealInner(nil, append(append(make([]byte, MaxPlaintext-1), typeApplicationData), 0, 0))
		}, AlertRecordOverflow},
		{"alert of 3 bytes", func(cl *Conn) []byte { return cl.seal(nil, typeAlert, []byte{2, 40, 0}) }, AlertUnexpectedMessage},
		{"empty alert", func(cl *Conn) []byte { return cl.seal(nil, typeAlert, nil) }, AlertUnexpectedMessage},
		{"empty handshake record", func(cl *Conn) []byte { return cl.seal(nil, typeHandshake, nil) }, AlertUnexpectedMessage},
		{"data inside a fragmented handshake message", func(cl *Conn) []byte {
			return cl.Seal(cl.seal(nil, typeHandshake, []byte{24, 0}), []byte("x"))
		}, AlertUnexpectedMessage},
		{"alert inside a fragmented handshake message", func(cl *Conn) []byte {
			return cl.SealAlert(cl.seal(nil, typeHandshake, []byte{24, 0}), AlertCloseNotify)
		}, AlertUnexpectedMessage},
		{"change_cipher_spec inside a fragmented handshake message", func(cl *Conn) []byte {
			return append(cl.seal(nil, typeHandshake, []byte{24}), 20, 3, 3, 0, 1, 1)
		}, AlertUnexpectedMessage},
		{"new session ticket", func(cl *Conn) []byte { return cl.seal(nil, typeHandshake, []byte{4, 0, 0, 1, 0}) }, AlertUnexpectedMessage},
		{"unknown handshake message", func(cl *Conn) []byte { return cl.seal(nil, typeHandshake, []byte{99, 0, 0, 0}) }, AlertUnexpectedMessage},
		{"HelloRequest with a body", func(cl *Conn) []byte { return cl.seal(nil, typeHandshake, []byte{0, 0, 0, 1, 0}) }, AlertDecodeError},
		{"Finished", func(cl *Conn) []byte { return cl.seal(nil, typeHandshake, []byte{20, 0, 0, 2, 0, 0}) }, AlertUnexpectedMessage},
		{"malformed CertificateVerify", func(cl *Conn) []byte { return cl.seal(nil, typeHandshake, []byte{15, 0, 0, 5, 8, 4, 0, 2, 0}) }, AlertDecodeError},
		{"malformed CertificateStatus", func(cl *Conn) []byte { return cl.seal(nil, typeHandshake, []byte{22, 0, 0, 4, 1, 0, 0, 0}) }, AlertDecodeError},
		{"handshake message over 64 KiB", func(cl *Conn) []byte { return cl.seal(nil, typeHandshake, []byte{20, 1, 0, 1}) }, AlertInternalError},
		{"Certificate over 256 KiB", func(cl *Conn) []byte { return cl.seal(nil, typeHandshake, []byte{11, 4, 0, 1}) }, AlertInternalError},
		{"KeyUpdate too long", func(cl *Conn) []byte { return cl.seal(nil, typeHandshake, []byte{24, 0, 0, 2, 0, 0}) }, AlertDecodeError},
		{"KeyUpdate with more behind it", func(cl *Conn) []byte { return cl.seal(nil, typeHandshake, []byte{24, 0, 0, 1, 0, 24, 0, 0, 1, 0}) }, AlertUnexpectedMessage},
		{"KeyUpdate with a partial message behind it", func(cl *Conn) []byte { return cl.seal(nil, typeHandshake, []byte{24, 0, 0, 1, 0, 24}) }, AlertUnexpectedMessage},
		{"KeyUpdate request 2", func(cl *Conn) []byte { return cl.seal(nil, typeHandshake, []byte{24, 0, 0, 1, 2}) }, AlertDecodeError},
		{"17 empty records", repeat(MaxUselessRecords+1, func(cl *Conn) []byte { return cl.seal(nil, typeApplicationData, nil) }), AlertUnexpectedMessage},
		{"17 user_canceled", repeat(MaxUselessRecords+1, func(cl *Conn) []byte { return cl.SealAlert(nil, AlertUserCanceled) }), AlertUnexpectedMessage},
		{"17 KeyUpdates", repeat(MaxUselessRecords+1, func(cl *Conn) []byte {
			r := cl.seal(nil, typeHandshake, keyUpdate)
			cl.out.update()
			return r
		}), AlertUnexpectedMessage},
	} {
		t.Run(c.name, func(t *testing.T) {
			server, client := peers(t, TLS_AES_128_GCM_SHA256)
			_, err := openAll(t, server, c.make(client))
			var e *Error
			if !errors.As(err, &e) || e.Alert != c.alert {
				t.Fatalf("err %v, want alert %d", err, c.alert)
			}
			// The stream is over: the same error again.
			if _, _, again := server.Open(client.Seal(nil, []byte("more"))); again != err {
				t.Fatalf("after the refusal: %v", again)
			}
		})
	}
}

// sealRecord seals inner (content, type and padding, possibly empty) as a
// record of outer type typ under c's write keys.
func sealRecord(c *Conn, typ byte, inner []byte) []byte {
	nonce, err := c.out.nextNonce()
	if err != nil {
		panic(err)
	}
	n := len(inner) + tagLen
	rec := append([]byte{typ, 3, 3, byte(n >> 8), byte(n)}, inner...)
	return c.out.aead.Seal(rec[:HeaderLen], nonce, rec[HeaderLen:], rec[:HeaderLen])
}

// Records that carry no application data are allowed 16 in a row, whatever
// their kind; application data starts the count again; a KeyUpdate split
// across records counts once; padding does not count as data.
func TestUselessRecordsLimit(t *testing.T) {
	server, client := peers(t, TLS_AES_256_GCM_SHA384)
	keyUpdate := func(cut int) []byte {
		m := []byte{hsKeyUpdate, 0, 0, 1, keyUpdateNotRequested}
		r := client.seal(nil, typeHandshake, m[:cut])
		if cut < len(m) {
			r = client.seal(r, typeHandshake, m[cut:])
		}
		client.out.update()
		return r
	}
	for round := range 3 {
		var in []byte
		for i := range MaxUselessRecords {
			switch i % 4 {
			case 0:
				in = append(in, keyUpdate(5)...)
			case 1:
				in = client.seal(in, typeApplicationData, nil)
			case 2:
				in = client.SealAlert(in, AlertUserCanceled)
			case 3:
				in = append(in, keyUpdate(1+round)...) // two records, one message
			}
		}
		in = client.sealInner(in, append([]byte{'x', typeApplicationData}, make([]byte, 50)...))
		got, err := openAll(t, server, in)
		if err != nil || string(got) != "x" {
			t.Fatalf("round %d: %q, %v", round, got, err)
		}
	}
	// Padding alone is no data.
	var in []byte
	for range MaxUselessRecords + 1 {
		in = client.sealInner(in, append([]byte{typeApplicationData}, make([]byte, 30)...))
	}
	var e *Error
	if _, err := openAll(t, server, in); !errors.As(err, &e) || e.Alert != AlertUnexpectedMessage {
		t.Fatalf("17 padded empty records: %v", err)
	}
}

// A KeyUpdate may arrive in pieces, cut anywhere; the answer to one that
// asks for it leaves once the whole message has arrived.
func TestKeyUpdateSplitAcrossRecords(t *testing.T) {
	msg := []byte{hsKeyUpdate, 0, 0, 1, keyUpdateRequested}
	for cuts := range 1 << 4 {
		server, client := peers(t, TLS_CHACHA20_POLY1305_SHA256)
		var in []byte
		last := 0
		for k := range 4 {
			if cuts&(1<<k) != 0 {
				in = client.seal(in, typeHandshake, msg[last:k+1])
				last = k + 1
			}
		}
		in = client.seal(in, typeHandshake, msg[last:])
		client.out.update()
		in = client.Seal(in, []byte("after"))
		fragments := bits.OnesCount(uint(cuts)) + 1
		for i := range fragments + 1 {
			n, data, err := server.Open(in)
			if err != nil || n == 0 {
				t.Fatalf("cuts %04b, record %d: %d, %v", cuts, i, n, err)
			}
			// The answer is ready once the last piece arrived.
			if (len(server.pending) > 0) != (i >= fragments-1) {
				t.Fatalf("cuts %04b, record %d: %d bytes pending", cuts, i, len(server.pending))
			}
			if (i == fragments) != (string(data) == "after") {
				t.Fatalf("cuts %04b, record %d: data %q", cuts, i, data)
			}
			in = in[n:]
		}
		answer := server.Pending()
		if _, err := openAll(t, client, answer); err != nil {
			t.Fatalf("cuts %04b: the answer: %v", cuts, err)
		}
		if got, err := openAll(t, client, server.Seal(nil, []byte("reply"))); err != nil || string(got) != "reply" {
			t.Fatalf("cuts %04b: reply under the new keys: %q, %v", cuts, got, err)
		}
	}
}

// New leaves no copy of the secrets with the caller; a KeyUpdate
// overwrites the secret it replaces.
func TestSecretHygiene(t *testing.T) {
	cs, ss := payload(32), bytes.Repeat([]byte{0x5a}, 32)
	readSecret, writeSecret := bytes.Clone(cs), bytes.Clone(ss)
	c, err := New(TLS_AES_128_GCM_SHA256, readSecret, writeSecret, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readSecret, make([]byte, 32)) || !bytes.Equal(writeSecret, make([]byte, 32)) {
		t.Fatal("New left the secrets it was given in place")
	}
	bad := bytes.Clone(cs)
	if _, err := New(TLS_AES_256_GCM_SHA384, bad, bytes.Clone(ss), 0); err == nil || !bytes.Equal(bad, make([]byte, 32)) {
		t.Fatalf("a New that fails left the secrets in place (err %v)", err)
	}
	if !bytes.Equal(c.in.secret[:c.in.secretLen], cs) || !bytes.Equal(c.out.secret[:c.out.secretLen], ss) {
		t.Fatal("the Conn does not hold the secrets")
	}
	client, err := New(TLS_AES_128_GCM_SHA256, bytes.Clone(ss), bytes.Clone(cs), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openAll(t, c, client.seal(nil, typeHandshake, []byte{hsKeyUpdate, 0, 0, 1, keyUpdateRequested})); err != nil {
		t.Fatal(err)
	}
	nextIn, _ := expandLabel(sha256.New, cs, trafficUpdateLabel, 32)
	nextOut, _ := expandLabel(sha256.New, ss, trafficUpdateLabel, 32)
	if !bytes.Equal(c.in.secret[:32], nextIn) || !bytes.Equal(c.out.secret[:32], nextOut) {
		t.Fatal("KeyUpdate did not move both secrets on")
	}
	for _, h := range []*half{&c.in, &c.out} {
		if bytes.Contains(h.secret[:], cs) || bytes.Contains(h.secret[:], ss) || !bytes.Equal(h.secret[32:], make([]byte, maxHashLen-32)) {
			t.Fatal("a superseded secret is still held")
		}
	}
}

func TestWriteSeq(t *testing.T) {
	cs, ss := payload(32), bytes.Repeat([]byte{0x5a}, 32)
	server, err := New(TLS_AES_128_GCM_SHA256, bytes.Clone(cs), bytes.Clone(ss), 3)
	if err != nil {
		t.Fatal(err)
	}
	client, err := New(TLS_AES_128_GCM_SHA256, ss, cs, 0)
	if err != nil {
		t.Fatal(err)
	}
	if server.WriteSeq() != 3 {
		t.Fatalf("WriteSeq %d after New(…, 3)", server.WriteSeq())
	}
	server.Seal(nil, make([]byte, MaxPlaintext+1)) // two records
	if server.WriteSeq() != 5 {
		t.Fatalf("WriteSeq %d after two more records", server.WriteSeq())
	}
	if _, err := openAll(t, server, client.seal(nil, typeHandshake, []byte{hsKeyUpdate, 0, 0, 1, keyUpdateRequested})); err != nil {
		t.Fatal(err)
	}
	if server.WriteSeq() != 0 {
		t.Fatalf("WriteSeq %d after the write keys moved on", server.WriteSeq())
	}
}

// An alert after a KeyUpdate answer goes out behind the answer, under the
// next keys; close_notify is a warning, every other alert fatal.
func TestSealAlert(t *testing.T) {
	server, client := peers(t, TLS_AES_128_GCM_SHA256)
	_, err := openAll(t, server, client.seal(nil, typeHandshake, []byte{hsKeyUpdate, 0, 0, 1, keyUpdateRequested, 0}))
	var e *Error
	if !errors.As(err, &e) || e.Alert != AlertUnexpectedMessage {
		t.Fatalf("KeyUpdate with a byte behind it: %v", err)
	}
	out := server.SealAlert(nil, e.Alert)
	// The client reads the answer (and moves its read keys on), then the
	// alert.
	n, _, err := client.Open(out)
	if err != nil || n == 0 {
		t.Fatalf("the answer: %d, %v", n, err)
	}
	if _, _, err := client.Open(out[n:]); err != AlertReceived(AlertUnexpectedMessage) {
		t.Fatalf("the alert: %v", err)
	}
	for _, c := range []struct {
		desc, level uint8
	}{{AlertCloseNotify, alertLevelWarning}, {AlertUnexpectedMessage, alertLevelFatal}, {AlertUserCanceled, alertLevelFatal}} {
		server, client := peers(t, TLS_AES_128_GCM_SHA256)
		rec := server.SealAlert(nil, c.desc)
		nonce, _ := client.in.nextNonce()
		plain, err := client.in.aead.Open(nil, nonce, rec[HeaderLen:], rec[:HeaderLen])
		if err != nil || !bytes.Equal(plain, []byte{c.level, c.desc, typeAlert}) {
			t.Fatalf("alert %d: % x, %v", c.desc, plain, err)
		}
	}
}

func TestAlerts(t *testing.T) {
	server, client := peers(t, TLS_CHACHA20_POLY1305_SHA256)
	if _, err := openAll(t, server, client.SealAlert(nil, AlertCloseNotify)); !errors.Is(err, ErrCloseNotify) {
		t.Fatalf("close_notify: %v", err)
	}
	server, client = peers(t, TLS_CHACHA20_POLY1305_SHA256)
	_, err := openAll(t, server, client.SealAlert(nil, 42))
	var a AlertReceived
	if !errors.As(err, &a) || a != 42 {
		t.Fatalf("fatal alert: %v", err)
	}
}

// A record is not opened before it is whole, whatever the split.
func TestPartialRecords(t *testing.T) {
	server, client := peers(t, TLS_AES_256_GCM_SHA384)
	rec := client.Seal(nil, []byte("split me"))
	for i := range len(rec) {
		n, data, err := server.Open(bytes.Clone(rec[:i]))
		if n != 0 || data != nil || err != nil {
			t.Fatalf("%d of %d bytes: n %d data %q err %v", i, len(rec), n, data, err)
		}
	}
	n, data, err := server.Open(rec)
	if n != len(rec) || string(data) != "split me" || err != nil {
		t.Fatalf("whole: n %d data %q err %v", n, data, err)
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	if _, err := New(0x002f, make([]byte, 32), make([]byte, 32), 0); err == nil {
		t.Fatal("a TLS 1.2 suite was accepted")
	}
	if _, err := New(TLS_AES_256_GCM_SHA384, make([]byte, 32), make([]byte, 32), 0); err == nil {
		t.Fatal("SHA-256-sized secrets were accepted for a SHA-384 suite")
	}
}

func TestSealDoesNotAllocateWithRoom(t *testing.T) {
	_, client := peers(t, TLS_AES_128_GCM_SHA256)
	msg := payload(300)
	dst := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { dst = client.Seal(dst[:0], msg) }); n != 0 {
		t.Fatalf("%v allocations per Seal", n)
	}
	server, client := peers(t, TLS_AES_128_GCM_SHA256)
	recs := make([][]byte, 101)
	for i := range recs {
		recs[i] = client.Seal(nil, msg)
	}
	i := 0
	if n := testing.AllocsPerRun(100, func() {
		if _, _, err := server.Open(recs[i]); err != nil {
			t.Fatal(err)
		}
		i++
	}); n != 0 {
		t.Fatalf("%v allocations per Open", n)
	}
}

// sealInner seals inner as a record whose TLSInnerPlaintext is given
// whole (content, type and padding), for tests of malformed ones.
func (c *Conn) sealInner(dst, inner []byte) []byte {
	return c.seal(dst, inner[len(inner)-1], inner[:len(inner)-1])
}

// TicketsSent finds the records sealed under the server's application
// secret after the ones sealed under other keys, and counts them.
func TestTicketsSent(t *testing.T) {
	appSecret := bytes.Repeat([]byte{7}, 32)
	hsSecret := bytes.Repeat([]byte{9}, 32)
	hs, err := New(TLS_AES_128_GCM_SHA256, bytes.Clone(hsSecret), bytes.Clone(hsSecret), 0)
	if err != nil {
		t.Fatal(err)
	}
	app, err := New(TLS_AES_128_GCM_SHA256, bytes.Clone(appSecret), bytes.Clone(appSecret), 0)
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte{22, 3, 3, 0, 4, 1, 2, 3, 4} // a plaintext ServerHello-like record
	var written [][]byte
	written = append(written, plain)
	for range 3 {
		written = append(written, hs.seal(nil, typeHandshake, []byte("handshake")))
	}
	if n := TicketsSent(TLS_AES_128_GCM_SHA256, appSecret, written); n != 0 {
		t.Fatalf("no tickets: counted %d", n)
	}
	for range 2 {
		written = append(written, app.seal(nil, typeHandshake, []byte("ticket")))
	}
	if n := TicketsSent(TLS_AES_128_GCM_SHA256, appSecret, written); n != 2 {
		t.Fatalf("two tickets: counted %d", n)
	}
	if n := TicketsSent(0x1234, appSecret, written); n != 0 {
		t.Fatalf("unknown suite: counted %d", n)
	}
}

package netloop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope/envelopetest"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
	"github.com/fleet-telemetry/fleet-telemetry/wsframe"
)

const (
	vinA = "5YJ3E1EA1KF000001"
	vinB = "5YJ3E1EA1KF000002"
)

var allTopics = []string{"V", "alerts", "errors", "connectivity"}

// testEnv is a real server (real TLS on 127.0.0.1, real spool) and the dev
// certificates its vehicles use.
type testEnv struct {
	srv   *Server
	sp    *spool.Spool
	certs string
}

// devServerTLS writes a development CA with certificates for vins to
// dir/certs and returns that directory and the server's mutual-TLS config
// built from it.
func devServerTLS(t *testing.T, dir string, vins ...string) (certs string, cfg *tls.Config) {
	t.Helper()
	certs = filepath.Join(dir, "certs")
	if _, err := devca.WriteDir(certs, vins); err != nil {
		t.Fatal(err)
	}
	d := devca.Dir{Path: certs}
	cfg, err := NewTLSConfig(TLSOptions{CertFile: d.File(devca.ServerCertFile), KeyFile: d.File(devca.ServerKeyFile), CAFile: d.File(devca.CACertFile)})
	if err != nil {
		t.Fatal(err)
	}
	return certs, cfg
}

// openTestSpool opens a spool in dir/spool with o's other settings. It is
// closed when the test ends, after the test's defers and the cleanups
// registered later (the servers writing to it) have run.
func openTestSpool(t *testing.T, dir string, o spool.Options) *spool.Spool {
	t.Helper()
	o.Dir = filepath.Join(dir, "spool")
	sp, err := spool.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sp.Close(); err != nil {
			t.Error(err)
		}
	})
	return sp
}

func newTestEnv(t *testing.T, routed []string, tweak func(*Options)) *testEnv {
	t.Helper()
	dir := t.TempDir()
	certs, tlsCfg := devServerTLS(t, dir, vinA, vinB)
	sp := openTestSpool(t, dir, spool.Options{Consumers: []string{"test"}})
	o := Options{Addr: "127.0.0.1:0", TLS: tlsCfg, Spool: sp, RoutedTopics: routed, Loops: 2}
	if tweak != nil {
		tweak(&o)
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return &testEnv{srv: srv, sp: sp, certs: certs}
}

func (e *testEnv) addr() string { return e.srv.Addr().String() }

func (e *testEnv) clientTLS(t *testing.T, vin string) *tls.Config {
	t.Helper()
	cfg, err := vehicle.TLSFromDir(e.certs, vin)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func (e *testEnv) dial(t *testing.T, vin string) *vehicle.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := vehicle.Dial(ctx, vehicle.Config{Addr: e.addr(), TLS: e.clientTLS(t, vin),
		Header: http.Header{"Version": []string{"test-1.0"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var (
	rngMu sync.Mutex // tests build records from several goroutines
	rng   = rand.New(rand.NewPCG(1, 2))
)

func newRecord(vin, topic, txid string) *envelope.StreamMessage {
	rngMu.Lock()
	payload := vehicle.Payload(rng, topic, vin, time.Now())
	rngMu.Unlock()
	return &envelope.StreamMessage{
		TxID: []byte(txid), Topic: []byte(topic), MessageID: []byte("m-" + txid),
		CreatedAt: uint32(time.Now().Unix()), SenderID: []byte("vehicle_device." + vin),
		Payload: payload, DeviceType: []byte("vehicle_device"), DeviceID: []byte(vin),
	}
}

func mustReply(t *testing.T, c *vehicle.Client) vehicle.Reply {
	t.Helper()
	r, err := c.ReadReply(5 * time.Second)
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	return r
}

func expectAck(t *testing.T, c *vehicle.Client, txid, topic string) {
	t.Helper()
	r := mustReply(t, c)
	if !r.Ack || r.TxID != txid || r.Topic != topic {
		t.Fatalf("got %+v, want ack txid=%q topic=%q", r, txid, topic)
	}
}

func spooled(t *testing.T, sp *spool.Spool) []spool.Record {
	t.Helper()
	recs, err := sp.Read(1, 100000, 1<<30, nil)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func TestEveryTopicAckedAfterItIsInTheSpool(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	c := e.dial(t, vinA)
	for i, topic := range allTopics {
		m := newRecord(vinA, topic, fmt.Sprintf("tx-%d", i))
		if err := c.Send(m); err != nil {
			t.Fatal(err)
		}
		expectAck(t, c, string(m.TxID), topic)
		// The ack means committed: the record is readable now.
		recs := spooled(t, e.sp)
		if len(recs) != i+1 {
			t.Fatalf("after ack %d the spool holds %d records", i+1, len(recs))
		}
		r := recs[i]
		if r.VIN != vinA || string(r.Topic) != topic || string(r.TxID) != string(m.TxID) ||
			!bytes.Equal(r.Payload, m.Payload) || r.ClientVersion != "test-1.0" || r.CreatedAtSec != m.CreatedAt {
			t.Fatalf("spooled %+v does not match what was sent", r)
		}
	}
}

func TestUnroutedTopicAckedNotKept(t *testing.T) {
	e := newTestEnv(t, []string{"V"}, nil)
	c := e.dial(t, vinA)
	m := newRecord(vinA, "alerts", "tx-alert")
	c.Send(m)
	expectAck(t, c, "tx-alert", "alerts")
	m = newRecord(vinA, "V", "tx-v")
	c.Send(m)
	expectAck(t, c, "tx-v", "V")
	if recs := spooled(t, e.sp); len(recs) != 1 || string(recs[0].Topic) != "V" {
		t.Fatalf("spool holds %d records, want only the V one", len(recs))
	}
}

func TestSameTxIDTwiceAckedTwice(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	c := e.dial(t, vinA)
	m := newRecord(vinA, "V", "dup")
	c.SendMany([]*envelope.StreamMessage{m, m})
	expectAck(t, c, "dup", "V")
	expectAck(t, c, "dup", "V")
}

// TestSenderIDMismatchDispatchedWithCertificateVIN: a record whose
// sender_id names another vehicle is acked and kept under the
// certificate's VIN (what the forwarders stamp into the payload), as the
// reference dispatches it; the mismatch is counted, not refused.
func TestSenderIDMismatchDispatchedWithCertificateVIN(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	c := e.dial(t, vinA)
	mismatches, refusals, reference := senderMismatch.Get(), recSenderMismatch.Get(), refUnauthorizedSender.Get()
	m := newRecord(vinA, "V", "spoof")
	m.SenderID = []byte("vehicle_device." + vinB)
	m.DeviceID = []byte(vinB)
	c.Send(m)
	expectAck(t, c, "spoof", "V")
	if got := senderMismatch.Get() - mismatches; got != 1 {
		t.Fatalf("fleet_records_sender_id_mismatch_total moved by %d, want 1", got)
	}
	if got := refUnauthorizedSender.Get() - reference; got != 1 {
		t.Fatalf("unauthorized_sender_id_total moved by %d, want 1", got)
	}
	if got := recSenderMismatch.Get() - refusals; got != 0 {
		t.Fatalf("a dispatched record was counted as refused (%d)", got)
	}
	// The bare device id is the vehicle's own sender id.
	m = newRecord(vinA, "V", "bare")
	m.SenderID = []byte(vinA)
	c.Send(m)
	expectAck(t, c, "bare", "V")
	if got := senderMismatch.Get() - mismatches; got != 1 {
		t.Fatalf("the bare device id was counted as a mismatch")
	}
	recs := spooled(t, e.sp)
	if len(recs) != 2 || string(recs[0].TxID) != "spoof" || string(recs[1].TxID) != "bare" {
		t.Fatalf("spool holds %v, want the spoof and bare records", recs)
	}
	for _, r := range recs {
		if r.VIN != vinA {
			t.Fatalf("record %s kept under VIN %q, want the certificate's %q", r.TxID, r.VIN, vinA)
		}
	}
}

// TestSenderIDMismatchOnUnroutedTopicGetsErrorReply: on a record type no
// sink takes, a foreign sender_id gets the reference's error reply (txid
// echoed); the connection stays open.
func TestSenderIDMismatchOnUnroutedTopicGetsErrorReply(t *testing.T) {
	e := newTestEnv(t, []string{"V"}, nil)
	c := e.dial(t, vinA)
	refusals := recSenderMismatch.Get()
	m := newRecord(vinA, "alerts", "spoof-unrouted")
	m.SenderID = []byte("vehicle_device." + vinB)
	c.Send(m)
	r := mustReply(t, c)
	if r.Ack || r.TxID != "spoof-unrouted" || r.Topic != "" || r.Text != errorText {
		t.Fatalf("got %+v, want an error reply for txid spoof-unrouted", r)
	}
	if got := recSenderMismatch.Get() - refusals; got != 1 {
		t.Fatalf(`fleet_records_refused_total{reason="sender_id_mismatch"} moved by %d, want 1`, got)
	}
	// Its own sender id on the same unrouted type: acked, not kept.
	c.Send(newRecord(vinA, "alerts", "own-unrouted"))
	expectAck(t, c, "own-unrouted", "alerts")
	c.Send(newRecord(vinA, "V", "after"))
	expectAck(t, c, "after", "V")
	if recs := spooled(t, e.sp); len(recs) != 1 || string(recs[0].TxID) != "after" {
		t.Fatalf("spool holds %v, want only the V record", recs)
	}
}

func TestBadPayloadGetsErrorReplyAndStaysOpen(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	c := e.dial(t, vinA)
	m := newRecord(vinA, "V", "bad")
	m.Payload = []byte{0xff, 0xff, 0xff}
	c.Send(m)
	r := mustReply(t, c)
	if r.Ack || r.TxID != "bad" || r.Text != "incorrect message format" {
		t.Fatalf("got %+v, want error reply for txid bad", r)
	}
	ok := newRecord(vinA, "V", "after")
	c.Send(ok)
	expectAck(t, c, "after", "V")
}

func TestNotAnEnvelopeGetsErrorReplyWithEmptyTxID(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	c := e.dial(t, vinA)
	c.WriteFrame(ws.OpBinary, true, []byte("this is not a flatbuffer at all"))
	r := mustReply(t, c)
	if r.Ack || r.TxID != "" || r.Text != "incorrect message format" {
		t.Fatalf("got %+v, want error reply with empty txid", r)
	}
	c.Send(newRecord(vinA, "V", "after"))
	expectAck(t, c, "after", "V")
}

// TestEmptyFrameAndClientAckAckedOnce: what the reference answers to
// envelopes that carry no record, each with one ack: an empty frame and an
// envelope of type 4 without its union table get an ack with neither
// txid nor topic; an ack (type 5) sent by the vehicle gets one with its
// txid echoed and no topic.
func TestEmptyFrameAndClientAckAckedOnce(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	c := e.dial(t, vinA)
	c.WriteFrame(ws.OpBinary, true, nil)
	expectAck(t, c, "", "")
	c.WriteFrame(ws.OpBinary, true, envelopetest.WithoutMessage("no-union", "V", envelope.TypeStream))
	expectAck(t, c, "", "")
	ack := envelope.AppendAck(nil, []byte("client-ack"), []byte("V"), []byte("m-client-ack"))
	c.WriteFrame(ws.OpBinary, true, ack)
	expectAck(t, c, "client-ack", "")
	c.WriteFrame(ws.OpBinary, true, envelopetest.WithoutMessage("client-ack-bare", "V", envelope.TypeStreamAck))
	expectAck(t, c, "client-ack-bare", "")
	// The next reply belongs to the next record: nothing was acked twice.
	c.Send(newRecord(vinA, "V", "next"))
	expectAck(t, c, "next", "V")
	if n := len(spooled(t, e.sp)); n != 1 {
		t.Fatalf("spool holds %d records, want 1", n)
	}
}

// bigRecord returns a V record whose envelope is exactly size bytes.
func bigRecord(t *testing.T, vin, txid string, size int) []byte {
	t.Helper()
	pad := size - 200
	for range 20 {
		m := newRecord(vin, "V", txid)
		m.Payload = vehicle.PayloadWithString(vin, strings.Repeat("x", pad))
		b := envelope.AppendStream(nil, m)
		if len(b) == size {
			return b
		}
		pad += size - len(b)
	}
	t.Fatalf("could not build a %d-byte envelope", size)
	return nil
}

func TestMessageSizeLimit(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	c := e.dial(t, vinA)
	c.WriteFrame(ws.OpBinary, true, bigRecord(t, vinA, "max", 1_000_000))
	expectAck(t, c, "max", "V")
	before := recTooBig.Get()
	c.WriteFrame(ws.OpBinary, true, bigRecord(t, vinA, "over", 1_000_004))
	r := mustReply(t, c)
	if r.Ack {
		t.Fatalf("a 1,000,004-byte message was acked")
	}
	if recTooBig.Get()-before != 1 {
		t.Fatalf("record_too_big not counted")
	}
	c.Send(newRecord(vinA, "V", "after"))
	expectAck(t, c, "after", "V")
}

func TestTextFrameClosedWith1003(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	c := e.dial(t, vinA)
	c.WriteFrame(ws.OpText, true, []byte("hello"))
	_, err := c.ReadReply(5 * time.Second)
	var ce *vehicle.CloseError
	if !errors.As(err, &ce) || ce.Code != ws.StatusUnsupportedData {
		t.Fatalf("got %v, want close 1003", err)
	}
}

func TestPingPongAndCloseEcho(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	c := e.dial(t, vinA)
	c.WriteFrame(ws.OpPing, true, []byte("are you there"))
	c.Conn().SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := c.ReadMessage()
	if err != nil || m.Kind != wsframe.KindPong || string(m.Payload) != "are you there" {
		t.Fatalf("got %+v %v, want pong with the ping's payload", m, err)
	}
	c.WriteFrame(ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	m, err = c.ReadMessage()
	if err != nil || m.Kind != wsframe.KindClose || m.CloseCode != ws.StatusNormalClosure {
		t.Fatalf("got %+v %v, want close 1000 echoed", m, err)
	}
}

func TestPipelinedRecordsAckedInOrder(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	c := e.dial(t, vinA)
	const n = 1000
	var ms []*envelope.StreamMessage
	for i := range n {
		topic := allTopics[i%len(allTopics)]
		if i%97 == 0 {
			topic = "not-routed" // acked at once: must still wait its turn
		}
		ms = append(ms, newRecord(vinA, topic, fmt.Sprintf("p-%04d", i)))
	}
	if err := c.SendMany(ms); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		expectAck(t, c, string(ms[i].TxID), string(ms[i].Topic))
	}
}

func TestManyConnectionsConcurrently(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	const conns, perConn = 20, 50
	errs := make(chan error, conns)
	for k := range conns {
		vin := []string{vinA, vinB}[k%2]
		c := e.dial(t, vin)
		go func() {
			var ms []*envelope.StreamMessage
			for i := range perConn {
				ms = append(ms, newRecord(vin, "V", fmt.Sprintf("c%d-%d", k, i)))
			}
			if err := c.SendMany(ms); err != nil {
				errs <- err
				return
			}
			for i := range perConn {
				r, err := c.ReadReply(10 * time.Second)
				if err != nil || !r.Ack || r.TxID != string(ms[i].TxID) {
					errs <- fmt.Errorf("conn %d record %d: %+v %v", k, i, r, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := len(spooled(t, e.sp)); n != conns*perConn {
		t.Fatalf("spool holds %d records, want %d", n, conns*perConn)
	}
}

// rawTLS opens a TLS connection with vin's certificate without upgrading.
func rawTLS(t *testing.T, e *testEnv, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	c, err := tls.Dial("tcp", e.addr(), cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// TLS 1.3 reports a refused client certificate only on the first read.
	if _, err := c.Write([]byte("GET /status HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		return nil, err
	}
	return c, nil
}

func readResponse(t *testing.T, r *bufio.Reader) (int, string) {
	t.Helper()
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestStatusKeepAliveAndBadRequest(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	c, err := rawTLS(t, e, e.clientTLS(t, vinA))
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	if code, body := readResponse(t, br); code != 200 || body != "mtls ok" {
		t.Fatalf("GET /status: %d %q", code, body)
	}
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	if code, _ := readResponse(t, br); code != 400 {
		t.Fatalf("GET / without upgrade: %d, want 400", code)
	}
}

func TestHandshakeRefusals(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	good := e.clientTLS(t, vinA)

	noCert := good.Clone()
	noCert.Certificates = nil
	other, err := devca.New()
	if err != nil {
		t.Fatal(err)
	}
	foreign, _, _, err := other.Issue(devca.Options{CommonName: vinA})
	if err != nil {
		t.Fatal(err)
	}
	unknownCA := good.Clone()
	unknownCA.Certificates = []tls.Certificate{foreign}
	oldTLS := good.Clone()
	oldTLS.MaxVersion = tls.VersionTLS11
	oldTLS.MinVersion = tls.VersionTLS10

	for name, cfg := range map[string]*tls.Config{"no client certificate": noCert, "unknown CA": unknownCA, "TLS 1.1": oldTLS} {
		t.Run(name, func(t *testing.T) {
			before := refusedHandshakeFailed.Get()
			c, err := rawTLS(t, e, cfg)
			if err == nil {
				_, err = c.Read(make([]byte, 1))
			}
			if err == nil {
				t.Fatal("handshake accepted")
			}
			waitFor(t, func() bool { return refusedHandshakeFailed.Get() > before })
		})
	}
	// The server still serves good vehicles.
	c := e.dial(t, vinA)
	c.Send(newRecord(vinA, "V", "still-fine"))
	expectAck(t, c, "still-fine", "V")
}

func TestIssuerWithNoClientTypeGets403(t *testing.T) {
	dir := t.TempDir()
	odd, err := devca.NewNamed("Some Other CA")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "odd-ca.pem")
	os.WriteFile(caFile, odd.CertPEM, 0o600)
	var e *testEnv
	e = newTestEnv(t, allTopics, func(o *Options) {
		// Trust the odd CA too.
		o.TLS.ClientCAs.AppendCertsFromPEM(odd.CertPEM)
	})
	cert, _, _, err := odd.Issue(devca.Options{CommonName: vinA})
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.clientTLS(t, vinA)
	cfg.Certificates = []tls.Certificate{cert}
	before := refusedUnknownIssuer.Get()
	_, err = vehicle.Dial(context.Background(), vehicle.Config{Addr: e.addr(), TLS: cfg})
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("upgrade with an unmapped issuer: %v, want 403", err)
	}
	if refusedUnknownIssuer.Get()-before != 1 {
		t.Fatal("unknown issuer not counted")
	}
}

func TestSlowRequestTimesOut(t *testing.T) {
	e := newTestEnv(t, allTopics, func(o *Options) { o.RequestTimeout = 500 * time.Millisecond })
	c, err := tls.Dial("tcp", e.addr(), e.clientTLS(t, vinA))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n")) // never finished
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err = c.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("slow request not dropped: %v", err)
	}
	if time.Since(start) > 4*time.Second {
		t.Fatalf("dropped after %v", time.Since(start))
	}
}

func TestShutdownClosesWith1001(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	c := e.dial(t, vinA)
	c.Send(newRecord(vinA, "V", "last"))
	expectAck(t, c, "last", "V")
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.srv.Shutdown(ctx)
	}()
	_, err := c.ReadReply(5 * time.Second)
	var ce *vehicle.CloseError
	if !errors.As(err, &ce) || ce.Code != ws.StatusGoingAway {
		t.Fatalf("got %v, want close 1001", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A reply the loop writes must never overtake the handshake's own records:
// Go's TLS 1.3 server queues its session tickets at the end of the
// handshake, and a request sent right behind the client's Finished could
// be answered before they were out ("bad record MAC" on the client). Many
// short connections, resumed and full, each asking at once.
func TestRepliesNeverOvertakeHandshakeRecords(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	conns, workers := 1500, 24
	if testing.Short() {
		conns = 300
	}
	cache := tls.NewLRUClientSessionCache(64)
	jobs := make(chan int)
	errs := make(chan error, conns)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range jobs {
				cfg := e.clientTLS(t, []string{vinA, vinB}[k%2]).Clone()
				if k%3 != 0 {
					cfg.ClientSessionCache = cache
				}
				errs <- statusOnce(e.addr(), cfg)
			}
		}()
	}
	for k := range conns {
		jobs <- k
	}
	close(jobs)
	wg.Wait()
	close(errs)
	var failed []string
	for err := range errs {
		if err != nil {
			failed = append(failed, err.Error())
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d connections failed, e.g. %v", len(failed), conns, failed[:min(3, len(failed))])
	}
}

// statusOnce connects, asks GET /status without waiting and reads the answer.
func statusOnce(addr string, cfg *tls.Config) error {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("GET /status HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return fmt.Errorf("resumed=%v: %w", c.ConnectionState().DidResume, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// TestStartPortInUse: a vehicle port already taken is reported as such,
// not as gnet's "setsockopt: bad file descriptor".
func TestStartPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	env := newTestEnv(t, []string{"V"}, nil)
	o := env.srv.opts
	o.Addr = ln.Addr().String()
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Start()
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start on a port in use: %v", err)
	}

	// Another server's port: both set SO_REUSEADDR, which must not let
	// two listen on one port at once.
	o.Addr = env.addr()
	srv, err = New(o)
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Start()
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Start on another server's port: %v", err)
	}
}

// TestRestartOnPortWithTimeWait: connections the server closed itself
// leave sockets in TIME_WAIT on its port; a new server on the same port
// must start at once all the same.
func TestRestartOnPortWithTimeWait(t *testing.T) {
	dir := t.TempDir()
	_, tlsCfg := devServerTLS(t, dir, vinA)
	sp := openTestSpool(t, dir, spool.Options{Consumers: []string{"test"}})
	o := Options{Addr: "127.0.0.1:0", TLS: tlsCfg, Spool: sp, RoutedTopics: allTopics, Loops: 1}
	for round := range 2 {
		srv, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		o.Addr = srv.Addr().String()
		// Not TLS: the handshake fails and the server closes first; the
		// client reads to EOF before it closes, so the server's side of
		// each connection goes to TIME_WAIT.
		for range 3 {
			c, err := net.Dial("tcp", o.Addr)
			if err != nil {
				t.Fatal(err)
			}
			c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.Copy(io.Discard, c); err != nil {
				t.Fatalf("waiting for the server to close: %v", err)
			}
			c.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = srv.Shutdown(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestBuffersReusedAcrossBursts: two vehicles send bursts of pipelined
// records cut into TLS records at random points, so partial messages and
// queued acks outgrow the kept buffer size, empty when the burst is acked,
// and go back to the shared buffer pools, whose buffers the other
// connection takes next. Every record is acked in order and the spool
// holds exactly what was sent.
func TestBuffersReusedAcrossBursts(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	const rounds, perRound = 20, 200
	sent := map[string][]byte{} // txid → payload
	var mu sync.Mutex
	var wg sync.WaitGroup
	for v, vin := range []string{vinA, vinB} {
		c := e.dial(t, vin)
		r := rand.New(rand.NewPCG(uint64(v), 7))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range rounds {
				var ms []*envelope.StreamMessage
				var stream []byte
				for i := range perRound {
					m := newRecord(vin, allTopics[i%len(allTopics)], fmt.Sprintf("%s-%02d-%02d", vin, round, i))
					ms = append(ms, m)
					stream = wsframe.AppendMaskedFrame(stream, ws.OpBinary, true, envelope.AppendStream(nil, m), [4]byte{1, 2, 3, byte(i)})
					mu.Lock()
					sent[string(m.TxID)] = m.Payload
					mu.Unlock()
				}
				for len(stream) > 0 { // each Write is a TLS record of its own
					n := min(len(stream), 1+r.IntN(9000))
					if _, err := c.Conn().Write(stream[:n]); err != nil {
						t.Error(err)
						return
					}
					stream = stream[n:]
				}
				for _, m := range ms {
					rep, err := c.ReadReply(5 * time.Second)
					if err != nil || !rep.Ack || rep.TxID != string(m.TxID) {
						t.Errorf("%s: reply %+v, %v; want the ack of %s", vin, rep, err, m.TxID)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	recs := spooled(t, e.sp)
	if len(recs) != len(sent) {
		t.Fatalf("%d records in the spool, %d sent", len(recs), len(sent))
	}
	for _, r := range recs {
		if want, ok := sent[string(r.TxID)]; !ok || !bytes.Equal(r.Payload, want) {
			t.Fatalf("spooled %s (%d payload bytes) is not what was sent", r.TxID, len(r.Payload))
		}
	}
}

package test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
)

// hostileEnv is a daemon with short timeouts, a CA bundle that also trusts
// an issuer mapping to no client type and a Tesla product issuing CA, and
// a well-behaved vehicle that sends a record every 20 ms throughout.
type hostileEnv struct {
	setup        relSetup
	d            *daemon
	other, tesla *devca.CA
	good         *e2e.Load
	goodTLS      *tls.Config
	rssAtStartKB int
}

func newHostileEnv(t *testing.T) *hostileEnv {
	t.Helper()
	other, tesla := e2e.NewCA(t, "Other CA"), e2e.NewCA(t, "Tesla Motors Product Issuing CA")
	setup := relWriteConfig(t, t.TempDir(), relConfig{
		ExtraCAs: [][]byte{other.CertPEM, tesla.CertPEM},
		Edit: func(c *config.Config) {
			c.HandshakeTimeout, c.IdleTimeout = config.NewDuration(time.Second), config.NewDuration(2*time.Second)
		},
	})
	d := startDaemon(t, setup.ConfigPath)
	goodTLS, err := vehicle.TLSFromDir(setup.Certs, relVINs[0])
	if err != nil {
		t.Fatal(err)
	}
	e := &hostileEnv{setup: setup, d: d, other: other, tesla: tesla, goodTLS: goodTLS}
	e.rssAtStartKB, _ = rssKB(d.pid())
	e.good = startGoodVehicle(t, d.addr, setup.Certs, relVINs[0], 20*time.Millisecond)
	return e
}

// finish checks the good vehicle was served throughout and its records
// were printed with its own VIN.
func (e *hostileEnv) finish(t *testing.T) {
	t.Helper()
	acked, maxWait, errs := e.good.Stop()
	for _, err := range errs {
		t.Errorf("the well-behaved vehicle was disturbed: %v", err)
	}
	t.Logf("well-behaved vehicle: %d records acked, slowest ack %s", len(acked), maxWait.Round(time.Millisecond))
	if len(acked) == 0 {
		t.Fatal("the well-behaved vehicle got no ack")
	}
	got := e.d.waitPrinted(t, acked, 20*time.Second)
	for tx := range acked {
		if got[tx].VIN != relVINs[0] {
			t.Fatalf("%s printed with vin %q", tx, got[tx].VIN)
		}
	}
	if !e.d.alive() {
		t.Fatalf("the daemon died:\n%s", e.d.logText())
	}
}

// delta waits until metric grew by at least want since before (5s).
func (e *hostileEnv) delta(t *testing.T, before map[string]float64, metric string, want float64) float64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := e.setup.metrics(t)[metric] - before[metric]
		if got >= want {
			return got
		}
		if time.Now().After(deadline) {
			t.Errorf("%s grew by %v, want >= %v", metric, got, want)
			return got
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tlsAttempt dials with cfg and reports whether the daemon accepted the
// connection far enough to answer a /status request.
func tlsAttempt(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("GET /status HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// upgradeStatus dials, upgrades with cert, and returns the HTTP error (a
// 403 shows in its text) or nil when the upgrade succeeded.
func upgradeWith(addr string, base *tls.Config, cert tls.Certificate) error {
	cfg := base.Clone()
	cfg.Certificates = []tls.Certificate{cert}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := vehicle.Dial(ctx, vehicle.Config{Addr: addr, TLS: cfg})
	if err != nil {
		return err
	}
	c.Close()
	return nil
}

// TestHostileCertificatesAndTLS: no client certificate, a certificate from
// an unknown CA, an expired one and TLS 1.1 fail the handshake
// (tls_handshake_failed); a trusted issuer mapping to no client type
// (unknown_issuer) and the Wi-Fi EAP key usage (excluded_key_usage) get
// 403 at the upgrade. Each is counted; the good vehicle is unaffected.
func TestHostileCertificatesAndTLS(t *testing.T) {
	e := newHostileEnv(t)
	addr := e.d.addr

	noCert := e.goodTLS.Clone()
	noCert.Certificates = nil
	stranger, err := devca.New() // same CN as the dev CA, other key
	if err != nil {
		t.Fatal(err)
	}
	foreign, _, _, err := stranger.Issue(devca.Options{CommonName: relVINs[2]})
	if err != nil {
		t.Fatal(err)
	}
	unknownCA := e.goodTLS.Clone()
	unknownCA.Certificates = []tls.Certificate{foreign}
	expiredCert, _, _, err := e.setup.CA.Issue(devca.Options{CommonName: relVINs[2],
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	expired := e.goodTLS.Clone()
	expired.Certificates = []tls.Certificate{expiredCert}
	oldTLS := e.goodTLS.Clone()
	oldTLS.MinVersion, oldTLS.MaxVersion = tls.VersionTLS10, tls.VersionTLS11

	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{{"no client certificate", noCert}, {"unknown CA", unknownCA}, {"expired certificate", expired}, {"TLS 1.1", oldTLS}} {
		before := e.setup.metrics(t)
		err := tlsAttempt(addr, tc.cfg)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		n := e.delta(t, before, refused("tls_handshake_failed"), 1)
		t.Logf("%-22s refused (%v); tls_handshake_failed +%.0f", tc.name+":", err, n)
	}

	otherCert, _, _, err := e.other.Issue(devca.Options{CommonName: relVINs[3]})
	if err != nil {
		t.Fatal(err)
	}
	before := e.setup.metrics(t)
	err = upgradeWith(addr, e.goodTLS, otherCert)
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("issuer with no client type: %v, want 403", err)
	}
	e.delta(t, before, refused("unknown_issuer"), 1)
	t.Logf("issuer \"Other CA\": %v", err)

	wifiEAP := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 49279, 2, 5, 1, 1}
	eapCert, _, _, err := e.tesla.Issue(devca.Options{CommonName: relVINs[4], ExtraKeyUsageOIDs: []asn1.ObjectIdentifier{wifiEAP}})
	if err != nil {
		t.Fatal(err)
	}
	before = e.setup.metrics(t)
	err = upgradeWith(addr, e.goodTLS, eapCert)
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("Wi-Fi EAP key usage: %v, want 403", err)
	}
	e.delta(t, before, refused("excluded_key_usage"), 1)
	t.Logf("Wi-Fi EAP OID: %v", err)

	// The EAP OID after a vehicle device-class OID: a certificate carrying
	// it should arguably be refused whatever else it carries; here the
	// first device-class OID wins (logged, not asserted).
	vehicleOID := asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 49279, 2, 5, 1}
	both, _, _, err := e.tesla.Issue(devca.Options{CommonName: relVINs[5], ExtraKeyUsageOIDs: []asn1.ObjectIdentifier{vehicleOID, wifiEAP}})
	if err != nil {
		t.Fatal(err)
	}
	if err := upgradeWith(addr, e.goodTLS, both); err == nil {
		t.Logf("GAP: a certificate carrying the Wi-Fi EAP OID after a device-class OID is accepted (clientTypeOf stops at the first device-class OID)")
	} else {
		t.Logf("vehicle OID + Wi-Fi EAP OID: %v", err)
	}
	e.finish(t)
}

// TestHostileSlowAndSilentClients: a TCP client that sends nothing is
// dropped after handshake_timeout (1s, tls_handshake_timeout); a TLS
// client whose upgrade request never ends is dropped after the request
// timeout (10s, not configurable from the config file;
// http_request_timeout); an idle WebSocket is closed after idle_timeout
// (2s, idle_timeout). The good vehicle is unaffected.
func TestHostileSlowAndSilentClients(t *testing.T) {
	e := newHostileEnv(t)
	addr := e.d.addr
	before := e.setup.metrics(t)

	var wg sync.WaitGroup
	result := func(name string, start time.Time, min, max time.Duration, err error) {
		took := time.Since(start)
		t.Logf("%-28s closed after %s (%v)", name+":", took.Round(10*time.Millisecond), err)
		if took < min || took > max {
			t.Errorf("%s: closed after %s, want between %s and %s", name, took, min, max)
		}
	}
	wg.Add(3)
	go func() { // silent TCP client
		defer wg.Done()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		_, err = c.Read(make([]byte, 1))
		result("silent after TCP connect", start, 900*time.Millisecond, 4*time.Second, err)
	}()
	go func() { // slowloris: TLS done, request never finished
		defer wg.Done()
		c, err := tls.Dial("tcp", addr, e.goodTLS)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		start := time.Now()
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"))
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		done := make(chan error, 1)
		go func() { // a header line every 500ms keeps it "busy"
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				case <-time.After(500 * time.Millisecond):
				}
				if _, err := fmt.Fprintf(c, "X-Slow-%d: y\r\n", i); err != nil {
					return
				}
			}
		}()
		_, err = c.Read(make([]byte, 1))
		close(done)
		result("slowloris upgrade request", start, 9*time.Second, 13*time.Second, err)
	}()
	go func() { // idle WebSocket
		defer wg.Done()
		cfg, _ := vehicle.TLSFromDir(e.setup.Certs, relVINs[1])
		c, err := vehicle.Dial(context.Background(), vehicle.Config{Addr: addr, TLS: cfg})
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		start := time.Now()
		_, err = c.ReadReply(10 * time.Second)
		result("idle websocket", start, 1900*time.Millisecond, 5*time.Second, err)
		if code := closeCode(err); code != 1001 {
			t.Errorf("idle websocket: close code %d (%v), want 1001", code, err)
		}
	}()
	wg.Wait()
	e.delta(t, before, refused("tls_handshake_timeout"), 1)
	e.delta(t, before, refused("http_request_timeout"), 1)
	e.delta(t, before, refused("idle_timeout"), 1)
	e.finish(t)
}

// rawFrameHeader is a masked binary frame header with a 64-bit length.
func rawFrameHeader(length uint64) []byte {
	h := []byte{0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}
	for i := range 8 {
		h[2+i] = byte(length >> (56 - 8*i))
	}
	return h
}

// TestHostileFrames: a frame header claiming 2^63 bytes (the most
// significant bit must be 0, RFC 6455 5.2) is a protocol error closed with
// 1002; one claiming 2^63-1 bytes is refused without being buffered: the
// connection is closed with 1009 (message too big) as soon as the header
// arrives, not after the payload streamed in. VIN spoofing: a
// VIN inside the payload is replaced by the certificate's, and a record
// with a foreign sender_id is dispatched under the certificate's VIN (as
// the reference does): the foreign VIN never reaches the sink.
func TestHostileFrames(t *testing.T) {
	e := newHostileEnv(t)
	before := e.setup.metrics(t)

	c := e2e.Dial(t, e.d.addr, e.setup.Certs, relVINs[1])
	if _, err := c.Conn().Write(rawFrameHeader(1 << 63)); err != nil {
		t.Fatal(err)
	}
	_, err := c.ReadReply(5 * time.Second)
	if code := closeCode(err); code != 1002 {
		t.Errorf("2^63-byte frame: %v, want close 1002", err)
	} else {
		t.Logf("2^63-byte frame header: closed with %d", code)
	}
	e.delta(t, before, refused("websocket_protocol_error"), 1)

	c = e2e.Dial(t, e.d.addr, e.setup.Certs, relVINs[2])
	c.Conn().Write(rawFrameHeader(1<<63 - 1))
	c.Conn().Write(make([]byte, 64<<10))
	r, err := c.ReadReply(5 * time.Second)
	switch code := closeCode(err); {
	case code == 1009:
		t.Logf("(2^63-1)-byte frame header: closed with 1009")
	case code == 1001:
		t.Errorf("a (2^63-1)-byte frame header is not refused: the daemon discards the bytes as they stream in and the connection ended only by idle_timeout (close 1001), want close 1009; a client may stream garbage for ever")
	default:
		t.Errorf("(2^63-1)-byte frame header: reply %+v, err %v; want close 1009 (message too big)", r, err)
	}

	// VIN spoofing.
	spoof := e2e.Dial(t, e.d.addr, e.setup.Certs, relVINs[3])
	inPayload := newRecord(relVINs[3], "V", "spoof-payload-vin") // payload says SPOOFED0000000000
	foreign := newRecord(relVINs[3], "V", "spoof-sender-id")
	foreign.SenderID = []byte("vehicle_device." + relVINs[4])
	bare := newRecord(relVINs[3], "V", "spoof-bare-sender-id")
	bare.SenderID = []byte(relVINs[4])
	before = e.setup.metrics(t)
	for _, m := range []*envelope.StreamMessage{inPayload, foreign, bare} {
		if err := spoof.Send(m); err != nil {
			t.Fatal(err)
		}
		r, err := spoof.ReadReply(5 * time.Second)
		t.Logf("%s: reply %+v %v", m.TxID, r, err)
	}
	got := e.d.waitPrinted(t, map[string]bool{"spoof-payload-vin": true, "spoof-sender-id": true, "spoof-bare-sender-id": true}, 10*time.Second)
	for tx, l := range got {
		if !strings.HasPrefix(tx, "spoof-") {
			continue
		}
		var rec struct{ Vin string }
		if err := json.Unmarshal(l.Record, &rec); err != nil {
			t.Fatal(err)
		}
		if l.VIN != relVINs[3] || rec.Vin != relVINs[3] {
			t.Errorf("%s reached the sink under VIN %q (payload vin %q), want the certificate's %s", tx, l.VIN, rec.Vin, relVINs[3])
		}
	}
	e.delta(t, before, `fleet_records_sender_id_mismatch_total`, 2)
	e.delta(t, before, `unauthorized_sender_id_total`, 2)
	e.finish(t) // waits for the good vehicle's records: the spoofed ones had time too
	for _, l := range e.d.printed() {
		if l.VIN == relVINs[4] || strings.Contains(string(l.Record), relVINs[4]) || strings.Contains(string(l.Record), "SPOOFED") {
			t.Errorf("a spoofed VIN reached the sink: %+v %s", l, l.Record)
		}
	}
}

// TestHostileBigFramesMemory opens N connections (200; 500 with make
// reliability) that each send all but the last byte of a 999,999-byte
// frame (just under the 1,000,000-byte message limit) and then stall, so
// the daemon must hold every partial message. It logs the daemon's RSS
// growth per connection and asserts it stays under N × 3 MB + 64 MB (a
// regression guard, not a goal). The server-wide budget for partly
// received messages (netloop Options.MaxBufferedBytes, 256 MiB by
// default) counts message bytes; RSS also carries buffer capacity and TLS
// state, measured at ~1.2-2 MB per such connection. The good vehicle keeps getting acks meanwhile.
func TestHostileBigFramesMemory(t *testing.T) {
	e := newHostileEnv(t)
	n := 200
	if relLong() {
		n = 500
	}
	// idle_timeout is 2s: each stalled connection is closed then, so the
	// frames are sent in one burst and RSS read at its peak.
	payload := make([]byte, 999_999)
	frame := append(rawFrameHeader(uint64(len(payload))), payload...)
	frame = frame[:len(frame)-1]
	cfg, err := vehicle.TLSFromDir(e.setup.Certs, relVINs[1])
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*vehicle.Client, 0, n)
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := vehicle.Dial(ctx, vehicle.Config{Addr: e.d.addr, TLS: cfg})
		cancel()
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns), err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	rssBefore, _ := rssKB(e.d.pid())
	start := time.Now()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Conn().SetWriteDeadline(time.Now().Add(10 * time.Second))
			c.Conn().Write(frame)
		}()
	}
	wg.Wait()
	wrote := time.Since(start)
	peak := rssBefore
	for sampled := time.Now(); time.Since(sampled) < 1500*time.Millisecond; {
		if kb, err := rssKB(e.d.pid()); err == nil {
			peak = max(peak, kb)
		}
		time.Sleep(50 * time.Millisecond)
	}
	per := float64(peak-rssBefore) / float64(n)
	t.Logf("%d connections × 999,999-byte partial frames (%s to write): daemon VmRSS %d kB before, peak %d kB (+%.0f kB per connection)",
		n, wrote.Round(time.Millisecond), rssBefore, peak, per)
	if per > 900 {
		t.Logf("NOTE: RSS grows by ~1 MB or more per connection holding a partial message (%d connections → +%d MB); only the server-wide partial-message budget (256 MiB of message bytes by default) bounds it", n, (peak-rssBefore)>>10)
	}
	bound := rssBefore + n*3072 + 64<<10
	if peak > bound {
		t.Errorf("daemon RSS peaked at %d kB, above the bound %d kB", peak, bound)
	}
	for _, c := range conns {
		c.Close()
	}
	e.finish(t)
}

// TestHostileHandshakeFlood holds 400 TCP connections open that never
// start TLS (the daemon drops each at handshake_timeout, 1s) and re-opens
// them as the daemon drops them, for 4s, while a good vehicle makes new
// connections and sends a record on each: every one is served.
func TestHostileHandshakeFlood(t *testing.T) {
	e := newHostileEnv(t)
	before := e.setup.metrics(t)
	const flood = 400
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var opened sync.Map
	for i := range flood {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", e.d.addr, 2*time.Second)
				if err != nil {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				opened.Store([2]int{i, j}, true)
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				io.Copy(io.Discard, c) // until the daemon drops it
				c.Close()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond) // the flood is in place
	type attempt struct {
		took time.Duration
		err  error
	}
	var attempts []attempt
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		start := time.Now()
		tx := fmt.Sprintf("flood-%d", len(attempts))
		ok, why := sendOneAcked(e.d, e.setup.Certs, tx)
		var err error
		if !ok {
			err = errors.New(why)
		}
		attempts = append(attempts, attempt{time.Since(start), err})
	}
	close(stop)
	wg.Wait()
	total := 0
	opened.Range(func(_, _ any) bool { total++; return true })
	okCount := 0
	var worst time.Duration
	for i, a := range attempts {
		t.Logf("new vehicle connection %d during the flood: %s %v", i, a.took.Round(time.Millisecond), a.err)
		if a.err == nil {
			okCount++
		}
		worst = max(worst, a.took)
	}
	m := e.setup.metrics(t)
	t.Logf("flood: %d silent connections opened in all (%d at a time); tls_handshake_timeout +%.0f, tls_handshake_memory +%.0f; %d of %d new vehicle connections acked, slowest %s",
		total, flood, m[refused("tls_handshake_timeout")]-before[refused("tls_handshake_timeout")],
		m[refused("tls_handshake_memory")]-before[refused("tls_handshake_memory")], okCount, len(attempts), worst.Round(time.Millisecond))
	if okCount == 0 {
		t.Errorf("no new vehicle connection was served during the handshake flood")
	}
	if okCount < len(attempts) {
		t.Errorf("%d of %d new vehicle connections failed during the flood", len(attempts)-okCount, len(attempts))
	}
	e.delta(t, before, refused("tls_handshake_timeout"), flood/2)
	e.finish(t)
}

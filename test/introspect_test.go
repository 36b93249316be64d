package test

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/internal/introspect"
	"github.com/fleet-telemetry/fleet-telemetry/netloop"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
)

// getJSON fetches url and decodes its JSON into v, failing on anything
// but 200.
func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s: %s %s: %s", url, resp.Status, resp.Header.Get("Content-Type"), body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, body)
	}
}

// waitConnz polls /connz (with query q) until ok accepts the page.
func waitConnz(t *testing.T, base, q string, ok func(netloop.ConnPage) bool) netloop.ConnPage {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var p netloop.ConnPage
		getJSON(t, base+"/connz"+q, &p)
		if ok(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("/connz%s never reached the expected state; last: %+v", q, p)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestConnzVarzAndTheirCLIViews runs the daemon, connects two vehicles,
// lets one send, and reads /connz, /varz, `conns` and `status`: every
// vehicle with its identity and counters, sorted, filtered and paged; the
// daemon's version, connections, handshakes (a client without a
// certificate fails one), record rate, spool and lanes; and a vehicle that
// disconnects leaves the list.
func TestConnzVarzAndTheirCLIViews(t *testing.T) {
	dir := t.TempDir()
	configPath, certs := writeConfig(t, dir)
	d := startDaemon(t, configPath)
	defer d.stop(t)
	maddr := metricsAddr(t, d.logText())
	base := "http://" + maddr

	a := e2e.Dial(t, d.addr, certs, vins[0])
	b := e2e.Dial(t, d.addr, certs, vins[1])
	var ms []*envelope.StreamMessage
	for i := range 4 {
		ms = append(ms, newRecord(vins[0], "V", fmt.Sprintf("intro-v-%d", i)))
	}
	ms = append(ms, newRecord(vins[0], "alerts", "intro-alerts"))
	e2e.SendAndAck(t, a, ms)
	// A TLS client without a certificate: a failed handshake.
	if c, err := tls.Dial("tcp", d.addr, &tls.Config{InsecureSkipVerify: true}); err == nil {
		_, _ = c.Read(make([]byte, 1)) // TLS 1.3: the server's refusal arrives after the client's side finished
		c.Close()
	}

	p := waitConnz(t, base, "", func(p netloop.ConnPage) bool { return p.Total == 2 })
	byVIN := map[string]netloop.ConnInfo{}
	for _, c := range p.Conns {
		byVIN[c.VIN] = c
	}
	ca, cb := byVIN[vins[0]], byVIN[vins[1]]
	if ca.RecordsIn != 5 || ca.RecordsByTopic["V"] != 4 || ca.RecordsByTopic["alerts"] != 1 || ca.BytesIn == 0 || ca.LastRecordAt == nil {
		t.Errorf("the sender: %+v", ca)
	}
	if ca.ClientType != "vehicle_device" || ca.TLSVersion != "TLS 1.3" || ca.CipherSuite == "" || ca.ClientVersion != "e2e" ||
		ca.RemoteAddr != a.Conn().LocalAddr().String() || time.Since(ca.ConnectedSince) > time.Minute {
		t.Errorf("the sender's identity: %+v", ca)
	}
	if cb.VIN != vins[1] || cb.RecordsIn != 0 || cb.LastRecordAt != nil {
		t.Errorf("the silent one: %+v", cb)
	}
	// Sorted, filtered, paged.
	if p := waitConnz(t, base, "?sort=records", func(netloop.ConnPage) bool { return true }); p.Conns[0].VIN != vins[0] || p.Sort != "records" {
		t.Errorf("sort=records: %+v", p)
	}
	if p := waitConnz(t, base, "?sort=records&reverse=1", func(netloop.ConnPage) bool { return true }); p.Conns[0].VIN != vins[1] {
		t.Errorf("sort=records&reverse=1: %+v", p)
	}
	if p := waitConnz(t, base, "?vin="+strings.ToLower(vins[1][10:]), func(netloop.ConnPage) bool { return true }); p.Total != 1 || p.Conns[0].VIN != vins[1] {
		t.Errorf("vin filter: %+v", p)
	}
	p1 := waitConnz(t, base, "?limit=1", func(netloop.ConnPage) bool { return true })
	p2 := waitConnz(t, base, "?limit=1&offset=1", func(netloop.ConnPage) bool { return true })
	if p1.Total != 2 || p2.Total != 2 || len(p1.Conns) != 1 || len(p2.Conns) != 1 || p1.Conns[0].VIN != vins[0] || p2.Conns[0].VIN != vins[1] {
		t.Errorf("pages: %+v / %+v", p1, p2)
	}
	for _, bad := range []string{"?sort=speed", "?limit=x", "?offset=-1"} {
		resp, err := http.Get(base + "/connz" + bad)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("/connz%s: %s, want 400", bad, resp.Status)
		}
	}

	var v introspect.Varz
	getJSON(t, base+"/varz?history=1", &v)
	if v.Build.Version == "" || v.Build.GoVersion == "" || v.UptimeSeconds <= 0 || v.Listen != d.addr {
		t.Errorf("build/uptime/listen: %+v %v %s", v.Build, v.UptimeSeconds, v.Listen)
	}
	if v.Connections.Vehicles != 2 || v.Connections.Open < 2 || v.Connections.Accepted < 3 {
		t.Errorf("connections: %+v", v.Connections)
	}
	if v.Handshakes.OK < 2 || v.Handshakes.Failed["tls_handshake_failed"] < 1 {
		t.Errorf("handshakes: %+v", v.Handshakes)
	}
	if v.Records.Received != 5 || v.Records.Spooled != 5 || v.Records.PerSecond <= 0 {
		t.Errorf("records: %+v", v.Records)
	}
	if v.Spool.Dir == "" || v.Spool.DiskFreeBytes <= 0 || v.Spool.LastSeq < 5 {
		t.Errorf("spool: %+v", v.Spool)
	}
	if len(v.Lanes) != 4 || v.Lanes[0].Forwarder != "logger" {
		t.Errorf("lanes: %+v", v.Lanes)
	}
	if v.Budgets.MaxMessageSize != 1_000_000 || v.Budgets.RateLimitRecords != 1_000_000 || v.Budgets.MaxConnections <= 0 ||
		v.Budgets.SpoolMinFreeBytes <= 0 {
		t.Errorf("budgets: %+v", v.Budgets)
	}
	if v.History == nil || len(v.History.AtMs) != len(v.History.RecordsPerSecond) || len(v.History.AtMs) != len(v.History.LagRecords) {
		t.Errorf("history: %+v", v.History)
	}

	// The CLI views, by address and by config file.
	out, errs, code := runBinary(t, dir, binary, "conns", "-addr", maddr)
	if code != 0 || !strings.Contains(out, vins[0]) || !strings.Contains(out, vins[1]) || !strings.Contains(out, "1-2 of 2 vehicles") ||
		!strings.Contains(out, "V 4, alerts 1") {
		t.Errorf("conns: exit %d\n%s%s", code, out, errs)
	}
	out, errs, code = runBinary(t, dir, binary, "conns", "-config", configPath, "-vin", vins[1], "-json")
	var cp netloop.ConnPage
	if code != 0 || json.Unmarshal([]byte(out), &cp) != nil || cp.Total != 1 || cp.Conns[0].VIN != vins[1] {
		t.Errorf("conns -config -vin -json: exit %d\n%s%s", code, out, errs)
	}
	out, _, code = runBinary(t, dir, binary, "conns", "-addr", maddr, "-vin", "NOSUCHVIN")
	if code != 1 || !strings.Contains(out, `no connected vehicle's VIN contains "NOSUCHVIN"`) {
		t.Errorf("conns -vin NOSUCHVIN: exit %d, %q; want 1 and a plain sentence", code, out)
	}
	out, errs, code = runBinary(t, dir, binary, "status", "-addr", maddr)
	if code != 0 || !strings.Contains(out, "2 vehicles") || !strings.Contains(out, "logger/V") || !strings.Contains(out, "tls_handshake_failed") {
		t.Errorf("status: exit %d\n%s%s", code, out, errs)
	}
	out, errs, code = runBinary(t, dir, binary, "status", "-config", configPath, "-json")
	var sv introspect.Varz
	if code != 0 || json.Unmarshal([]byte(out), &sv) != nil || sv.Connections.Vehicles != 2 {
		t.Errorf("status -json: exit %d\n%s%s", code, out, errs)
	}
	_, errs, code = runBinary(t, dir, binary, "status", "-addr", "127.0.0.1:1")
	if code != 1 || !strings.Contains(errs, "refused") {
		t.Errorf("status against nothing: exit %d, %q", code, errs)
	}

	// A vehicle that leaves leaves the list.
	b.Close()
	waitConnz(t, base, "", func(p netloop.ConnPage) bool { return p.Total == 1 && p.Conns[0].VIN == vins[0] })
	var after introspect.Varz
	getJSON(t, base+"/varz", &after)
	if after.Connections.Vehicles != 1 || after.History != nil {
		t.Errorf("after one left: %+v (history only on request: %v)", after.Connections, after.History != nil)
	}
}

// With monitoring.introspection false the metrics port serves /metrics
// only: /connz, /varz and the status page (which list VINs) answer 404,
// and the CLIs that read them say why.
func TestIntrospectionOff(t *testing.T) {
	dir := t.TempDir()
	configPath, certs := writeConfig(t, dir)
	off := false
	editConfig(t, configPath, func(c *config.Config) { c.Monitoring.Introspection = &off })
	d := startDaemon(t, configPath)
	defer d.stop(t)
	maddr := metricsAddr(t, d.logText())
	e2e.SendAndAck(t, e2e.Dial(t, d.addr, certs, vins[0]), []*envelope.StreamMessage{newRecord(vins[0], "V", "intro-off")})
	for path, want := range map[string]int{"/metrics": 200, "/connz": 404, "/varz": 404, "/": 404} {
		resp, err := http.Get("http://" + maddr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %s, want %d", path, resp.Status, want)
		}
		if path != "/metrics" && strings.Contains(string(body), vins[0]) {
			t.Errorf("%s names the connected VIN", path)
		}
	}
	_, errs, code := runBinary(t, dir, binary, "conns", "-addr", maddr)
	if code == 0 || !strings.Contains(errs, "monitoring.introspection") {
		t.Errorf("conns with introspection off: exit %d, stderr %q", code, errs)
	}
}

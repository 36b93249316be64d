package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/internal/testkit"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope/envelopetest"
)

// TestReferenceKeysFromTheConfigFile drives the parity keys through the
// real binary: status_port, vin_allowlist, connectivity events with the
// vehicle's headers, rate_limit.
func TestReferenceKeysFromTheConfigFile(t *testing.T) {
	dir := t.TempDir()
	configPath, certs := writeConfig(t, dir)
	statusPort := e2e.FreePort(t)
	editConfig(t, configPath, func(c *config.Config) {
		c.StatusPort = statusPort
		c.VINAllowlist = config.AllowlistOf(vins[0])
		c.RateLimit = &config.RateLimit{Enabled: true, MessageLimit: 5, MessageIntervalTime: 60}
	})
	d := startDaemon(t, configPath)

	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/status", statusPort))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("plain /status: %d %q", resp.StatusCode, body)
	}

	tlsCfg, err := vehicle.TLSFromDir(certs, vins[1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vehicle.Dial(context.Background(), vehicle.Config{Addr: d.addr, TLS: tlsCfg}); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("a vehicle off vin_allowlist: %v, want 403", err)
	}

	tlsCfg, err = vehicle.TLSFromDir(certs, vins[0])
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := vehicle.Dial(ctx, vehicle.Config{Addr: d.addr, TLS: tlsCfg, Header: http.Header{
		"X-Txid": []string{"conn-parity-1"}, "X-Network-Interface": []string{"wifi"}, "Version": []string{"2025.2.1"}}})
	if err != nil {
		t.Fatal(err)
	}
	// The rate limit: 5 acked, the 6th and 7th dropped without an ack.
	var ms []*envelope.StreamMessage
	for i := range 7 {
		ms = append(ms, newRecord(vins[0], "V", fmt.Sprintf("rl-%d", i)))
	}
	e2e.SendAndAck(t, c, ms[:5])
	c.SendMany(ms[5:])
	if r, err := c.ReadReply(500 * time.Millisecond); err == nil {
		t.Fatalf("a record over the rate limit was answered: %+v", r)
	}
	c.Close()

	// CONNECTED and DISCONNECTED, from the server, with the vehicle's headers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var events []map[string]any
		for _, l := range d.printed() {
			if l.Topic != "connectivity" {
				continue
			}
			var rec map[string]any
			json.Unmarshal(l.Record, &rec)
			events = append(events, rec)
		}
		if len(events) == 2 {
			for i, want := range []string{"CONNECTED", "DISCONNECTED"} {
				e := events[i]
				if e["status"] != want || e["connectionId"] != "conn-parity-1" || e["networkInterface"] != "wifi" || e["vin"] != vins[0] {
					t.Fatalf("event %d: %v, want %s for conn-parity-1 over wifi", i, e, want)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connectivity events printed: %v", events)
		}
		time.Sleep(20 * time.Millisecond)
	}
	m := scrape(t, d.logText())
	if m[`rate_limit_exceeded_total{device_id="`+vins[0]+`",txtype="V"}`] != 2 {
		t.Errorf("rate_limit_exceeded_total: %v", m)
	}
}

// TestDescriptorExhaustionDoesNotStopTheDaemon runs the daemon with a low
// open-file limit and opens more connections than it allows: the excess is
// refused and counted, and the daemon keeps serving (gnet stops its event
// loops if accept ever fails with EMFILE, so the daemon must refuse first).
func TestDescriptorExhaustionDoesNotStopTheDaemon(t *testing.T) {
	prlimit := needTool(t, "prlimit")
	dir := t.TempDir()
	configPath, certs := writeConfig(t, dir)
	d := startDaemonCmd(t, exec.Command(prlimit, "--nofile=1100:1100", binary, "-config", configPath))
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 200 { // the limit leaves room for about 76 connections
		c, err := net.Dial("tcp", d.addr)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		conns = append(conns, c)
	}
	time.Sleep(500 * time.Millisecond)
	select {
	case <-d.exited:
		t.Fatalf("the daemon exited when connections ran out:\n%s", d.logText())
	default:
	}
	m := scrape(t, d.logText())
	if m[`fleet_connections_refused_total{reason="too_many_connections"}`] < 100 {
		t.Fatalf("refusals not counted: %v", m[`fleet_connections_refused_total{reason="too_many_connections"}`])
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	deadline := time.Now().Add(10 * time.Second)
	for {
		tlsCfg, _ := vehicle.TLSFromDir(certs, vins[0])
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := vehicle.Dial(ctx, vehicle.Config{Addr: d.addr, TLS: tlsCfg})
		cancel()
		if err == nil {
			e2e.SendAndAck(t, c, []*envelope.StreamMessage{newRecord(vins[0], "V", "after-exhaustion")})
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no vehicle served after the flood: %v\n%s", err, d.logText())
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.stop(t)
}

// TestReferenceAnswersEndToEnd: what the daemon answers where the
// reference answers something other than a plain ack, through the real
// binary (PROTOCOL.md, "Reference behaviour"). Only V is routed. Each
// answer is one reply: the next record's ack comes next.
func TestReferenceAnswersEndToEnd(t *testing.T) {
	dir := t.TempDir()
	configPath, certs := writeConfig(t, dir)
	editConfig(t, configPath, func(c *config.Config) { c.Records = map[string][]string{"V": {"logger"}} })
	d := startDaemon(t, configPath)
	c := e2e.Dial(t, d.addr, certs, vins[0])
	next := 0
	expectNext := func() {
		t.Helper()
		next++
		m := newRecord(vins[0], "V", fmt.Sprintf("next-%d", next))
		e2e.SendAndAck(t, c, []*envelope.StreamMessage{m})
	}
	reply := func(what string, frame []byte) vehicle.Reply {
		t.Helper()
		if err := c.WriteFrame(ws.OpBinary, true, frame); err != nil {
			t.Fatal(err)
		}
		r, err := c.ReadReply(10 * time.Second)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return r
	}

	// An ack (message type 5) sent by the vehicle: one ack, txid echoed,
	// no topic.
	r := reply("client ack", envelope.AppendAck(nil, []byte("client-ack"), []byte("V"), nil))
	if !r.Ack || r.TxID != "client-ack" || r.Topic != "" {
		t.Errorf("a vehicle's ack: reply %+v, want an ack with txid client-ack and no topic", r)
	}
	expectNext()

	// Message type 4 without its union table: one ack, no txid, no topic.
	r = reply("no union", envelopetest.WithoutMessage("no-union", "V", envelope.TypeStream))
	if !r.Ack || r.TxID != "" || r.Topic != "" {
		t.Errorf("type 4 without a message: reply %+v, want an ack with no txid and no topic", r)
	}
	expectNext()

	// A foreign sender_id on a record type no sink takes: an error reply,
	// txid echoed.
	m := newRecord(vins[0], "alerts", "foreign-unrouted")
	m.SenderID = []byte("vehicle_device." + vins[1])
	r = reply("foreign sender, unrouted", envelope.AppendStream(nil, m))
	if r.Ack || r.TxID != "foreign-unrouted" || r.Text != "incorrect message format" {
		t.Errorf("a foreign sender_id on an unrouted type: reply %+v, want \"incorrect message format\" for txid foreign-unrouted", r)
	}
	expectNext()

	// A foreign sender_id on a routed record type: acked, and dispatched
	// under the certificate's VIN.
	before := scrape(t, d.logText())
	m = newRecord(vins[0], "V", "foreign-routed")
	m.SenderID = []byte("vehicle_device." + vins[1])
	m.DeviceID = []byte(vins[1])
	e2e.SendAndAck(t, c, []*envelope.StreamMessage{m})
	expectNext()
	l := d.waitPrinted(t, map[string]bool{"foreign-routed": true}, 10*time.Second)["foreign-routed"]
	var rec struct{ Vin string }
	if err := json.Unmarshal(l.Record, &rec); err != nil {
		t.Fatal(err)
	}
	if l.VIN != vins[0] || rec.Vin != vins[0] {
		t.Errorf("a foreign sender_id's record printed under VIN %q (payload vin %q), want the certificate's %s", l.VIN, rec.Vin, vins[0])
	}
	after := scrape(t, d.logText())
	for name, want := range map[string]float64{
		"fleet_records_sender_id_mismatch_total": 1,
		"unauthorized_sender_id_total":           1,
		`dispatch_total{record_type="V"}`:        2, // the record and the next one
	} {
		if got := after[name] - before[name]; got != want {
			t.Errorf("%s moved by %v, want %v", name, got, want)
		}
	}
	d.stop(t)
}

// TestProfilerEndpointsEndToEnd: the reference's /gc_stats and
// /live_profiler on the profiler port, with monitoring.profiling_path set
// (a supported key: no warning) and without it (405).
func TestProfilerEndpointsEndToEnd(t *testing.T) {
	dir := t.TempDir()
	configPath, _ := writeConfig(t, dir)
	pprofPort := e2e.FreePort(t)
	profile := filepath.Join(dir, "cpu.pprof")
	editConfig(t, configPath, func(c *config.Config) {
		c.Monitoring = &config.Monitoring{ProfilerPort: pprofPort, ProfilingPath: profile}
	})
	d := startDaemon(t, configPath)
	if strings.Contains(d.logText(), "profiling_path") {
		t.Errorf("monitoring.profiling_path is warned about:\n%s", d.logText())
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", pprofPort)
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/gc_stats")
	var gc struct {
		NumGC          int64
		PauseQuantiles []int64
	}
	if err := json.Unmarshal([]byte(body), &gc); code != 200 || err != nil || len(gc.PauseQuantiles) != 5 {
		t.Fatalf("GET /gc_stats: %d %v %s", code, err, body)
	}
	t.Logf("/gc_stats: NumGC %d", gc.NumGC)
	for _, step := range []struct {
		query string
		want  int
	}{
		{"", 400}, {"?mode=sideways", 400}, {"?mode=off", 304},
		{"?mode=on", 200}, {"?mode=on", 304}, {"?mode=off", 200}, {"?mode=off", 304},
		{"?mode=on", 200}, // left on: the stop finishes the file
	} {
		if code, body := get("/live_profiler" + step.query); code != step.want {
			t.Fatalf("GET /live_profiler%s: %d %q, want %d", step.query, code, body, step.want)
		}
	}
	d.stop(t)
	testkit.CheckCPUProfile(t, profile)

	editConfig(t, configPath, func(c *config.Config) { c.Monitoring = &config.Monitoring{ProfilerPort: pprofPort} })
	d = startDaemon(t, configPath)
	if code, body := get("/live_profiler?mode=on"); code != 405 {
		t.Errorf("/live_profiler without monitoring.profiling_path: %d %q, want 405", code, body)
	}
	d.stop(t)
}

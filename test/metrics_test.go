package test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
)

// metricsBody fetches the daemon's /metrics text as served.
func metricsBody(t *testing.T, logs string) string {
	t.Helper()
	var addr string
	for _, line := range strings.Split(logs, "\n") {
		var e struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "serving metrics" {
			addr = e.Addr
		}
	}
	if addr == "" {
		t.Fatalf("no metrics address in the logs:\n%s", logs)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMetricsScrapePassesPromtoolAndStatsdGetsThem runs the daemon with
// Prometheus metrics and a StatsD push to a UDP listener of the test, sends
// a valid record and a spoofed one, and checks the reference's metric
// names on both, and `promtool check metrics` on the scrape.
func TestMetricsScrapePassesPromtoolAndStatsdGetsThem(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found: CI must install Debian's prometheus package (apt-get install prometheus)")
		}
		t.Skip("promtool not found (Debian package prometheus); skipped outside CI")
	}
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()

	dir := t.TempDir()
	configPath, certs := writeConfig(t, dir)
	raw, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	mon := cfg["monitoring"].(map[string]any)
	mon["statsd"] = map[string]any{"host": udp.LocalAddr().String(), "prefix": "ft.", "flush_period": 100}
	raw, _ = json.Marshal(cfg)
	if err := os.WriteFile(configPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, configPath)
	defer d.stop(t)

	c := dial(t, d.addr, certs, vins[0])
	sendAndAck(t, c, []*envelope.StreamMessage{newRecord(vins[0], "V", "m-ok")})
	spoof := newRecord(vins[0], "V", "m-spoof")
	spoof.SenderID = []byte("vehicle_device." + vins[1])
	sendAndAck(t, c, []*envelope.StreamMessage{spoof})

	body := metricsBody(t, d.logText())
	for _, want := range []string{
		`record_total{record_type="V"} 1`,
		`dispatch_total{record_type="V"} 1`,
		`unauthorized_sender_id_total 1`,
		`num_connections 1`,
		"# TYPE record_total counter",
		"# TYPE signal_count untyped",
		"# TYPE fleet_ack_latency_seconds histogram",
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s\n--- scrape ---\n%s", err, out, body)
	}

	// The StatsD push carries the same counters.
	want := map[string]bool{"ft.record_total.V:1|c": false, "ft.unauthorized_sender_id_total:1|c": false}
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(10 * time.Second)
	for missing := len(want); missing > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("statsd lines missing: %v", want)
		}
		_ = udp.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, _, err := udp.ReadFrom(buf)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(buf[:n]), "\n") {
			if seen, ok := want[l]; ok && !seen {
				want[l] = true
				missing--
			}
		}
	}
}

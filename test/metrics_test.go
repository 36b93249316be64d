package test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
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
		`record_total{record_type="V"} 2`, // the spoofed one is dispatched under the certificate's VIN
		`dispatch_total{record_type="V"} 2`,
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

	// The StatsD push carries the same counters, as deltas per flush: the
	// two V records may come in one push or two.
	want := map[string]float64{"ft.record_total.V": 2, "ft.unauthorized_sender_id_total": 1}
	got := map[string]float64{}
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(10 * time.Second)
	for done := false; !done; {
		if time.Now().After(deadline) {
			t.Fatalf("statsd counters %v, want %v", got, want)
		}
		_ = udp.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, _, err := udp.ReadFrom(buf)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(buf[:n]), "\n") {
			name, rest, ok := strings.Cut(l, ":")
			v, isCounter := strings.CutSuffix(rest, "|c")
			if _, wanted := want[name]; !ok || !isCounter || !wanted {
				continue
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("statsd line %q: %v", l, err)
			}
			got[name] += f
		}
		done = true
		for name, w := range want {
			if got[name] > w {
				t.Fatalf("statsd %s: %v, want %v", name, got[name], w)
			}
			done = done && got[name] == w
		}
	}
}

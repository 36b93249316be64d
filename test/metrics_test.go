package test

import (
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/internal/testkit"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
)

// metricsBody fetches the daemon's /metrics text as served.
func metricsBody(t *testing.T, logs string) string {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr(t, logs) + "/metrics")
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
	promtool := e2e.NeedTool(t, "promtool", "prometheus")
	udp := testkit.ListenUDP(t)

	dir := t.TempDir()
	configPath, certs := writeConfig(t, dir)
	editConfig(t, configPath, func(c *config.Config) {
		c.Monitoring.Statsd = &config.Statsd{Host: udp.Addr(), Prefix: "ft.", FlushPeriod: 100}
	})
	d := startDaemon(t, configPath)
	defer d.stop(t)

	c := e2e.Dial(t, d.addr, certs, vins[0])
	e2e.SendAndAck(t, c, []*envelope.StreamMessage{newRecord(vins[0], "V", "m-ok")})
	spoof := newRecord(vins[0], "V", "m-spoof")
	spoof.SenderID = []byte("vehicle_device." + vins[1])
	e2e.SendAndAck(t, c, []*envelope.StreamMessage{spoof})

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
	// Prometheus' own parser reads the whole page (what every end-to-end
	// test's scrape relies on), histograms included.
	m, err := e2e.ParseMetrics(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if m[`record_total{record_type="V"}`] != 2 || m["fleet_ack_latency_seconds_count"] < 2 || m[`fleet_ack_latency_seconds_bucket{le="+Inf"}`] != m["fleet_ack_latency_seconds_count"] {
		t.Errorf("parsed page: record_total %v, ack latency count %v, +Inf bucket %v", m[`record_total{record_type="V"}`],
			m["fleet_ack_latency_seconds_count"], m[`fleet_ack_latency_seconds_bucket{le="+Inf"}`])
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
	if !udp.ReadUntil(time.Now().Add(10*time.Second), func(datagram []byte) bool {
		for _, l := range strings.Split(string(datagram), "\n") {
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
		done := true
		for name, w := range want {
			if got[name] > w {
				t.Fatalf("statsd %s: %v, want %v", name, got[name], w)
			}
			done = done && got[name] == w
		}
		return done
	}) {
		t.Fatalf("statsd counters %v, want %v", got, want)
	}
}

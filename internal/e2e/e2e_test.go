package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/fleet-telemetry/fleet-telemetry/internal/metricsexport"
)

const page = `# HELP reliable_ack_total Acks.
# TYPE reliable_ack_total counter
reliable_ack_total{record_type="V",dispatcher="kafka"} 3
reliable_ack_total{record_type="alerts",dispatcher="kafka"} 4
# HELP num_connections Open.
# TYPE num_connections gauge
num_connections 2
# HELP odd Escapes.
# TYPE odd untyped
odd{path="a\"b\\c\nd"} 1.5
# HELP lat Latency.
# TYPE lat histogram
lat_bucket{forwarder="x",le="0.001"} 1
lat_bucket{forwarder="x",le="0.5"} 3
lat_bucket{forwarder="x",le="+Inf"} 4
lat_sum{forwarder="x"} 2.25
lat_count{forwarder="x"} 4
# HELP q Quantiles.
# TYPE q summary
q{quantile="0.5"} 7
q_sum 20
q_count 3
`

func TestParseMetricsKeepsTheSeriesAsWritten(t *testing.T) {
	s, err := ParseMetrics(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	want := Samples{
		`reliable_ack_total{record_type="V",dispatcher="kafka"}`:      3,
		`reliable_ack_total{record_type="alerts",dispatcher="kafka"}`: 4,
		`num_connections`:                      2,
		`odd{path="a\"b\\c\nd"}`:               1.5,
		`lat_bucket{forwarder="x",le="0.001"}`: 1,
		`lat_bucket{forwarder="x",le="0.5"}`:   3,
		`lat_bucket{forwarder="x",le="+Inf"}`:  4,
		`lat_sum{forwarder="x"}`:               2.25,
		`lat_count{forwarder="x"}`:             4,
		`q{quantile="0.5"}`:                    7,
		`q_sum`:                                20,
		`q_count`:                              3,
	}
	for k, v := range want {
		if got, ok := s[k]; !ok || got != v {
			t.Errorf("%s = %v (%v), want %v", k, got, ok, v)
		}
	}
	if len(s) != len(want) {
		t.Errorf("%d series, want %d: %v", len(s), len(want), s)
	}
	if got := s.Sum("reliable_ack_total"); got != 7 {
		t.Errorf("Sum = %v, want 7", got)
	}
	if got := s.Sum("reliable_ack"); got != 0 {
		t.Errorf("Sum of a prefix = %v, want 0", got)
	}
}

// A page the Prometheus parser refuses is an error, not a partial map.
func TestParseMetricsRefusesABrokenPage(t *testing.T) {
	for _, bad := range []string{
		"# TYPE a counter\na{x=\"1\" 3\n",
		"# TYPE a counter\n# TYPE a gauge\na 1\n",
	} {
		if _, err := ParseMetrics(strings.NewReader(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestScrape(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(page))
	}))
	defer srv.Close()
	s, err := Scrape(srv.URL + "/metrics")
	if err != nil || s["num_connections"] != 2 {
		t.Fatalf("scrape: %v %v", s, err)
	}
	if _, err := Scrape(srv.URL + "/nothing"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("scrape of a 404: %v", err)
	}
}

// fakeTB records what a helper did to the test; Fatalf and Skipf end the
// goroutine, as testing's do.
type fakeTB struct{ skipped, failed string }

func (f *fakeTB) Helper()        {}
func (f *fakeTB) Cleanup(func()) {}
func (f *fakeTB) Fatalf(format string, a ...any) {
	f.failed = fmt.Sprintf(format, a...)
	runtime.Goexit()
}
func (f *fakeTB) Skipf(format string, a ...any) {
	f.skipped = fmt.Sprintf(format, a...)
	runtime.Goexit()
}

// run calls fn on a fakeTB in a goroutine of its own.
func (f *fakeTB) run(fn func()) {
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	<-done
}

// A missing tool skips, except under CI=true, where it fails; any other
// value of CI is not CI.
func TestUnavailableMeansFailUnderCI(t *testing.T) {
	for ci, wantFail := range map[string]bool{"true": true, "": false, "1": false, "false": false} {
		t.Setenv("CI", ci)
		var f fakeTB
		f.run(func() { NeedTool(&f, "no-such-tool-fleet-telemetry", "none") })
		if (f.failed != "") != wantFail || (f.skipped != "") == wantFail {
			t.Errorf("CI=%q: failed %q skipped %q", ci, f.failed, f.skipped)
		}
	}
	if ToolPath("sh") == "" {
		t.Error("sh not found")
	}
}

func TestPickPortAvoids(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().(*net.TCPAddr).Port
	for range 20 {
		p, err := PickPort(taken)
		if err != nil || p == taken || p == 0 {
			t.Fatalf("PickPort = %d, %v", p, err)
		}
	}
}

// The daemon's own page (metricsexport, VictoriaMetrics' vmrange
// histograms turned into le buckets) is what the Prometheus parser reads.
func TestParseMetricsReadsTheDaemonsPage(t *testing.T) {
	metrics.GetOrCreateCounter(`e2etest_records_total{record_type="V",dispatcher="kafka"}`).Add(3)
	h := metrics.GetOrCreateHistogram(`e2etest_latency_seconds{path="x"}`)
	for _, v := range []float64{0.001, 0.002, 0.5} {
		h.Update(v)
	}
	var b bytes.Buffer
	if err := metricsexport.WriteExposition(&b, nil); err != nil {
		t.Fatal(err)
	}
	s, err := ParseMetrics(&b)
	if err != nil {
		t.Fatal(err)
	}
	if s[`e2etest_records_total{record_type="V",dispatcher="kafka"}`] != 3 ||
		s[`e2etest_latency_seconds_count{path="x"}`] != 3 || s[`e2etest_latency_seconds_bucket{path="x",le="+Inf"}`] != 3 ||
		s[`e2etest_latency_seconds_sum{path="x"}`] != 0.503 {
		t.Fatalf("parsed %v", s)
	}
}

package metricsexport

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
)

func registerAwkward() {
	// Names the linter dislikes unless typed with care, as the reference
	// names them.
	metrics.GetOrCreateCounter(`statsdtest_reliable_ack{record_type="V",dispatcher="kafka"}`).Inc()
	metrics.GetOrCreateGauge(`statsdtest_signal_count{record_type="V"}`, nil).Add(3)
	metrics.GetOrCreateCounter(`statsdtest_records_total{record_type="a\"b"}`).Add(2)
	h := metrics.GetOrCreateHistogram(`statsdtest_latency_seconds{path="x"}`)
	for _, v := range []float64{0.001, 0.01, 0.01, 0.5, 3} {
		h.Update(v)
	}
	metrics.GetOrCreateSummary(`statsdtest_sizes_bytes`).Update(10)
}

func TestExpositionPassesPromtool(t *testing.T) {
	registerAwkward()
	var b bytes.Buffer
	if err := WriteExposition(&b, nil); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"# TYPE statsdtest_reliable_ack untyped\n",
		"# TYPE statsdtest_signal_count untyped\n",
		`statsdtest_signal_count{record_type="V"} 3` + "\n",
		"# TYPE statsdtest_records_total counter\n",
		`statsdtest_records_total{record_type="a\"b"} 2` + "\n",
		"# TYPE statsdtest_latency_seconds histogram\n",
		`statsdtest_latency_seconds_bucket{path="x",le="+Inf"} 5` + "\n",
		`statsdtest_latency_seconds_count{path="x"} 5` + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	if strings.Contains(out, "vmrange") {
		t.Error("vmrange buckets left in the exposition")
	}
	cmd := exec.Command(e2e.NeedTool(t, "promtool", "prometheus"), "check", "metrics")
	cmd.Stdin = strings.NewReader(out)
	res, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, res)
	}
}

func TestLeBucketsAreCumulative(t *testing.T) {
	fams := Parse([]byte(`# HELP h
# TYPE h histogram
h_bucket{a="1",vmrange="1.000e+00...2.000e+00"} 2
h_bucket{a="1",vmrange="1.000e-01...2.000e-01"} 1
h_sum{a="1"} 3.3
h_count{a="1"} 3
`))
	if len(fams) != 1 || !isVMHistogram(fams[0]) {
		t.Fatalf("parsed %+v", fams)
	}
	got := leBuckets(fams[0])
	want := []Sample{
		{"h_bucket", `{a="1",le="2.000e-01"}`, 1},
		{"h_bucket", `{a="1",le="2.000e+00"}`, 3},
		{"h_bucket", `{a="1",le="+Inf"}`, 3},
		{"h_sum", `{a="1"}`, 3.3},
		{"h_count", `{a="1"}`, 3},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("sample %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestLintType(t *testing.T) {
	for _, c := range []struct{ name, typ, want string }{
		{"a_total", "counter", "counter"},
		{"reliable_ack", "counter", "untyped"},
		{"signal_count", "gauge", "untyped"},
		{"io_bytes_total", "gauge", "untyped"},
		{"open", "gauge", "gauge"},
		{"lat_seconds", "histogram", "histogram"},
	} {
		if got := lintType(c.name, c.typ); got != c.want {
			t.Errorf("lintType(%q, %q) = %q, want %q", c.name, c.typ, got, c.want)
		}
	}
}

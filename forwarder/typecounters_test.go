package forwarder

import (
	"bytes"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"
)

func TestTypeCounters(t *testing.T) {
	c := NewTypeCounters("tc_test_publish_total", "tc_test_publish_total_bytes", "tc_test_err")
	var b bytes.Buffer
	metrics.WritePrometheus(&b, false)
	for _, want := range []string{`tc_test_publish_total{record_type="V"} 0`, `tc_test_err{record_type="connectivity"} 0`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("missing %s before any record", want)
		}
	}
	v := c.Of("V")
	if c.Of("V") != v {
		t.Fatal("Of returned new counters for a known type")
	}
	v.Published.Inc()
	v.Bytes.Add(10)
	if got := metrics.GetOrCreateCounter(`tc_test_publish_total_bytes{record_type="V"}`).Get(); got != 10 {
		t.Fatalf("bytes counter = %d, want 10", got)
	}
	if NewTypeCounters("tc_test2_total", "tc_test2_bytes", "").Of("V").Errs != nil {
		t.Fatal("an error counter without a name")
	}
}

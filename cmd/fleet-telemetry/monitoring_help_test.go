package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"
)

// TestEveryMetricHasHelp: each metric family the packages register (the
// ones created at start; per-forwarder ones appear with a forwarder) has a
// HELP text of its own.
func TestEveryMetricHasHelp(t *testing.T) {
	var buf bytes.Buffer
	metrics.WritePrometheus(&buf, false)
	name := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*?)(_bucket|_sum|_count)?[{ ]`)
	seen := map[string]bool{}
	for _, line := range strings.Split(buf.String(), "\n") {
		m := name.FindStringSubmatch(line)
		if m == nil || strings.HasPrefix(line, "#") {
			continue
		}
		n := m[1]
		if metricHelp(n) == "" && metricHelp(n+m[2]) == "" && !seen[n] {
			seen[n] = true
			t.Errorf("no HELP text for %s", n)
		}
	}
}

package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
)

// TestAlertRules: deploy/prometheus-alerts.yml is valid for promtool, its
// unit tests (deploy/prometheus-alerts.test.yml) pass, and every metric it
// names is one the daemon exports.
func TestAlertRules(t *testing.T) {
	promtool := e2e.NeedTool(t, "promtool", "prometheus")
	rules := filepath.Join(repoRoot, "deploy", "prometheus-alerts.yml")
	for _, args := range [][]string{{"check", "rules", rules}, {"test", "rules", filepath.Join(repoRoot, "deploy", "prometheus-alerts.test.yml")}} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Fatalf("promtool %v: %v\n%s", args, err, out)
		}
	}
	b, err := os.ReadFile(rules)
	if err != nil {
		t.Fatal(err)
	}
	ours := exportedMetricNames(t, repoRoot, false)
	names := regexp.MustCompile(`\bfleet_[a-z_]+`).FindAllString(string(b), -1)
	if len(names) < 3 {
		t.Fatalf("found only %v in the rules", names)
	}
	for _, n := range names {
		if !ours[n] {
			t.Errorf("alert rule metric %s is not exported by the daemon", n)
		}
	}
}

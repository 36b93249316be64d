package main

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/fleet-telemetry/fleet-telemetry/bench/internal/report"
)

// TestThroughputEndToEnd builds the daemon and the kfake broker and runs a
// tiny throughput scenario through them: every ack must match.
func TestThroughputEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real daemon and a kfake broker")
	}
	dir := t.TempDir()
	for bin, pkg := range map[string]string{"fleet-telemetry": "../cmd/fleet-telemetry", "kfakebroker": "../test/kfakebroker"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, bin), pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	out := filepath.Join(dir, "out.json")
	html := filepath.Join(dir, "out.html")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pprofPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	code := run([]string{"-spawn", "-quiet", "-scenario", "throughput,rate",
		"-server-pprof-port", strconv.Itoa(pprofPort), "-profile", filepath.Join(dir, "daemon.pprof"),
		"-daemon-bin", filepath.Join(dir, "fleet-telemetry"), "-broker-bin", filepath.Join(dir, "kfakebroker"),
		"-certs", filepath.Join(dir, "certs"), "-work-dir", filepath.Join(dir, "work"),
		"-conns", "3", "-inflight", "20", "-rate-conns", "3", "-rate", "20", "-duration", "2s", "-warmup", "500ms",
		"-alerts-pct", "5", "-errors-pct", "5",
		"-json", out, "-html", html})
	if code != 0 {
		t.Fatalf("bench exited %d", code)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var r report.Run
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Results) != 2 {
		t.Fatalf("%d results, want 2", len(r.Results))
	}
	_, err = os.Stat("/proc/self/schedstat")
	schedstats := err == nil
	for _, x := range r.Results {
		if !x.OK || x.Acked == 0 || x.Acked != x.Sent || x.Latency == nil || x.ServerCPUUsPerRecord <= 0 {
			t.Errorf("%s: ok=%v sent=%d acked=%d latency=%v cpu/rec=%v", x.Scenario, x.OK, x.Sent, x.Acked, x.Latency, x.ServerCPUUsPerRecord)
		}
		// Both processes run threads that wait for each other's work: some
		// run-queue wait shows (where the kernel keeps schedstats).
		if x.ServerWaitPct < 0 || x.BenchWaitPct < 0 || (schedstats && x.ServerWaitPct+x.BenchWaitPct == 0) {
			t.Errorf("%s: run-queue wait: server %.1f%% bench %.1f%% (want >= 0, and > 0 with schedstats)", x.Scenario, x.ServerWaitPct, x.BenchWaitPct)
		}
	}
	if fi, err := os.Stat(html); err != nil || fi.Size() == 0 {
		t.Errorf("html report: %v", err)
	}
	// Two profiled scenarios: one profile each.
	for _, name := range []string{"daemon-throughput.pprof", "daemon-rate.pprof"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Size() == 0 {
			t.Errorf("profile %s: %v", name, err)
		}
	}
}

func TestProfilePath(t *testing.T) {
	for _, c := range []struct{ scenarios, want string }{
		{"throughput", "var/p.pprof"},
		{"idle,storm", "var/p.pprof"},
		{"standard", "var/p-rate.pprof"},
		{"throughput,rate", "var/p-rate.pprof"},
	} {
		b := &bench{o: &options{scenarios: c.scenarios, profile: "var/p.pprof"}}
		if got := b.profilePath("rate"); got != c.want {
			t.Errorf("%s: %s, want %s", c.scenarios, got, c.want)
		}
	}
}

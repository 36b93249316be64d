package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMonitoringAddr: conns and status ask the monitoring port the config
// names, on loopback when it binds every address; -addr stands alone.
func TestMonitoringAddr(t *testing.T) {
	dir := t.TempDir()
	write := func(name, monitoring string) string {
		p := filepath.Join(dir, name)
		js := `{"tls": {"server_cert": "a", "server_key": "b"}, "records": {"V": ["logger"]}` + monitoring + `}`
		if err := os.WriteFile(p, []byte(js), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		opts introOpts
		want string // address, or the start of the error
	}{
		{introOpts{addr: "127.0.0.1:9999"}, "127.0.0.1:9999"},
		{introOpts{addr: "nocolon"}, "error: -addr"},
		{introOpts{addr: "127.0.0.1:1", dev: true}, "error: give -addr, -config or -dev"},
		{introOpts{dev: true}, "127.0.0.1:9273"},
		{introOpts{config: write("default.json", `, "monitoring": {"prometheus_metrics_port": 9100}`)}, "127.0.0.1:9100"},
		{introOpts{config: write("host.json", `, "monitoring": {"prometheus_metrics_port": 9100, "prometheus_metrics_host": "10.1.2.3"}`)}, "10.1.2.3:9100"},
		{introOpts{config: write("any4.json", `, "monitoring": {"prometheus_metrics_port": 9100, "prometheus_metrics_host": "0.0.0.0"}`)}, "127.0.0.1:9100"},
		{introOpts{config: write("any6.json", `, "monitoring": {"prometheus_metrics_port": 9100, "prometheus_metrics_host": "::"}`)}, "[::1]:9100"},
		{introOpts{config: write("none.json", ``)}, "error: the config serves no monitoring port"},
		{introOpts{config: filepath.Join(dir, "missing.json")}, "error: config:"},
	} {
		got, err := tc.opts.monitoringAddr()
		if err != nil {
			got = "error: " + err.Error()
		}
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("%+v: %q, want %q", tc.opts, got, tc.want)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{"127.0.0.1": true, "::1": true, "localhost": true, "127.1.2.3": true,
		"0.0.0.0": false, "::": false, "": false, "10.0.0.1": false, "example.org": false} {
		if got := isLoopback(host); got != want {
			t.Errorf("isLoopback(%q) = %v", host, got)
		}
	}
}

func TestFmtSpan(t *testing.T) {
	for d, want := range map[time.Duration]string{-time.Second: "0s", 850 * time.Millisecond: "850ms", 42 * time.Second: "42s",
		192 * time.Second: "3m12s", 5*time.Hour + 3*time.Minute + 10*time.Second: "5h3m", 52 * time.Hour: "2d4h"} {
		if got := fmtSpan(d); got != want {
			t.Errorf("fmtSpan(%v) = %q, want %q", d, got, want)
		}
	}
}

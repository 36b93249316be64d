package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, js string) (*Config, []string) {
	t.Helper()
	c, w, err := Parse([]byte(js))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return c, w
}

const base = `"tls": {"server_cert": "a", "server_key": "b"}, "port": 0`

func TestReliableAckCombinationsAreStartupErrors(t *testing.T) {
	cases := map[string]string{
		`"records": {"V": ["kafka"]}, "kafka": {"bootstrap.servers": "x:9092"}, "reliable_ack_sources": {"V": "kinesis"}`:                     `dispatcher "kinesis" does not route V`,
		`"records": {"V": ["logger"]}, "reliable_ack_sources": {"V": "logger"}`:                                                               `logger dispatcher cannot confirm`,
		`"records": {"connectivity": ["kafka"]}, "kafka": {"bootstrap.servers": "x:9092"}, "reliable_ack_sources": {"connectivity": "kafka"}`: `connectivity records are made by the server`,
		`"records": {"V": ["logger"]}, "ack_mode": "sometimes"`:                                                                               `ack_mode "sometimes"`,
		`"records": {"V": ["logger"]}, "rate_limit": {"enabled": true, "message_limit": 0, "message_interval_time": 30}`:                      `rate_limit`,
		`"records": {"V": ["kafka"]}, "kafka": {"bootstrap.servers": "x:9092", "no.such.property": 1}`:                                        `"no.such.property"`,
		`"records": {"V": ["pubsub"]}`:                                            `gcp_project_id`,
		`"records": {"V": ["logger"]}, "vin_allowlist": "/nonexistent/allowlist"`: `vin_allowlist`,
	}
	for js, want := range cases {
		c, _ := mustParse(t, "{"+base+", "+js+"}")
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s\n  got %v, want an error containing %q", js, err, want)
		}
	}
	// The reference's integration config's reliable-ack setting is valid.
	c, _ := mustParse(t, `{`+base+`, "records": {"V": ["kafka", "logger"]}, "kafka": {"bootstrap.servers": "x:9092"}, "reliable_ack_sources": {"V": "kafka"}}`)
	if err := c.Validate(); err != nil {
		t.Fatalf("valid reliable-ack config refused: %v", err)
	}
}

func TestVINAllowlistInlineAndFile(t *testing.T) {
	c, _ := mustParse(t, `{`+base+`, "records": {"V": ["logger"]}, "vin_allowlist": ["A1", "B2"]}`)
	got, err := c.AllowedVINs()
	if err != nil || len(got) != 2 || !got["A1"] || !got["B2"] {
		t.Fatalf("inline list: %v %v", got, err)
	}
	path := filepath.Join(t.TempDir(), "vins.txt")
	os.WriteFile(path, []byte("# fleet A\nC3\n\n  D4  # trailing comment\n"), 0o600)
	c, _ = mustParse(t, `{`+base+`, "records": {"V": ["logger"]}, "vin_allowlist": "`+path+`"}`)
	got, err = c.AllowedVINs()
	if err != nil || len(got) != 2 || !got["C3"] || !got["D4"] {
		t.Fatalf("file list: %v %v", got, err)
	}
	c, _ = mustParse(t, `{`+base+`, "records": {"V": ["logger"]}}`)
	if got, err := c.AllowedVINs(); got != nil || err != nil {
		t.Fatalf("no allowlist: %v %v, want nil (everyone)", got, err)
	}
}

func TestDurationsAndDefaults(t *testing.T) {
	c, w := mustParse(t, `{`+base+`, "records": {"V": ["logger"]}, "idle_timeout": "90s", "handshake_timeout": 2.5, "shutdown_timeout": "40s", "reliable_ack": true}`)
	if c.IdleTimeout.Duration != 90*time.Second || c.HandshakeTimeout.Duration != 2500*time.Millisecond || c.ShutdownTimeout.Duration != 40*time.Second {
		t.Fatalf("durations %v %v %v", c.IdleTimeout, c.HandshakeTimeout, c.ShutdownTimeout)
	}
	if len(w) != 1 || !strings.Contains(w[0], "reliable_ack") {
		t.Fatalf("warnings %v, want one about reliable_ack", w)
	}
	if c.ShutdownWithin() != 40*time.Second {
		t.Fatalf("shutdown within %v, want the file's 40s", c.ShutdownWithin())
	}
	if _, _, err := Parse([]byte(`{"idle_timeout": "soon"}`)); err == nil {
		t.Fatal("a bad duration was accepted")
	}
	c, _ = mustParse(t, `{"tls": {"server_cert": "a", "server_key": "b"}, "records": {"V": ["logger"]}}`)
	if c.Port != 443 || c.Namespace != "tesla_telemetry" || c.Spool.Dir != DefaultSpoolDir || c.ShutdownWithin() != DefaultShutdownTimeout {
		t.Fatalf("defaults: port %d namespace %q spool %q shutdown %v", c.Port, c.Namespace, c.Spool.Dir, c.ShutdownWithin())
	}
	c, _ = mustParse(t, `{"monitoring": {"prometheus_metrics_port": 1}, "port": 0}`)
	if c.Port != 0 || c.Monitoring.PrometheusMetricsHost != DefaultMonitoringHost || c.Monitoring.ProfilerHost != DefaultMonitoringHost {
		t.Fatalf("port 0 given, monitoring hosts: %d %+v", c.Port, c.Monitoring)
	}
}

func TestSyntaxErrorsNameTheLine(t *testing.T) {
	_, _, err := Parse([]byte("{\n  \"port\": 1,\n  \"host\": oops\n}"))
	if err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("got %v, want the line number", err)
	}
}

func TestAllowlistMustBeARegularFile(t *testing.T) {
	c, _ := mustParse(t, `{`+base+`, "records": {"V": ["logger"]}, "vin_allowlist": "/dev/zero"}`)
	if _, err := c.AllowedVINs(); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("got %v, want a refusal of /dev/zero", err)
	}
}

func TestSpoolMinFreeBytes(t *testing.T) {
	c, _ := mustParse(t, `{`+base+`, "records": {"V": ["logger"]}}`)
	if got := c.Spool.MinFree(); got != DefaultMinFreeBytes {
		t.Fatalf("default min_free_bytes %d, want %d", got, DefaultMinFreeBytes)
	}
	c, _ = mustParse(t, `{`+base+`, "records": {"V": ["logger"]}, "spool": {"min_free_bytes": 0}}`)
	if got := c.Spool.MinFree(); got != 0 {
		t.Fatalf("min_free_bytes 0 read as %d", got)
	}
	c, _, err := Parse([]byte(`{` + base + `, "records": {"V": ["logger"]}, "spool": {"min_free_bytes": -5}}`))
	if err == nil {
		err = c.Validate()
	}
	if err == nil || !strings.Contains(err.Error(), "min_free_bytes") {
		t.Fatalf("negative min_free_bytes: %v", err)
	}
}

func TestProfilingPathIsSupported(t *testing.T) {
	_, w := mustParse(t, `{`+base+`, "records": {"V": ["logger"]}, "monitoring": {"profiler_port": 4269, "profiling_path": "/tmp/trace.out"}}`)
	if len(w) != 0 {
		t.Fatalf("warnings %v, want none", w)
	}
	_, w = mustParse(t, `{`+base+`, "records": {"V": ["logger"]}, "monitoring": {"profiling_path": "/tmp/trace.out"}}`)
	if len(w) != 1 || !strings.Contains(w[0], "profiler_port") {
		t.Fatalf("warnings %v, want one saying profiling_path needs profiler_port", w)
	}
}

func TestValidateSyntaxReadsNoFile(t *testing.T) {
	c, _ := mustParse(t, `{`+base+`, "records": {"V": ["logger"]}, "vin_allowlist": "/nonexistent/allowlist"}`)
	if err := c.ValidateSyntax(); err != nil {
		t.Fatalf("ValidateSyntax: %v", err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "/nonexistent/allowlist") {
		t.Fatalf("Validate: %v, want the allowlist file named", err)
	}
	c, _ = mustParse(t, `{`+base+`, "records": {"V": ["logger"]}, "vin_allowlist": 7}`)
	if err := c.ValidateSyntax(); err == nil || !strings.Contains(err.Error(), "vin_allowlist") {
		t.Fatalf("ValidateSyntax on a number: %v", err)
	}
	// The redis.tls files are files the configuration names too; the
	// section's own settings are still checked.
	c, _ = mustParse(t, `{`+base+`, "records": {"V": ["redis"]}, "redis": {"addrs": ["a:1"], "publish_vin_topics": true, "tls": {"ca_file": "/nonexistent/ca.pem"}}}`)
	if err := c.ValidateSyntax(); err != nil {
		t.Fatalf("ValidateSyntax read redis.tls.ca_file: %v", err)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "redis.tls.ca_file") {
		t.Fatalf("Validate: %v, want redis.tls.ca_file named", err)
	}
	c, _ = mustParse(t, `{`+base+`, "records": {"V": ["redis"]}, "redis": {"addrs": ["a:1"], "tls": {"ca_file": "/nonexistent/ca.pem"}}}`)
	if err := c.ValidateSyntax(); err == nil || !strings.Contains(err.Error(), "publish_vin_topics") {
		t.Fatalf("ValidateSyntax: %v, want the redis section's own mistake", err)
	}
}

// The embedded dev config loads without a warning and validates.
func TestDevConfig(t *testing.T) {
	c, w, err := Dev()
	if err != nil || len(w) != 0 {
		t.Fatalf("dev config: %v, warnings %v", err, w)
	}
	if err := c.ValidateSyntax(); err != nil {
		t.Fatal(err)
	}
	if c.Host != "127.0.0.1" || c.Port != 4443 || c.Spool.Dir != "var/spool" {
		t.Fatalf("dev config %+v", c)
	}
}

// checkRoundTrip: Marshal writes c so that Parse reads the same settings
// back (the tests and the bench write their configs this way).
func checkRoundTrip(t *testing.T, c *Config) {
	t.Helper()
	b1, err := Marshal(c)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	c2, _, err := Parse(b1)
	if err != nil {
		t.Fatalf("parse what Marshal wrote: %v\n%s", err, b1)
	}
	b2, err := Marshal(c2)
	if err != nil {
		t.Fatalf("marshal again: %v", err)
	}
	if string(b1) != string(b2) {
		t.Fatalf("Marshal ∘ Parse changed the config:\n%s\nread back as\n%s", b1, b2)
	}
}

// A Config built in code and marshalled loads as built: zero values are
// left out except port (0 and absent differ), pointers to zero values and
// empty sections are kept (an empty "redis.tls" turns TLS on, "0" idle
// timeout disables it).
func TestMarshalKeepsWhatDiffers(t *testing.T) {
	zero := int64(0)
	in := &Config{
		Host: "127.0.0.1", Port: 0, Records: map[string][]string{"V": {"redis", "logger"}},
		TLS:         TLS{ServerCert: "s.crt", ServerKey: "s.key"},
		Spool:       Spool{Dir: "/tmp/spool", MinFreeBytes: &zero},
		IdleTimeout: NewDuration(0), HandshakeTimeout: NewDuration(1500 * time.Millisecond),
		Redis:      &Redis{Addrs: []string{"a:1"}, TLS: &RedisTLS{}, Stream: &RedisStream{}},
		Monitoring: &Monitoring{},
		Kafka:      Kafka{"bootstrap.servers": "k:9092", "queue.buffering.max.ms": 5},
		Airbrake:   json.RawMessage(`{"project_id": 1}`),
	}
	b, err := Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	c, w, err := Parse(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if len(w) != 1 || !strings.Contains(w[0], `"airbrake" is not supported`) {
		t.Fatalf("warnings %v, want the one for airbrake", w)
	}
	if c.Port != 0 || c.Spool.MinFree() != 0 || c.IdleTimeout == nil || c.IdleTimeout.Duration != 0 ||
		c.HandshakeTimeout.Duration != 1500*time.Millisecond || c.Redis.TLS == nil || c.Redis.Stream == nil ||
		c.Monitoring == nil || c.Kafka["queue.buffering.max.ms"] != 5.0 || c.Namespace != DefaultNamespace {
		t.Fatalf("read back %+v from\n%s", c, b)
	}
	for _, absent := range []string{`"log_level"`, `"use_default_eng_ca"`, `"kinesis"`, `"max_bytes"`, `"status_port"`} {
		if strings.Contains(string(b), absent) {
			t.Errorf("%s written for a zero value:\n%s", absent, b)
		}
	}
	checkRoundTrip(t, c)
	for _, p := range []string{"dev-config.json", "../../test/testdata/configs/reference-integration.json", "../../test/testdata/configs/reference-example.json"} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		c, _, err := Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		checkRoundTrip(t, c)
	}
}

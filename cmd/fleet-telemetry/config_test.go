package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, js string) (*Config, []string) {
	t.Helper()
	c, w, err := ParseConfig([]byte(js))
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
	if _, _, err := ParseConfig([]byte(`{"idle_timeout": "soon"}`)); err == nil {
		t.Fatal("a bad duration was accepted")
	}
	c, _ = mustParse(t, `{"tls": {"server_cert": "a", "server_key": "b"}, "records": {"V": ["logger"]}}`)
	if c.Port != 443 || c.Namespace != "tesla_telemetry" || c.Spool.Dir == "" {
		t.Fatalf("defaults: port %d namespace %q spool %q", c.Port, c.Namespace, c.Spool.Dir)
	}
	o := serverOptions(c, nil, nil, nil)
	if o.AckMode != 0 || o.IdleTimeout != 0 || o.RateLimit.Limit != 0 {
		t.Fatalf("default server options %+v", o)
	}
	c, _ = mustParse(t, `{`+base+`, "records": {"V": ["logger"], "connectivity": ["logger"]}, "ack_mode": "receive", "idle_timeout": "0",
		"rate_limit": {"enabled": true, "message_limit": 5, "message_interval_time": 2}, "vin_allowlist": ["A1"]}`)
	o = serverOptions(c, nil, nil, nil)
	if o.AckMode != 1 || o.IdleTimeout >= 0 || o.RateLimit.Limit != 5 || o.RateLimit.Interval != 2*time.Second ||
		!o.Connectivity || o.AllowVIN == nil || !o.AllowVIN("A1") || o.AllowVIN("B2") {
		t.Fatalf("server options from the file: %+v", o)
	}
}

func TestSyntaxErrorsNameTheLine(t *testing.T) {
	_, _, err := ParseConfig([]byte("{\n  \"port\": 1,\n  \"host\": oops\n}"))
	if err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("got %v, want the line number", err)
	}
}

func TestSuppressHandshakeErrorLoggingEnv(t *testing.T) {
	c, _ := mustParse(t, `{`+base+`, "records": {"V": ["logger"]}}`)
	if serverOptions(c, nil, nil, nil).QuietHandshakeErrors {
		t.Fatal("quiet without the variable")
	}
	t.Setenv("SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING", "true")
	if !serverOptions(c, nil, nil, nil).QuietHandshakeErrors {
		t.Fatal("SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING=true not honoured")
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
	if got := c.Spool.minFreeBytes(); got != defaultMinFreeBytes {
		t.Fatalf("default min_free_bytes %d, want %d", got, defaultMinFreeBytes)
	}
	c, _ = mustParse(t, `{`+base+`, "records": {"V": ["logger"]}, "spool": {"min_free_bytes": 0}}`)
	if got := c.Spool.minFreeBytes(); got != 0 {
		t.Fatalf("min_free_bytes 0 read as %d", got)
	}
	c, _, err := ParseConfig([]byte(`{` + base + `, "records": {"V": ["logger"]}, "spool": {"min_free_bytes": -5}}`))
	if err == nil {
		err = c.Validate()
	}
	if err == nil || !strings.Contains(err.Error(), "min_free_bytes") {
		t.Fatalf("negative min_free_bytes: %v", err)
	}
}

package config

import (
	"testing"
)

// env is a stand-in for os.Getenv.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// REDIS_PASSWORD wins over the file's password when set and not empty.
func TestRedisPasswordFromEnvironment(t *testing.T) {
	for v, want := range map[string]string{"": "file", "secret": "secret"} {
		c, _ := mustParse(t, `{`+base+`, "records": {"V": ["redis"]}, "redis": {"addrs": ["a:1"], "password": "file", "publish_vin_topics": true}}`)
		c.ApplyEnv(env(map[string]string{"REDIS_PASSWORD": v}))
		if c.Redis.Password != want {
			t.Errorf("REDIS_PASSWORD=%q: password %q, want %q", v, c.Redis.Password, want)
		}
	}
	// Without a redis section there is nothing to override.
	c, _ := mustParse(t, `{`+base+`, "records": {"V": ["logger"]}}`)
	c.ApplyEnv(env(map[string]string{"REDIS_PASSWORD": "secret"}))
	if c.Redis != nil {
		t.Fatalf("REDIS_PASSWORD made a redis section: %+v", c.Redis)
	}
}

// KINESIS_STREAM_<TYPE> wins over kinesis.streams when set and not empty;
// the sink gets the resolved names.
func TestKinesisStreamsFromEnvironment(t *testing.T) {
	c, _ := mustParse(t, `{`+base+`, "records": {"V": ["kinesis"]}, "kinesis": {"streams": {"V": "map_V", "alerts": "map_alerts", "errors": "map_errors"}}}`)
	c.ApplyEnv(env(map[string]string{
		"KINESIS_STREAM_V": "env_V", "KINESIS_STREAM_CONNECTIVITY": "env_connectivity",
		"KINESIS_STREAM_ERRORS": "",  // empty: not an override
		"KINESIS_STREAM_OTHER":  "x", // not a record type
	}))
	want := map[string]string{"V": "env_V", "connectivity": "env_connectivity", "alerts": "map_alerts", "errors": "map_errors"}
	if len(c.Kinesis.Streams) != len(want) {
		t.Fatalf("streams %v, want %v", c.Kinesis.Streams, want)
	}
	for typ, name := range want {
		if c.Kinesis.Streams[typ] != name {
			t.Errorf("stream of %s = %q, want %q", typ, c.Kinesis.Streams[typ], name)
		}
	}
	// Without a kinesis section, the variable still names the stream.
	c, _ = mustParse(t, `{`+base+`, "records": {"V": ["kinesis"]}}`)
	c.ApplyEnv(env(map[string]string{"KINESIS_STREAM_V": "env_V"}))
	if c.Kinesis == nil || c.Kinesis.Streams["V"] != "env_V" || c.Kinesis.MaxRetries != nil {
		t.Fatalf("kinesis %+v", c.Kinesis)
	}
}

func TestSwitchesFromEnvironment(t *testing.T) {
	c, _ := mustParse(t, `{`+base+`, "records": {"V": ["logger"]}}`)
	c.ApplyEnv(env(nil))
	if c.QuietHandshakeErrors || c.CryptoTLSRecords {
		t.Fatalf("switches on without the variables: %+v", c)
	}
	c.ApplyEnv(env(map[string]string{"SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING": "true", "FLEET_TELEMETRY_CRYPTO_TLS_RECORDS": "true"}))
	if !c.QuietHandshakeErrors || !c.CryptoTLSRecords {
		t.Fatalf("switches off with the variables =true: %+v", c)
	}
	c.ApplyEnv(env(map[string]string{"SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING": "1"}))
	if c.QuietHandshakeErrors {
		t.Fatal(`SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING=1 honoured; the reference reads only "true"`)
	}
}

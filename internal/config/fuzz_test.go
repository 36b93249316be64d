package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseConfig: Parse and Validate never panic, whatever the file
// holds; a config that parses either validates or says why not, and
// Marshal writes it so that Parse reads the same settings back. Seeds: the
// reference configs the end-to-end tests load, the embedded dev config and
// a few hand-written edge cases.
func FuzzParseConfig(f *testing.F) {
	for _, pattern := range []string{"../../test/testdata/configs/*.json", "*.json"} {
		paths, _ := filepath.Glob(pattern)
		for _, p := range paths {
			if b, err := os.ReadFile(p); err == nil {
				f.Add(b)
			}
		}
	}
	for _, s := range []string{
		`{}`, `null`, `[]`, `{"port": -1}`, `{"port": 1e300}`,
		`{"records": {"V": ["logger", "logger"]}, "tls": {"server_cert": "a", "server_key": "b"}}`,
		`{"records": {"V": null}, "reliable_ack_sources": {"V": "kafka"}}`,
		`{"idle_timeout": "-5s", "handshake_timeout": 1e309}`,
		`{"idle_timeout": 9.3e18, "handshake_timeout": "9999999999h"}`,
		`{"kafka": {"bootstrap.servers": 5, "linger.ms": "x", "acks": null}}`,
		`{"spool": {"max_bytes": -1}, "rate_limit": {"enabled": true, "message_limit": -3, "message_interval_time": 0}}`,
		`{"monitoring": {"statsd": {"host": "", "flush_period": -1}}}`,
		`{"vin_allowlist": ["A", 1, null]}`,
		`{"kinesis": {"streams": {"V": ""}, "max_retries": -1}, "pubsub": {}}`,
		`{"records": {"V": ["logger"]}} trailing`,
		`{"records": {"V": ["mqtt", "redis", "zmq", "nats"]}, "mqtt": {"broker": "b", "qos": 7, "x": 1}, "redis": {"addrs": [], "tls": {"ca_file": "/dev/null"}, "pool": {"read_timeout": -9}}, "zmq": {"addr": "", "server_key_json_path": "k"}, "nats": {"url": ""}}`,
		`{"redis": {"tls": null, "pool": [], "stream": 5}, "mqtt": [], "nats": "x", "zmq": 1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, _, err := Parse(data)
		if err != nil {
			return
		}
		if cfg == nil {
			t.Fatal("ParseConfig returned neither a config nor an error")
		}
		_ = cfg.Validate()
		_ = cfg.Dispatchers()
		_ = cfg.RoutedTopics()
		checkRoundTrip(t, cfg)
	})
}

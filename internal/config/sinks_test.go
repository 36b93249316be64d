package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
)

// refusals parses each config (base plus the fragment) and checks that
// Validate names the mistake.
func refusals(t *testing.T, cases map[string]string) {
	t.Helper()
	for js, want := range cases {
		c, _ := mustParse(t, "{"+base+", "+js+"}")
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s\n  got %v, want an error containing %q", js, err, want)
		}
	}
}

func TestMQTTSection(t *testing.T) {
	c, w := mustParse(t, `{`+base+`, "records": {"V": ["mqtt"]}, "mqtt": {"broker": "mqtt:1883", "topic_base": "telemetry"}, "reliable_ack_sources": {"V": "mqtt"}}`)
	if err := c.Validate(); err != nil || len(w) != 0 {
		t.Fatalf("validate %v, warnings %v", err, w)
	}
	refusals(t, map[string]string{
		`"records": {"V": ["mqtt"]}`:                                                           `no "mqtt" section`,
		`"records": {"V": ["mqtt"]}, "mqtt": {"topic_base": "t"}`:                              `mqtt.broker is required`,
		`"records": {"V": ["mqtt"]}, "mqtt": {"broker": "b", "qos": 3}`:                        `mqtt.qos 3`,
		`"records": {"V": ["mqtt"]}, "mqtt": {"broker": "b", "qos": -1}`:                       `mqtt.qos -1`,
		`"records": {"V": ["mqtt"]}, "mqtt": {"broker": "b", "topic_base": "a/#"}`:             `mqtt.topic_base`,
		`"records": {"V": ["mqtt"]}, "mqtt": {"broker": "b", "publish_timeout_ms": -1}`:        `mqtt.publish_timeout_ms -1 is negative`,
		`"records": {"V": ["mqtt"]}, "mqtt": {"broker": "b", "keep_alive_seconds": -30}`:       `mqtt.keep_alive_seconds`,
		`"records": {"V": ["mqtt"]}, "mqtt": {"broker": "b", "connect_retry_interval_ms": -2}`: `connect_retry_interval_ms`,
	})
	if _, _, err := Parse([]byte(`{"mqtt": {"qos": "one"}}`)); err == nil {
		t.Error(`"qos": "one" parsed`)
	}
	// A key the section does not have loads with a warning naming it.
	_, w = mustParse(t, `{`+base+`, "records": {"V": ["mqtt"]}, "mqtt": {"broker": "b", "qos_level": 1}}`)
	if len(w) != 1 || !strings.Contains(w[0], `"mqtt.qos_level"`) {
		t.Fatalf("warnings %v", w)
	}
}

func TestNATSSection(t *testing.T) {
	c, w := mustParse(t, `{`+base+`, "records": {"V": ["nats"], "alerts": ["nats"]}, "nats": {"url": "nats://u:p@n:4222", "name": "ft"}, "reliable_ack_sources": {"V": "nats"}}`)
	if err := c.Validate(); err != nil || len(w) != 0 {
		t.Fatalf("validate %v warnings %v", err, w)
	}
	refusals(t, map[string]string{
		`"records": {"V": ["nats"]}`:                        `no "nats" section`,
		`"records": {"V": ["nats"]}, "nats": {"name": "x"}`: `nats.url is required`,
	})
	if _, _, err := Parse([]byte(`{"nats": {"jetstream": "yes"}}`)); err == nil {
		t.Error(`"jetstream": "yes" parsed`)
	}
	_, w = mustParse(t, `{`+base+`, "records": {"V": ["nats"]}, "nats": {"url": "u", "jet_stream": true}}`)
	if len(w) != 1 || !strings.Contains(w[0], `"nats.jet_stream"`) {
		t.Fatalf("warnings %v", w)
	}
}

func TestZMQSection(t *testing.T) {
	// The reference integration config's section.
	c, w := mustParse(t, `{`+base+`, "records": {"V": ["zmq"], "connectivity": ["zmq"]}, "zmq": {"addr": "tcp://*:5284"}}`)
	if err := c.Validate(); err != nil || len(w) != 0 {
		t.Fatalf("validate %v warnings %v", err, w)
	}
	c, _ = mustParse(t, `{`+base+`, "records": {"V": ["zmq"]}, "zmq": {"addr": "tcp://127.0.0.1:1", "verbose": true}, "reliable_ack_sources": {"V": "zmq"}}`)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	refusals(t, map[string]string{
		`"records": {"V": ["zmq"]}`:                           `no "zmq" section`,
		`"records": {"V": ["zmq"]}, "zmq": {"verbose": true}`: `zmq.addr is required`,
		// CURVE keys are refused by name, never ignored.
		`"records": {"V": ["zmq"]}, "zmq": {"addr": "tcp://*:1", "server_key_json_path": "/k.json"}`:                                             `zmq.server_key_json_path: CURVE`,
		`"records": {"V": ["zmq"]}, "zmq": {"addr": "tcp://*:1", "server_key_json_path": "/k.json", "allowed_public_keys_json_path": "/p.json"}`: `zmq.server_key_json_path, zmq.allowed_public_keys_json_path: CURVE`,
	})
}

func TestKinesisAndPubsubSections(t *testing.T) {
	c, w := mustParse(t, `{`+base+`, "records": {"V": ["kinesis", "pubsub"]}, "kinesis": {"max_retries": 0, "streams": {"V": "s"}}, "pubsub": {"gcp_project_id": "p"}}`)
	if err := c.Validate(); err != nil || len(w) != 0 {
		t.Fatalf("validate %v warnings %v", err, w)
	}
	// No kinesis section: AWS defaults.
	c, _ = mustParse(t, `{`+base+`, "records": {"V": ["kinesis"]}}`)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	refusals(t, map[string]string{
		`"records": {"V": ["kinesis"]}, "kinesis": {"max_retries": -1}`: `kinesis.max_retries -1 is negative`,
		`"records": {"V": ["pubsub"]}, "pubsub": {}`:                    `gcp_project_id`,
	})
}

func TestRedisSection(t *testing.T) {
	// The reference integration config's section, and every key.
	for _, js := range []string{
		`"redis": {"addrs": ["redis:6379"], "publish_vin_topics": true, "subscriber_set_prefix": "consumer"}`,
		`"redis": {"addrs": ["a:1", "b:2"], "username": "u", "password": "p", "db": 3,
		"tls": {}, "override_tls_server_name": "redis.internal", "cluster_mode": true, "publish_timeout": 1500000000,
		"publish_vin_topics": false, "subscriber_set_prefix": "s",
		"pool": {"pool_size": 10, "min_idle_conns": 1, "max_idle_conns": 2, "max_active_conns": 20, "read_timeout": 2000000000,
			"write_timeout": -1, "pool_timeout": 3000000000, "conn_max_idle_time": 60000000000, "conn_max_lifetime": 3600000000000},
		"stream": {"max_len": 5000}}`,
		// Stream mode alone is enough to publish something.
		`"redis": {"addrs": ["a:1"], "stream": {}}, "reliable_ack_sources": {"V": "redis"}`,
	} {
		c, w := mustParse(t, `{`+base+`, "records": {"V": ["redis"]}, `+js+`}`)
		if err := c.Validate(); err != nil || len(w) != 0 {
			t.Fatalf("%s: validate %v, warnings %v", js, err, w)
		}
	}
	refusals(t, map[string]string{
		`"records": {"V": ["redis"]}`:                                                                                           `no "redis" section`,
		`"records": {"V": ["redis"]}, "redis": {"publish_vin_topics": true}`:                                                    `redis.addrs is empty`,
		`"records": {"V": ["redis"]}, "redis": {"addrs": [""], "publish_vin_topics": true}`:                                     `redis.addrs[0] is empty`,
		`"records": {"V": ["redis"]}, "redis": {"addrs": ["a:1"]}`:                                                              `publish_vin_topics or subscriber_set_prefix`,
		`"records": {"V": ["redis"]}, "redis": {"addrs": ["a:1"], "publish_vin_topics": true, "db": -1}`:                        `redis.db -1`,
		`"records": {"V": ["redis"]}, "redis": {"addrs": ["a:1"], "publish_vin_topics": true, "publish_timeout": -5}`:           `redis.publish_timeout -5`,
		`"records": {"V": ["redis"]}, "redis": {"addrs": ["a:1"], "publish_vin_topics": true, "pool": {"pool_size": -1}}`:       `redis.pool.pool_size`,
		`"records": {"V": ["redis"]}, "redis": {"addrs": ["a:1"], "publish_vin_topics": true, "pool": {"read_timeout": -3}}`:    `redis.pool.read_timeout`,
		`"records": {"V": ["redis"]}, "redis": {"addrs": ["a:1"], "publish_vin_topics": true, "pool": {"pool_timeout": -1}}`:    `redis.pool.pool_timeout`,
		`"records": {"V": ["redis"]}, "redis": {"addrs": ["a:1"], "publish_vin_topics": true, "stream": {"max_len": -1}}`:       `redis.stream.max_len`,
		`"records": {"V": ["redis"]}, "redis": {"addrs": ["a:1"], "publish_vin_topics": true, "override_tls_server_name": "x"}`: `TLS is off`,
	})
	// A duration as a string is the reference's format error too.
	if _, _, err := Parse([]byte(`{"redis": {"publish_timeout": "5s"}}`)); err == nil {
		t.Error(`"publish_timeout": "5s" parsed`)
	}
	_, w := mustParse(t, `{`+base+`, "records": {"V": ["redis"]}, "redis": {"addrs": ["a:1"], "publish_vin_topic": true,
		"tls": {"cafile": "x"}, "pool": {"size": 3}, "stream": {"maxlen": 1}}}`)
	if strings.Join(w, "\n") != `config key "redis.pool.size" is unknown and is ignored
config key "redis.publish_vin_topic" is unknown and is ignored
config key "redis.stream.maxlen" is unknown and is ignored
config key "redis.tls.cafile" is unknown and is ignored` {
		t.Fatalf("warnings %q", w)
	}
}

func TestRedisTLSFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := devca.WriteDir(dir, []string{"V1"}); err != nil {
		t.Fatal(err)
	}
	d := devca.Dir{Path: dir}
	c, _ := mustParse(t, `{`+base+`, "records": {"V": ["redis"]}, "redis": {"addrs": ["a:1"], "publish_vin_topics": true, "override_tls_server_name": "redis.internal",
		"tls": {"ca_file": "`+d.File(devca.CACertFile)+`", "server_cert": "`+d.File(devca.ServerCertFile)+`", "server_key": "`+d.File(devca.ServerKeyFile)+`"}}}`)
	tc, err := c.Redis.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	if tc.RootCAs == nil || len(tc.Certificates) != 1 || tc.ServerName != "redis.internal" {
		t.Fatalf("tls %+v", tc)
	}
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("x"), 0o600)
	for tlsJSON, want := range map[string]string{
		`{"ca_file": "/nonexistent/ca.pem"}`:                                "redis.tls.ca_file",
		`{"ca_file": "` + notPEM + `"}`:                                     "no PEM certificate",
		`{"server_cert": "` + notPEM + `"}`:                                 "go together",
		`{"server_cert": "x.pem", "server_key": "y"}`:                       "redis.tls.server_cert",
		`{"ca_file": "/dev/zero"}`:                                          "not a regular file",
		`{"server_cert": "` + notPEM + `", "server_key": "` + notPEM + `"}`: "server_cert/server_key",
	} {
		c, _ := mustParse(t, `{`+base+`, "records": {"V": ["redis"]}, "redis": {"addrs": ["a:1"], "publish_vin_topics": true, "tls": `+tlsJSON+`}}`)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("tls %s: %v, want %q", tlsJSON, err, want)
		}
	}
}

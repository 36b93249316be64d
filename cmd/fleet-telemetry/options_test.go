package main

import (
	"strings"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
)

// The tests here check the mapping of a Config to each package's Options;
// internal/config tests what a file may hold.

func mustParse(t *testing.T, js string) *config.Config {
	t.Helper()
	c, _, err := config.Parse([]byte(js))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return c
}

const base = `"tls": {"server_cert": "a", "server_key": "b"}, "port": 0`

func TestServerOptions(t *testing.T) {
	c := mustParse(t, `{"tls": {"server_cert": "a", "server_key": "b"}, "records": {"V": ["logger"]}}`)
	o := serverOptions(c, nil, nil, nil)
	if o.AckMode != 0 || o.IdleTimeout != 0 || o.RateLimit.Limit != 0 || o.Addr != ":443" || o.QuietHandshakeErrors || o.CryptoTLSRecords {
		t.Fatalf("default server options %+v", o)
	}
	c = mustParse(t, `{`+base+`, "records": {"V": ["logger"], "connectivity": ["logger"]}, "ack_mode": "receive", "idle_timeout": "0",
		"handshake_timeout": 2, "request_timeout": "3s",
		"rate_limit": {"enabled": true, "message_limit": 5, "message_interval_time": 2}, "vin_allowlist": ["A1"]}`)
	c.QuietHandshakeErrors, c.CryptoTLSRecords = true, true // as ApplyEnv sets them
	o = serverOptions(c, nil, nil, nil)
	if o.AckMode != 1 || o.IdleTimeout >= 0 || o.RateLimit.Limit != 5 || o.RateLimit.Interval != 2*time.Second ||
		o.HandshakeTimeout != 2*time.Second || o.RequestTimeout != 3*time.Second ||
		!o.Connectivity || o.AllowVIN == nil || !o.AllowVIN("A1") || o.AllowVIN("B2") ||
		!o.QuietHandshakeErrors || !o.CryptoTLSRecords {
		t.Fatalf("server options from the file: %+v", o)
	}
}

// loadConfig applies the environment: SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING
// reaches the listener's options.
func TestLoadConfigAppliesEnvironment(t *testing.T) {
	c, _, err := loadConfig("", true)
	if err != nil {
		t.Fatal(err)
	}
	if serverOptions(c, nil, nil, nil).QuietHandshakeErrors {
		t.Fatal("quiet without the variable")
	}
	t.Setenv("SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING", "true")
	t.Setenv("KINESIS_STREAM_V", "env_V")
	if c, _, err = loadConfig("", true); err != nil {
		t.Fatal(err)
	}
	if !serverOptions(c, nil, nil, nil).QuietHandshakeErrors {
		t.Fatal("SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING=true not honoured")
	}
	if o, err := kinesisOptions(c); err != nil || o.Streams["V"] != "env_V" {
		t.Fatalf("kinesis options %+v %v, want KINESIS_STREAM_V's stream", o, err)
	}
}

func TestMQTTOptions(t *testing.T) {
	c := mustParse(t, `{`+base+`, "records": {"V": ["mqtt"]}, "mqtt": {"broker": "mqtt:1883", "topic_base": "telemetry"}}`)
	o, err := mqttOptions(c.MQTT)
	if err != nil {
		t.Fatal(err)
	}
	// 0 means the sink's default (the reference's).
	if o.Broker != "tcp://mqtt:1883" || o.QoS != 0 || o.Retained || o.ConnectTimeout != 0 || o.PublishTimeout != 0 || o.KeepAlive != 0 {
		t.Fatalf("options %+v", o)
	}
	c = mustParse(t, `{`+base+`, "records": {"V": ["mqtt"]}, "mqtt": {"broker": "ssl://b:8883", "qos": 2, "retained": true,
		"connect_timeout_ms": 1500, "publish_timeout_ms": 700, "disconnect_timeout_ms": 5, "connect_retry_interval_ms": 2000,
		"keep_alive_seconds": 9, "client_id": "c", "username": "u", "password": "p"}}`)
	o, err = mqttOptions(c.MQTT)
	if err != nil {
		t.Fatal(err)
	}
	if o.Broker != "ssl://b:8883" || o.QoS != 2 || !o.Retained || o.ConnectTimeout != 1500*time.Millisecond ||
		o.PublishTimeout != 700*time.Millisecond || o.DisconnectTimeout != 5*time.Millisecond ||
		o.ConnectRetryInterval != 2*time.Second || o.KeepAlive != 9*time.Second ||
		o.ClientID != "c" || o.Username != "u" || o.Password != "p" {
		t.Fatalf("options %+v", o)
	}
}

// The spool CLI builds sinks from a config it does not Validate: each
// sink refuses what Validate would, instead of starting on it or
// dereferencing a missing section.
func TestSinksRefuseWhatValidateRefuses(t *testing.T) {
	for name, build := range map[string]func(*config.Config) error{
		"mqtt":  func(c *config.Config) error { _, err := newMQTTSink(c, forwarder.Encoder{}, nil); return err },
		"redis": func(c *config.Config) error { _, err := newRedisSink(c, forwarder.Encoder{}, nil); return err },
		"nats":  func(c *config.Config) error { _, err := newNATSSink(c, forwarder.Encoder{}, nil); return err },
		"zmq":   func(c *config.Config) error { _, err := newZMQSink(c, forwarder.Encoder{}, nil); return err },
		"pubsub": func(c *config.Config) error {
			_, err := newPubsubSink(c, forwarder.Encoder{}, []string{"V"}, nil)
			return err
		},
		"kinesis": func(c *config.Config) error { _, err := newKinesisSink(c, forwarder.Encoder{}, nil); return err },
	} {
		c := &config.Config{Namespace: "ns"}
		want := `"` + name + `" section`
		switch name {
		case "kinesis": // no section is valid: AWS defaults
			n := -1
			c.Kinesis = &config.Kinesis{MaxRetries: &n}
			want = "kinesis.max_retries -1 is negative"
		case "mqtt":
			c.MQTT = &config.MQTT{Broker: "b", QoS: 7}
			want = "mqtt.qos 7"
		}
		if err := build(c); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, want)
		}
	}
}

func TestNATSOptions(t *testing.T) {
	c := mustParse(t, `{`+base+`, "records": {"V": ["nats"], "alerts": ["nats"]}, "nats": {"url": "nats://u:p@n:4222", "name": "ft"}}`)
	o, err := natsOptions(c.NATS)
	if err != nil || o.URL != "nats://u:p@n:4222" || o.Name != "ft" || o.JetStream {
		t.Fatalf("options %+v %v", o, err)
	}
	c = mustParse(t, `{`+base+`, "records": {"V": ["nats"]}, "nats": {"url": "nats://n:4222", "jetstream": true}}`)
	if o, err := natsOptions(c.NATS); err != nil || !o.JetStream {
		t.Fatalf("jetstream: %+v %v", o, err)
	}
}

func TestZMQOptions(t *testing.T) {
	c := mustParse(t, `{`+base+`, "records": {"V": ["zmq"], "connectivity": ["zmq"]}, "zmq": {"addr": "tcp://*:5284"}}`)
	o, err := zmqOptions(c.ZMQ)
	if err != nil || o.Addr != "tcp://*:5284" || o.Verbose {
		t.Fatalf("options %+v %v", o, err)
	}
}

func TestRedisOptions(t *testing.T) {
	// The reference integration config's section.
	c := mustParse(t, `{`+base+`, "records": {"V": ["redis"]}, "redis": {"addrs": ["redis:6379"], "publish_vin_topics": true, "subscriber_set_prefix": "consumer"}}`)
	o, err := redisOptions(c.Redis)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Addrs) != 1 || !o.PublishVINTopics || o.SubscriberSetPrefix != "consumer" || o.TLS != nil || o.Stream != nil ||
		o.PublishTimeout != 0 || o.ClusterMode || o.DB != 0 {
		t.Fatalf("options %+v", o)
	}
	// Every key; durations are nanoseconds.
	c = mustParse(t, `{`+base+`, "records": {"V": ["redis"]}, "redis": {"addrs": ["a:1", "b:2"], "username": "u", "password": "p", "db": 3,
		"tls": {}, "override_tls_server_name": "redis.internal", "cluster_mode": true, "publish_timeout": 1500000000,
		"publish_vin_topics": false, "subscriber_set_prefix": "s",
		"pool": {"pool_size": 10, "min_idle_conns": 1, "max_idle_conns": 2, "max_active_conns": 20, "read_timeout": 2000000000,
			"write_timeout": -1, "pool_timeout": 3000000000, "conn_max_idle_time": 60000000000, "conn_max_lifetime": 3600000000000},
		"stream": {"max_len": 5000}}}`)
	c.ApplyEnv(func(k string) string {
		if k == "REDIS_PASSWORD" {
			return "from-env"
		}
		return ""
	})
	o, err = redisOptions(c.Redis)
	if err != nil {
		t.Fatal(err)
	}
	p := o.Pool
	if len(o.Addrs) != 2 || o.Username != "u" || o.Password != "from-env" || o.DB != 3 || !o.ClusterMode ||
		o.PublishTimeout != 1500*time.Millisecond || o.PublishVINTopics || o.SubscriberSetPrefix != "s" ||
		o.TLS == nil || o.TLS.ServerName != "redis.internal" || o.Stream == nil || o.Stream.MaxLen != 5000 ||
		p.PoolSize != 10 || p.MinIdleConns != 1 || p.MaxIdleConns != 2 || p.MaxActiveConns != 20 ||
		p.ReadTimeout != 2*time.Second || p.WriteTimeout != -1 || p.PoolTimeout != 3*time.Second ||
		p.ConnMaxIdleTime != time.Minute || p.ConnMaxLifetime != time.Hour {
		t.Fatalf("options %+v pool %+v", o, p)
	}
}

func TestKinesisOptions(t *testing.T) {
	c := mustParse(t, `{`+base+`, "namespace": "ns", "records": {"V": ["kinesis"]}}`)
	o, err := kinesisOptions(c)
	if err != nil || o.Namespace != "ns" || o.MaxRetries != -1 || o.Streams != nil || o.OverrideHost != "" {
		t.Fatalf("defaults %+v %v", o, err)
	}
	c = mustParse(t, `{`+base+`, "records": {"V": ["kinesis"]}, "kinesis": {"override_host": "http://k:4566", "max_retries": 0, "streams": {"V": "test_V"}}}`)
	o, err = kinesisOptions(c)
	if err != nil || o.MaxRetries != 0 || o.Streams["V"] != "test_V" || o.OverrideHost != "http://k:4566" {
		t.Fatalf("options %+v %v", o, err)
	}
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
)

func noEnv(string) string { return "" }

func TestRedisSectionDefaultsAndKeys(t *testing.T) {
	// The reference integration config's section.
	c, w := mustParse(t, `{`+base+`, "records": {"V": ["redis"]}, "redis": {"addrs": ["redis:6379"], "publish_vin_topics": true, "subscriber_set_prefix": "consumer"}}`)
	if err := c.Validate(); err != nil || len(w) != 0 {
		t.Fatalf("validate %v, warnings %v", err, w)
	}
	o, err := redisOptions(c.Redis, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Addrs) != 1 || !o.PublishVINTopics || o.SubscriberSetPrefix != "consumer" || o.TLS != nil || o.Stream != nil ||
		o.PublishTimeout != 0 || o.ClusterMode || o.DB != 0 {
		t.Fatalf("options %+v", o)
	}
	// Every key; durations are nanoseconds.
	c, w = mustParse(t, `{`+base+`, "records": {"V": ["redis"]}, "redis": {"addrs": ["a:1", "b:2"], "username": "u", "password": "p", "db": 3,
		"tls": {}, "override_tls_server_name": "redis.internal", "cluster_mode": true, "publish_timeout": 1500000000,
		"publish_vin_topics": false, "subscriber_set_prefix": "s",
		"pool": {"pool_size": 10, "min_idle_conns": 1, "max_idle_conns": 2, "max_active_conns": 20, "read_timeout": 2000000000,
			"write_timeout": -1, "pool_timeout": 3000000000, "conn_max_idle_time": 60000000000, "conn_max_lifetime": 3600000000000},
		"stream": {"max_len": 5000}}}`)
	if len(w) != 0 {
		t.Fatalf("warnings %v", w)
	}
	o, err = redisOptions(c.Redis, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	p := o.Pool
	if len(o.Addrs) != 2 || o.Username != "u" || o.Password != "p" || o.DB != 3 || !o.ClusterMode ||
		o.PublishTimeout != 1500*time.Millisecond || o.PublishVINTopics || o.SubscriberSetPrefix != "s" ||
		o.TLS == nil || o.TLS.ServerName != "redis.internal" || o.Stream == nil || o.Stream.MaxLen != 5000 ||
		p.PoolSize != 10 || p.MinIdleConns != 1 || p.MaxIdleConns != 2 || p.MaxActiveConns != 20 ||
		p.ReadTimeout != 2*time.Second || p.WriteTimeout != -1 || p.PoolTimeout != 3*time.Second ||
		p.ConnMaxIdleTime != time.Minute || p.ConnMaxLifetime != time.Hour {
		t.Fatalf("options %+v pool %+v", o, p)
	}
}

// REDIS_PASSWORD wins over the file's password when set and not empty.
func TestRedisPasswordFromEnvironment(t *testing.T) {
	c, _ := mustParse(t, `{`+base+`, "records": {"V": ["redis"]}, "redis": {"addrs": ["a:1"], "password": "file", "publish_vin_topics": true}}`)
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "REDIS_PASSWORD" {
				return v
			}
			return ""
		}
	}
	for v, want := range map[string]string{"": "file", "secret": "secret"} {
		o, err := redisOptions(c.Redis, env(v))
		if err != nil || o.Password != want {
			t.Errorf("REDIS_PASSWORD=%q: password %q (%v), want %q", v, o.Password, err, want)
		}
	}
}

func TestRedisTLSFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := devca.WriteDir(dir, []string{"V1"}); err != nil {
		t.Fatal(err)
	}
	d := devca.Dir{Path: dir}
	c, _ := mustParse(t, `{`+base+`, "records": {"V": ["redis"]}, "redis": {"addrs": ["a:1"], "publish_vin_topics": true,
		"tls": {"ca_file": "`+d.File(devca.CACertFile)+`", "server_cert": "`+d.File(devca.ServerCertFile)+`", "server_key": "`+d.File(devca.ServerKeyFile)+`"}}}`)
	o, err := redisOptions(c.Redis, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if o.TLS.RootCAs == nil || len(o.TLS.Certificates) != 1 {
		t.Fatalf("tls %+v", o.TLS)
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

func TestRedisSectionRefusals(t *testing.T) {
	cases := map[string]string{
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
	}
	for js, want := range cases {
		c, _ := mustParse(t, "{"+base+", "+js+"}")
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s\n  got %v, want an error containing %q", js, err, want)
		}
	}
	// A duration as a string is the reference's format error too.
	if _, _, err := ParseConfig([]byte(`{"redis": {"publish_timeout": "5s"}}`)); err == nil {
		t.Error(`"publish_timeout": "5s" parsed`)
	}
	// Stream mode alone is enough to publish something.
	c, _ := mustParse(t, `{`+base+`, "records": {"V": ["redis"]}, "redis": {"addrs": ["a:1"], "stream": {}}, "reliable_ack_sources": {"V": "redis"}}`)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
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

package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder/zmq"
)

// Kinesis is the "kinesis" section.
type Kinesis struct {
	// OverrideHost replaces the AWS endpoint (e.g. a local Kinesis API).
	OverrideHost string `json:"override_host,omitzero"`
	// MaxRetries bounds the AWS client's own retries per call (nil: the
	// SDK's default).
	MaxRetries *int `json:"max_retries,omitzero"`
	// Streams maps a record type to its stream name (missing:
	// <namespace>_<record type>); ApplyEnv puts KINESIS_STREAM_<TYPE> in.
	Streams map[string]string `json:"streams,omitzero" config:"record_types"`
}

// Check reports the mistakes of the "kinesis" section (nil: AWS defaults,
// which are valid).
func (k *Kinesis) Check() error {
	if k != nil && k.MaxRetries != nil && *k.MaxRetries < 0 {
		return fmt.Errorf("kinesis.max_retries %d is negative", *k.MaxRetries)
	}
	return nil
}

// Pubsub is the "pubsub" section.
type Pubsub struct {
	ProjectID string `json:"gcp_project_id,omitzero"`
}

// Check reports the mistakes of the "pubsub" section (nil: missing).
func (p *Pubsub) Check() error {
	if p == nil || p.ProjectID == "" {
		return errors.New(`records route to "pubsub" but "pubsub.gcp_project_id" is not set`)
	}
	return nil
}

// MQTT is the reference's "mqtt" section. Durations are integers in the
// unit their name says; 0 (or absent) means the default.
type MQTT struct {
	Broker                 string `json:"broker,omitzero"`
	ClientID               string `json:"client_id,omitzero"`
	Username               string `json:"username,omitzero"`
	Password               string `json:"password,omitzero"`
	TopicBase              string `json:"topic_base,omitzero"`
	QoS                    int    `json:"qos,omitzero"`
	Retained               bool   `json:"retained,omitzero"`
	ConnectTimeoutMs       int    `json:"connect_timeout_ms,omitzero"`
	PublishTimeoutMs       int    `json:"publish_timeout_ms,omitzero"`
	DisconnectTimeoutMs    int    `json:"disconnect_timeout_ms,omitzero"`
	ConnectRetryIntervalMs int    `json:"connect_retry_interval_ms,omitzero"`
	KeepAliveSeconds       int    `json:"keep_alive_seconds,omitzero"`
}

// Check reports every mistake of the "mqtt" section (nil: missing).
func (m *MQTT) Check() error {
	if m == nil {
		return errNoSection("mqtt")
	}
	var errs []error
	if m.Broker == "" {
		errs = append(errs, errors.New("mqtt.broker is required"))
	}
	if m.QoS < 0 || m.QoS > 2 {
		errs = append(errs, fmt.Errorf("mqtt.qos %d is not 0, 1 or 2", m.QoS))
	}
	if strings.ContainsAny(m.TopicBase, "+#\x00") {
		errs = append(errs, fmt.Errorf("mqtt.topic_base %q holds an MQTT wildcard (+, #) or U+0000", m.TopicBase))
	}
	errs = append(errs, negatives("mqtt",
		intKey{"connect_timeout_ms", m.ConnectTimeoutMs}, intKey{"publish_timeout_ms", m.PublishTimeoutMs},
		intKey{"disconnect_timeout_ms", m.DisconnectTimeoutMs}, intKey{"connect_retry_interval_ms", m.ConnectRetryIntervalMs},
		intKey{"keep_alive_seconds", m.KeepAliveSeconds})...)
	return errors.Join(errs...)
}

// Redis is the reference's "redis" section, plus our "stream". Durations
// are JSON integers of nanoseconds, as in the reference (Go's
// time.Duration).
type Redis struct {
	Addrs    []string `json:"addrs,omitzero"`
	Username string   `json:"username,omitzero"`
	// Password is overridden by the REDIS_PASSWORD environment variable
	// when that is set and not empty (ApplyEnv).
	Password string `json:"password,omitzero"`
	DB       int    `json:"db,omitzero"`
	// TLS, when present (an empty object too), turns TLS on.
	TLS                   *RedisTLS `json:"tls,omitzero"`
	OverrideTLSServerName string    `json:"override_tls_server_name,omitzero"`
	ClusterMode           bool      `json:"cluster_mode,omitzero"`
	// PublishTimeout is in nanoseconds (0: 5 s).
	PublishTimeout      int64      `json:"publish_timeout,omitzero"`
	PublishVINTopics    bool       `json:"publish_vin_topics,omitzero"`
	SubscriberSetPrefix string     `json:"subscriber_set_prefix,omitzero"`
	Pool                *RedisPool `json:"pool,omitzero"`
	// Stream, when present, also appends every record to the stream
	// <namespace>_<type> (ours; off by default).
	Stream *RedisStream `json:"stream,omitzero"`
}

// RedisTLS is "redis.tls": a CA bundle to trust instead of the system's,
// and a client certificate.
type RedisTLS struct {
	CAFile     string `json:"ca_file,omitzero"`
	ServerCert string `json:"server_cert,omitzero"`
	ServerKey  string `json:"server_key,omitzero"`
}

// RedisPool is "redis.pool" (durations in nanoseconds; 0: go-redis's
// defaults; read/write_timeout -1 means none, as in go-redis).
type RedisPool struct {
	PoolSize        int   `json:"pool_size,omitzero"`
	MinIdleConns    int   `json:"min_idle_conns,omitzero"`
	MaxIdleConns    int   `json:"max_idle_conns,omitzero"`
	MaxActiveConns  int   `json:"max_active_conns,omitzero"`
	ReadTimeout     int64 `json:"read_timeout,omitzero"`
	WriteTimeout    int64 `json:"write_timeout,omitzero"`
	PoolTimeout     int64 `json:"pool_timeout,omitzero"`
	ConnMaxIdleTime int64 `json:"conn_max_idle_time,omitzero"`
	ConnMaxLifetime int64 `json:"conn_max_lifetime,omitzero"`
}

// RedisStream is "redis.stream".
type RedisStream struct {
	// MaxLen trims each stream to about this many entries (0: 1,000,000).
	MaxLen int64 `json:"max_len,omitzero"`
}

// Check reports every mistake of the "redis" section (nil: missing),
// those of its TLS files included.
func (r *Redis) Check() error {
	if r == nil {
		return r.checkSettings()
	}
	errs := []error{r.checkSettings()}
	if _, err := r.ClientTLS(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkSettings is Check without reading the TLS files.
func (r *Redis) checkSettings() error {
	if r == nil {
		return errNoSection("redis")
	}
	var errs []error
	if len(r.Addrs) == 0 {
		errs = append(errs, errors.New("redis.addrs is empty"))
	}
	for i, a := range r.Addrs {
		if a == "" {
			errs = append(errs, fmt.Errorf("redis.addrs[%d] is empty", i))
		}
	}
	if !r.PublishVINTopics && r.SubscriberSetPrefix == "" && r.Stream == nil {
		errs = append(errs, errors.New("redis: set publish_vin_topics or subscriber_set_prefix (or stream), otherwise no record is published"))
	}
	if r.DB < 0 {
		errs = append(errs, fmt.Errorf("redis.db %d is negative", r.DB))
	}
	if r.PublishTimeout < 0 {
		errs = append(errs, fmt.Errorf("redis.publish_timeout %d is negative (nanoseconds)", r.PublishTimeout))
	}
	if r.Stream != nil && r.Stream.MaxLen < 0 {
		errs = append(errs, fmt.Errorf("redis.stream.max_len %d is negative", r.Stream.MaxLen))
	}
	if p := r.Pool; p != nil {
		errs = append(errs, negatives("redis.pool",
			intKey{"pool_size", p.PoolSize}, intKey{"min_idle_conns", p.MinIdleConns},
			intKey{"max_idle_conns", p.MaxIdleConns}, intKey{"max_active_conns", p.MaxActiveConns})...)
		for _, d := range []struct {
			key string
			v   int64
			min int64
		}{
			{"read_timeout", p.ReadTimeout, -2}, {"write_timeout", p.WriteTimeout, -2}, {"pool_timeout", p.PoolTimeout, 0},
			{"conn_max_idle_time", p.ConnMaxIdleTime, -1}, {"conn_max_lifetime", p.ConnMaxLifetime, 0},
		} {
			if d.v < d.min {
				errs = append(errs, fmt.Errorf("redis.pool.%s %d is out of range (nanoseconds, at least %d)", d.key, d.v, d.min))
			}
		}
	}
	if r.TLS == nil && r.OverrideTLSServerName != "" {
		errs = append(errs, errors.New(`redis.override_tls_server_name is set but there is no "redis.tls" (TLS is off)`))
	}
	return errors.Join(errs...)
}

// ClientTLS builds the client TLS configuration of "redis.tls", reading
// its files (nil, nil: TLS is off).
func (r *Redis) ClientTLS() (*tls.Config, error) {
	if r == nil || r.TLS == nil {
		return nil, nil
	}
	c := r.TLS
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: r.OverrideTLSServerName}
	if c.CAFile != "" {
		pem, err := readSmallFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("redis.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redis.tls.ca_file %s holds no PEM certificate", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case c.ServerCert != "" && c.ServerKey != "":
		certPEM, err := readSmallFile(c.ServerCert)
		if err != nil {
			return nil, fmt.Errorf("redis.tls.server_cert: %w", err)
		}
		keyPEM, err := readSmallFile(c.ServerKey)
		if err != nil {
			return nil, fmt.Errorf("redis.tls.server_key: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("redis.tls.server_cert/server_key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case c.ServerCert != "" || c.ServerKey != "":
		return nil, errors.New("redis.tls: server_cert and server_key go together")
	}
	return cfg, nil
}

// NATS is the "nats" section of Teslemetry's fork of the reference, plus
// our "jetstream".
type NATS struct {
	// URL is the server URL (credentials may be in it); several are
	// separated by commas.
	URL string `json:"url,omitzero"`
	// Name is the connection name the server shows.
	Name string `json:"name,omitzero"`
	// JetStream waits for each record's PubAck: the cursor passes only
	// what a stream stored (a stream must take <namespace>.>).
	JetStream bool `json:"jetstream,omitzero"`
}

// Check reports the mistakes of the "nats" section (nil: missing).
func (n *NATS) Check() error {
	if n == nil {
		return errNoSection("nats")
	}
	if n.URL == "" {
		return errors.New("nats.url is required")
	}
	return nil
}

// ZMQ is the reference's "zmq" section.
type ZMQ struct {
	// Addr is the endpoint the PUB socket binds ("tcp://*:5284").
	Addr string `json:"addr,omitzero"`
	// ServerKeyJSONPath and AllowedPublicKeysJSONPath configure CURVE in
	// the reference; this build cannot do CURVE and refuses them.
	ServerKeyJSONPath         string `json:"server_key_json_path,omitzero"`
	AllowedPublicKeysJSONPath string `json:"allowed_public_keys_json_path,omitzero"`
	// Verbose logs the socket library's messages.
	Verbose bool `json:"verbose,omitzero"`
}

// Check reports every mistake of the "zmq" section (nil: missing).
func (z *ZMQ) Check() error {
	if z == nil {
		return errNoSection("zmq")
	}
	var errs []error
	if z.Addr == "" {
		errs = append(errs, errors.New("zmq.addr is required"))
	}
	var curve []string
	if z.ServerKeyJSONPath != "" {
		curve = append(curve, "zmq.server_key_json_path")
	}
	if z.AllowedPublicKeysJSONPath != "" {
		curve = append(curve, "zmq.allowed_public_keys_json_path")
	}
	if len(curve) > 0 {
		errs = append(errs, zmq.CurveNotSupported(curve...))
	}
	return errors.Join(errs...)
}

// errNoSection is the mistake of a sink that records route to but whose
// section the file lacks.
func errNoSection(sink string) error {
	return fmt.Errorf("records route to %q but there is no %q section", sink, sink)
}

// intKey is a whole-number key of a section and its value.
type intKey struct {
	key string
	v   int
}

// negatives reports each key of section whose value is negative.
func negatives(section string, keys ...intKey) []error {
	var errs []error
	for _, k := range keys {
		if k.v < 0 {
			errs = append(errs, fmt.Errorf("%s.%s %d is negative", section, k.key, k.v))
		}
	}
	return errs
}

// maxSinkFileBytes bounds a file a sink section names (a CA bundle, a
// certificate, a key).
const maxSinkFileBytes = 4 << 20

// readSmallFile reads a file a sink section names.
func readSmallFile(path string) ([]byte, error) { return readRegularFile(path, maxSinkFileBytes) }

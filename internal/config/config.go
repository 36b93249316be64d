// Package config is the daemon's configuration: the reference server's JSON
// file format plus our own keys, parsed, defaulted, checked and overridden
// by the environment. It is the only package that knows the file format;
// cmd/fleet-telemetry maps a Config to each package's Options.
//
// The keys a file may hold are the json tags of the types below, read by
// reflection: a key no type has, at any depth, loads with a warning naming
// it; a key of the reference's format this build does not act on (tagged
// config:"unsupported") loads with a warning saying so.
package config

import (
	"encoding/json"
	"fmt"
	"time"
)

// Config is one configuration file, after defaults and environment
// overrides. Only the keys this build acts on are fields, apart from the
// reference's keys tagged config:"unsupported".
type Config struct {
	Host string `json:"host,omitzero"`
	// Port is the vehicle port: absent, DefaultPort; 0 picks a free one.
	// It is always written (see Marshal), since 0 and absent differ.
	Port          int    `json:"port"`
	LogLevel      string `json:"log_level,omitzero"`
	JSONLogEnable bool   `json:"json_log_enable,omitzero"`
	// Namespace prefixes topic and stream names (default DefaultNamespace).
	Namespace string `json:"namespace,omitzero"`
	// Records maps a record type to the dispatchers (sinks) it goes to.
	Records         map[string][]string `json:"records,omitzero"`
	TLS             TLS                 `json:"tls,omitzero"`
	UseDefaultEngCA bool                `json:"use_default_eng_ca,omitzero"`
	Spool           Spool               `json:"spool,omitzero"`
	// TransmitDecodedRecords sends JSON instead of protobuf to the sinks.
	TransmitDecodedRecords bool `json:"transmit_decoded_records,omitzero"`
	// Kafka is the reference's librdkafka-style property map.
	Kafka Kafka `json:"kafka,omitzero"`
	// Kinesis is the "kinesis" section.
	Kinesis *Kinesis `json:"kinesis,omitzero"`
	// Pubsub is the "pubsub" section.
	Pubsub *Pubsub `json:"pubsub,omitzero"`
	// MQTT is the "mqtt" section.
	MQTT *MQTT `json:"mqtt,omitzero"`
	// Redis is the "redis" section.
	Redis *Redis `json:"redis,omitzero"`
	// NATS is the "nats" section.
	NATS *NATS `json:"nats,omitzero"`
	// ZMQ is the "zmq" section.
	ZMQ *ZMQ `json:"zmq,omitzero"`
	// Monitoring is the "monitoring" section.
	Monitoring *Monitoring `json:"monitoring,omitzero"`
	// StatusPort serves plain-HTTP /status when > 0.
	StatusPort int `json:"status_port,omitzero"`
	// AckMode is "spool" (default: ack after the fsync'd commit) or
	// "receive" (ack on receipt, the reference's default).
	AckMode string `json:"ack_mode,omitzero"`
	// ReliableAck is the reference's older switch; reliable_ack_sources
	// replaces it.
	ReliableAck bool `json:"reliable_ack,omitzero"`
	// ReliableAckSources maps a record type to the one dispatcher whose
	// confirmation its ack waits for.
	ReliableAckSources map[string]string `json:"reliable_ack_sources,omitzero"`
	// RateLimit is the "rate_limit" section.
	RateLimit *RateLimit `json:"rate_limit,omitzero"`
	// VINAllowlist is a list of VINs, or the path of a file with one VIN
	// per line; when set, other vehicles are refused with 403.
	VINAllowlist json.RawMessage `json:"vin_allowlist,omitzero"`
	// IdleTimeout closes a WebSocket silent for this long (default 10m;
	// "0" disables). A duration string ("90s") or a number of seconds.
	IdleTimeout *Duration `json:"idle_timeout,omitzero"`
	// HandshakeTimeout bounds the TLS handshake (default 10s).
	HandshakeTimeout *Duration `json:"handshake_timeout,omitzero"`
	// RequestTimeout bounds TLS established → WebSocket upgrade request
	// complete (default 10s): slow or silent HTTP clients are dropped.
	RequestTimeout *Duration `json:"request_timeout,omitzero"`
	// ShutdownTimeout bounds the graceful stop: acks owed, vehicles closed,
	// forwarders draining (default DefaultShutdownTimeout).
	ShutdownTimeout *Duration `json:"shutdown_timeout,omitzero"`
	// VinsSignalTrackingEnabled are VINs whose signals are counted per VIN
	// (vin_signal_count); at most 20, as in the reference.
	VinsSignalTrackingEnabled []string `json:"vins_signal_tracking_enabled,omitzero"`

	// Airbrake is the reference's error reporter, which this build does
	// not have.
	Airbrake json.RawMessage `json:"airbrake,omitzero" config:"unsupported"`
	// Logger is the reference's logger section, which this build does not
	// read (log_level and json_log_enable are the keys it reads).
	Logger json.RawMessage `json:"logger,omitzero" config:"unsupported"`

	// QuietHandshakeErrors is SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING=true:
	// failed TLS handshakes are counted but not logged (ApplyEnv).
	QuietHandshakeErrors bool `json:"-"`
	// CryptoTLSRecords is FLEET_TELEMETRY_CRYPTO_TLS_RECORDS=true: the
	// connections keep crypto/tls for their records after the handshake
	// instead of the native TLS 1.3 record layer (ApplyEnv).
	CryptoTLSRecords bool `json:"-"`
}

// Kafka is the "kafka" section: librdkafka property names and values, as
// in the reference. forwarder/kafka.ParseConfig checks and translates it.
type Kafka map[string]any

// TLS is the "tls" section: the server's certificate and key, and the CA
// bundle vehicles' client certificates must chain to.
type TLS struct {
	ServerCert string `json:"server_cert,omitzero"`
	ServerKey  string `json:"server_key,omitzero"`
	CAFile     string `json:"ca_file,omitzero"`
}

// Spool is our "spool" section.
type Spool struct {
	// Dir is the spool's data directory (default DefaultSpoolDir).
	Dir string `json:"dir,omitzero"`
	// MaxBytes bounds the spool (0: unlimited).
	MaxBytes int64 `json:"max_bytes,omitzero"`
	// MinFreeBytes is the free space the spool leaves on its file system:
	// below it new records are refused (nil: DefaultMinFreeBytes; 0: none).
	MinFreeBytes *int64 `json:"min_free_bytes,omitzero"`
}

// MinFree is spool.min_free_bytes or its default.
func (s Spool) MinFree() int64 {
	if s.MinFreeBytes == nil {
		return DefaultMinFreeBytes
	}
	return *s.MinFreeBytes
}

// RateLimit is the "rate_limit" section.
type RateLimit struct {
	Enabled bool `json:"enabled,omitzero"`
	// MessageLimit records are allowed per MessageIntervalTime seconds.
	MessageLimit        int `json:"message_limit,omitzero"`
	MessageIntervalTime int `json:"message_interval_time,omitzero"`
}

// Monitoring is the "monitoring" section.
type Monitoring struct {
	// PrometheusMetricsPort serves /metrics (Prometheus text) when > 0.
	PrometheusMetricsPort int `json:"prometheus_metrics_port,omitzero"`
	// PrometheusMetricsHost is the address to bind (default
	// DefaultMonitoringHost).
	PrometheusMetricsHost string `json:"prometheus_metrics_host,omitzero"`
	// ProfilerPort serves net/http/pprof under /debug/pprof/ when > 0.
	ProfilerPort int `json:"profiler_port,omitzero"`
	// ProfilerHost is the address to bind (default DefaultMonitoringHost).
	ProfilerHost string `json:"profiler_host,omitzero"`
	// ProfilingPath is the file the profiler port's /live_profiler?mode=on
	// writes a CPU profile to, as in the reference (empty: that endpoint
	// answers 405).
	ProfilingPath string `json:"profiling_path,omitzero"`
	// Statsd pushes the metrics to a StatsD server (the reference's
	// monitoring.statsd).
	Statsd *Statsd `json:"statsd,omitzero"`
	// Introspection, false, leaves /connz, /varz and the status page (which
	// list the connected vehicles' VINs) off the metrics port; absent or
	// true, they are served there (see IntrospectionOn).
	Introspection *bool `json:"introspection,omitzero"`
}

// IntrospectionOn reports whether the metrics port also serves /connz,
// /varz and the status page: unless introspection is set to false.
func (m *Monitoring) IntrospectionOn() bool { return m.Introspection == nil || *m.Introspection }

// Statsd is the "monitoring.statsd" section, as in the reference.
type Statsd struct {
	// Host is the StatsD server's host:port (UDP).
	Host string `json:"host,omitzero"`
	// Prefix is put in front of every metric name as is.
	Prefix string `json:"prefix,omitzero"`
	// FlushPeriod is the push interval in milliseconds (default 1000).
	FlushPeriod int `json:"flush_period,omitzero"`
}

// Duration reads "90s"-style strings or numbers of seconds, and is written
// as a string.
type Duration struct{ time.Duration }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var secs float64
	if err := json.Unmarshal(b, &secs); err == nil {
		d.Duration = time.Duration(secs * float64(time.Second))
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"30s\" or a number of seconds, got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	d.Duration = v
	return nil
}

// MarshalJSON implements json.Marshaler: "1m30s", which UnmarshalJSON
// reads back.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.Duration.String()) }

// NewDuration is a *Duration of d, for building a Config in code.
func NewDuration(d time.Duration) *Duration { return &Duration{d} }

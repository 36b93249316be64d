package main

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder/kafka"
)

// Config is the reference server's JSON configuration file, plus our own
// keys (spool, timeouts). Only the keys this build acts on are fields here;
// others are reported by Load.
type Config struct {
	Host            string              `json:"host"`
	Port            int                 `json:"port"`
	LogLevel        string              `json:"log_level"`
	JSONLogEnable   bool                `json:"json_log_enable"`
	Namespace       string              `json:"namespace"`
	Records         map[string][]string `json:"records"`
	TLS             TLSConfig           `json:"tls"`
	UseDefaultEngCA bool                `json:"use_default_eng_ca"`
	Spool           SpoolConfig         `json:"spool"`
	// TransmitDecodedRecords sends JSON instead of protobuf to the sinks.
	TransmitDecodedRecords bool `json:"transmit_decoded_records"`
	// Kafka is the reference's librdkafka-style property map.
	Kafka map[string]any `json:"kafka"`
	// Kinesis is the "kinesis" section.
	Kinesis *KinesisConfig `json:"kinesis"`
	// Pubsub is the "pubsub" section.
	Pubsub *PubsubConfig `json:"pubsub"`
	// MQTT is the "mqtt" section (sink_mqtt.go).
	MQTT *MQTTConfig `json:"mqtt"`
	// Redis is the "redis" section (sink_redis.go).
	Redis *RedisConfig `json:"redis"`
	// NATS is the "nats" section (sink_nats.go).
	NATS *NATSConfig `json:"nats"`
	// ZMQ is the "zmq" section (sink_zmq.go).
	ZMQ *ZMQConfig `json:"zmq"`
	// Monitoring is the "monitoring" section.
	Monitoring *MonitoringConfig `json:"monitoring"`
	// StatusPort serves plain-HTTP /status when > 0.
	StatusPort int `json:"status_port"`
	// AckMode is "spool" (default: ack after the fsync'd commit) or
	// "receive" (ack on receipt, the reference's default).
	AckMode string `json:"ack_mode"`
	// ReliableAck is the reference's older switch; reliable_ack_sources
	// replaces it.
	ReliableAck bool `json:"reliable_ack"`
	// ReliableAckSources maps a record type to the one dispatcher whose
	// confirmation its ack waits for.
	ReliableAckSources map[string]string `json:"reliable_ack_sources"`
	// RateLimit is the "rate_limit" section.
	RateLimit *RateLimitConfig `json:"rate_limit"`
	// VINAllowlist is a list of VINs, or the path of a file with one VIN
	// per line; when set, other vehicles are refused with 403.
	VINAllowlist json.RawMessage `json:"vin_allowlist"`
	// IdleTimeout closes a WebSocket silent for this long (default 10m;
	// "0" disables). A duration string ("90s") or a number of seconds.
	IdleTimeout *Duration `json:"idle_timeout"`
	// HandshakeTimeout bounds the TLS handshake (default 10s).
	HandshakeTimeout *Duration `json:"handshake_timeout"`
	// RequestTimeout bounds TLS established → WebSocket upgrade request
	// complete (default 10s): slow or silent HTTP clients are dropped.
	RequestTimeout *Duration `json:"request_timeout"`
	// ShutdownTimeout bounds the graceful stop: acks owed, vehicles closed,
	// forwarders draining (default 25s).
	ShutdownTimeout *Duration `json:"shutdown_timeout"`
	// VinsSignalTrackingEnabled are VINs whose signals are counted per VIN
	// (vin_signal_count); at most 20, as in the reference.
	VinsSignalTrackingEnabled []string `json:"vins_signal_tracking_enabled"`
}

// RateLimitConfig is the "rate_limit" section.
type RateLimitConfig struct {
	Enabled bool `json:"enabled"`
	// MessageLimit records are allowed per MessageIntervalTime seconds.
	MessageLimit        int `json:"message_limit"`
	MessageIntervalTime int `json:"message_interval_time"`
}

// Duration reads "90s"-style strings or numbers of seconds.
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

// MonitoringConfig is the "monitoring" section.
type MonitoringConfig struct {
	// PrometheusMetricsPort serves /metrics (Prometheus text) when > 0.
	PrometheusMetricsPort int `json:"prometheus_metrics_port"`
	// PrometheusMetricsHost is the address to bind (default 127.0.0.1).
	PrometheusMetricsHost string `json:"prometheus_metrics_host"`
	// ProfilerPort serves net/http/pprof under /debug/pprof/ when > 0.
	ProfilerPort int `json:"profiler_port"`
	// ProfilerHost is the address to bind (default 127.0.0.1).
	ProfilerHost string `json:"profiler_host"`
	// ProfilingPath is the file the profiler port's /live_profiler?mode=on
	// writes a CPU profile to, as in the reference (empty: that endpoint
	// answers 405).
	ProfilingPath string `json:"profiling_path"`
	// Statsd pushes the metrics to a StatsD server (the reference's
	// monitoring.statsd).
	Statsd *StatsdConfig `json:"statsd"`
}

// StatsdConfig is the "monitoring.statsd" section, as in the reference.
type StatsdConfig struct {
	// Host is the StatsD server's host:port (UDP).
	Host string `json:"host"`
	// Prefix is put in front of every metric name as is.
	Prefix string `json:"prefix"`
	// FlushPeriod is the push interval in milliseconds (default 1000).
	FlushPeriod int `json:"flush_period"`
}

// KinesisConfig is the "kinesis" section.
type KinesisConfig struct {
	// OverrideHost replaces the AWS endpoint (e.g. a local Kinesis API).
	OverrideHost string `json:"override_host"`
	// MaxRetries bounds the AWS client's own retries per call.
	MaxRetries *int `json:"max_retries"`
	// Streams maps a record type to its stream name.
	Streams map[string]string `json:"streams"`
}

// PubsubConfig is the "pubsub" section.
type PubsubConfig struct {
	ProjectID string `json:"gcp_project_id"`
}

// TLSConfig is the "tls" section.
type TLSConfig struct {
	ServerCert string `json:"server_cert"`
	ServerKey  string `json:"server_key"`
	CAFile     string `json:"ca_file"`
}

// SpoolConfig is our "spool" section.
type SpoolConfig struct {
	// Dir is the spool's data directory (default /var/lib/fleet-telemetry/spool).
	Dir string `json:"dir"`
	// MaxBytes bounds the spool (0: unlimited).
	MaxBytes int64 `json:"max_bytes"`
	// MinFreeBytes is the free space the spool leaves on its file system:
	// below it new records are refused (default 128 MiB; 0: none).
	MinFreeBytes *int64 `json:"min_free_bytes"`
}

// defaultMinFreeBytes keeps room on a full disk for the writes that free
// space (cursor updates, trims, Pebble's flushes and compactions).
const defaultMinFreeBytes = 128 << 20

// minFreeBytes is spool.min_free_bytes or its default.
func (c SpoolConfig) minFreeBytes() int64 {
	if c.MinFreeBytes == nil {
		return defaultMinFreeBytes
	}
	return *c.MinFreeBytes
}

//go:embed dev-config.json
var devConfigJSON []byte

// usedKeys are the top-level keys this build acts on.
var usedKeys = map[string]bool{
	"host": true, "port": true, "log_level": true, "json_log_enable": true,
	"namespace": true, "records": true, "tls": true, "use_default_eng_ca": true, "spool": true,
	"transmit_decoded_records": true, "kafka": true, "kinesis": true, "pubsub": true,
	"monitoring": true, "status_port": true, "ack_mode": true, "reliable_ack": true,
	"reliable_ack_sources": true, "rate_limit": true, "vin_allowlist": true,
	"idle_timeout": true, "handshake_timeout": true, "vins_signal_tracking_enabled": true,
	"shutdown_timeout": true, "request_timeout": true,
	"mqtt": true, "redis": true, "nats": true, "zmq": true,
}

// referenceKeys are keys of the reference's format this build does not act
// on yet: they load with a warning, never silently.
var referenceKeys = map[string]bool{
	"airbrake": true, "logger": true,
}

// knownRecordTypes are the record types the protocol defines.
var knownRecordTypes = map[string]bool{"V": true, "alerts": true, "errors": true, "connectivity": true}

// knownDispatchers are the sinks this build has.
var knownDispatchers = map[string]bool{"logger": true, "kafka": true, "kinesis": true, "pubsub": true,
	"mqtt": true, "redis": true, "nats": true, "zmq": true}

// ParseConfig decodes a configuration file's bytes. It returns the config,
// warnings for keys it does not act on, and an error for a file it cannot
// use.
func ParseConfig(data []byte) (*Config, []string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, nil, fmt.Errorf("config: %w", describeJSONError(data, err))
	}
	var warnings []string
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch {
		case usedKeys[k]:
		case referenceKeys[k]:
			warnings = append(warnings, fmt.Sprintf("config key %q is not supported by this version and is ignored", k))
		default:
			warnings = append(warnings, fmt.Sprintf("config key %q is unknown and is ignored", k))
		}
	}
	c := &Config{}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(c); err != nil {
		return nil, nil, fmt.Errorf("config: %w", describeJSONError(data, err))
	}
	warnings = append(warnings, sinkSectionWarnings(raw)...)
	if c.ReliableAck && len(c.ReliableAckSources) == 0 {
		warnings = append(warnings, `config key "reliable_ack" is ignored: name the sink per record type in "reliable_ack_sources"`)
	}
	if m := c.Monitoring; m != nil {
		if m.ProfilingPath != "" && m.ProfilerPort <= 0 {
			warnings = append(warnings, `config key "monitoring.profiling_path" is ignored: /live_profiler is served on monitoring.profiler_port, which is not set`)
		}
		if m.PrometheusMetricsHost == "" {
			m.PrometheusMetricsHost = "127.0.0.1"
		}
		if m.ProfilerHost == "" {
			m.ProfilerHost = "127.0.0.1"
		}
	}
	if _, ok := raw["port"]; !ok {
		c.Port = 443 // the reference's port; 0 given explicitly picks a free one
	}
	if c.Namespace == "" {
		c.Namespace = "tesla_telemetry"
	}
	if c.Spool.Dir == "" {
		c.Spool.Dir = defaultSpoolDir
	}
	return c, warnings, nil
}

// Validate reports every mistake at once, before anything starts: those
// of the file itself (ValidateSyntax) and a vin_allowlist file that cannot
// be read.
func (c *Config) Validate() error {
	errs := c.syntaxErrors()
	if c.allowlistFile() != "" {
		if _, err := c.AllowedVINs(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ValidateSyntax is Validate without reading any file the configuration
// names.
func (c *Config) ValidateSyntax() error { return errors.Join(c.syntaxErrors()...) }

// syntaxErrors are the configuration's own mistakes.
func (c *Config) syntaxErrors() []error {
	var errs []error
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d is out of range", c.Port))
	}
	if c.TLS.ServerCert == "" || c.TLS.ServerKey == "" {
		errs = append(errs, errors.New("tls.server_cert and tls.server_key are required"))
	}
	if len(c.Records) == 0 {
		errs = append(errs, errors.New("records: no record type is routed to any dispatcher"))
	}
	types := make([]string, 0, len(c.Records))
	for t := range c.Records {
		types = append(types, t)
	}
	sort.Strings(types)
	for _, t := range types {
		if !knownRecordTypes[t] {
			errs = append(errs, fmt.Errorf("records: unknown record type %q (known: V, alerts, errors, connectivity)", t))
		}
		for _, d := range c.Records[t] {
			switch {
			case knownDispatchers[d]:
			default:
				errs = append(errs, fmt.Errorf("records.%s: unknown dispatcher %q", t, d))
			}
		}
	}
	switch strings.ToLower(c.LogLevel) {
	case "", "debug", "info", "warn", "warning", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level %q is not one of debug, info, warn, error", c.LogLevel))
	}
	ds := c.Dispatchers()
	if _, ok := ds["kafka"]; ok && len(c.Kafka) == 0 {
		errs = append(errs, errors.New(`records route to "kafka" but there is no "kafka" section`))
	}
	if _, ok := ds["pubsub"]; ok && (c.Pubsub == nil || c.Pubsub.ProjectID == "") {
		errs = append(errs, errors.New(`records route to "pubsub" but "pubsub.gcp_project_id" is not set`))
	}
	errs = append(errs, c.validateSinkSections(ds)...)
	switch c.AckMode {
	case "", "spool", "receive":
	default:
		errs = append(errs, fmt.Errorf(`ack_mode %q is not "spool" or "receive"`, c.AckMode))
	}
	srcTypes := make([]string, 0, len(c.ReliableAckSources))
	for t := range c.ReliableAckSources {
		srcTypes = append(srcTypes, t)
	}
	sort.Strings(srcTypes)
	for _, t := range srcTypes {
		d := c.ReliableAckSources[t]
		switch {
		case t == "connectivity":
			errs = append(errs, errors.New("reliable_ack_sources: connectivity records are made by the server and cannot be acked on delivery"))
		case d == "logger":
			errs = append(errs, fmt.Errorf("reliable_ack_sources.%s: the logger dispatcher cannot confirm delivery", t))
		case !slices.Contains(c.Records[t], d):
			errs = append(errs, fmt.Errorf("reliable_ack_sources.%s: dispatcher %q does not route %s records", t, d, t))
		}
	}
	if rl := c.RateLimit; rl != nil && rl.Enabled && (rl.MessageLimit <= 0 || rl.MessageIntervalTime <= 0) {
		errs = append(errs, fmt.Errorf("rate_limit: enabled needs message_limit > 0 and message_interval_time > 0 (seconds), got %d and %d", rl.MessageLimit, rl.MessageIntervalTime))
	}
	if c.allowlistFile() == "" {
		if _, err := c.AllowedVINs(); err != nil { // an inline list: no file is read
			errs = append(errs, err)
		}
	}
	if n := len(uniq(c.VinsSignalTrackingEnabled)); n > 20 {
		errs = append(errs, fmt.Errorf("vins_signal_tracking_enabled lists %d VINs; at most 20 are allowed", n))
	}
	if _, ok := ds["kafka"]; ok && len(c.Kafka) > 0 {
		if _, err := kafka.ParseConfig(c.Kafka); err != nil {
			errs = append(errs, err)
		}
	}
	if c.StatusPort < 0 || c.StatusPort > 65535 {
		errs = append(errs, fmt.Errorf("status_port %d is out of range", c.StatusPort))
	}
	if c.Spool.MinFreeBytes != nil && *c.Spool.MinFreeBytes < 0 {
		errs = append(errs, fmt.Errorf("spool.min_free_bytes %d is negative", *c.Spool.MinFreeBytes))
	}
	if c.Spool.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("spool.max_bytes %d is negative", c.Spool.MaxBytes))
	}
	return errs
}

// Dispatchers returns each dispatcher with the record types routed to it.
func (c *Config) Dispatchers() map[string][]string {
	out := map[string][]string{}
	for t, ds := range c.Records {
		for _, d := range ds {
			out[d] = append(out[d], t)
		}
	}
	for _, ts := range out {
		sort.Strings(ts)
	}
	return out
}

// RoutedTopics are the record types some dispatcher takes.
func (c *Config) RoutedTopics() []string {
	var ts []string
	for t, ds := range c.Records {
		if len(ds) > 0 {
			ts = append(ts, t)
		}
	}
	sort.Strings(ts)
	return ts
}

// LoadConfig reads and parses a configuration file.
func LoadConfig(path string) (*Config, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	c, warnings, err := ParseConfig(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, warnings, nil
}

// describeJSONError adds the line and column to a JSON syntax or type error.
func describeJSONError(data []byte, err error) error {
	var off int64 = -1
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
	}
	if off < 0 || off > int64(len(data)) {
		return err
	}
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - int64(bytes.LastIndexByte(data[:off], '\n'))
	return fmt.Errorf("line %d column %d: %w", line, col, err)
}

// allowlistFile is the path vin_allowlist names, or "" when it is a list
// (or not set).
func (c *Config) allowlistFile() string {
	var path string
	if json.Unmarshal(c.VINAllowlist, &path) != nil {
		return ""
	}
	return path
}

// AllowedVINs returns the VIN allowlist (nil: everyone is allowed). A string
// names a file with one VIN per line ('#' starts a comment).
func (c *Config) AllowedVINs() (map[string]bool, error) {
	if len(c.VINAllowlist) == 0 || string(c.VINAllowlist) == "null" {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(c.VINAllowlist, &list); err != nil {
		var path string
		if err := json.Unmarshal(c.VINAllowlist, &path); err != nil {
			return nil, errors.New("vin_allowlist must be a list of VINs or a file path")
		}
		data, err := readAllowlistFile(path)
		if err != nil {
			return nil, fmt.Errorf("vin_allowlist: %w", err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if i := strings.IndexByte(line, '#'); i >= 0 {
				line = line[:i]
			}
			if line = strings.TrimSpace(line); line != "" {
				list = append(list, line)
			}
		}
	}
	return uniq(list), nil
}

func uniq(list []string) map[string]bool {
	m := make(map[string]bool, len(list))
	for _, v := range list {
		m[v] = true
	}
	return m
}

// maxAllowlistBytes bounds the allowlist file (tens of millions of VINs).
const maxAllowlistBytes = 256 << 20

// readAllowlistFile reads a regular file of bounded size: a device or a
// FIFO named by mistake must not hang or exhaust the daemon at start.
func readAllowlistFile(path string) ([]byte, error) {
	// Checked before opening: opening a FIFO blocks until a writer comes.
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st.Size() > maxAllowlistBytes {
		return nil, fmt.Errorf("%s is %d bytes; at most %d", path, st.Size(), maxAllowlistBytes)
	}
	return io.ReadAll(io.LimitReader(f, maxAllowlistBytes))
}

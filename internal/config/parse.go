package config

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

// Defaults of keys a file leaves out.
const (
	// DefaultPort is the reference's vehicle port (port absent; 0 given
	// explicitly picks a free one).
	DefaultPort = 443
	// DefaultNamespace prefixes topic and stream names.
	DefaultNamespace = "tesla_telemetry"
	// DefaultSpoolDir is the spool's directory.
	DefaultSpoolDir = "/var/lib/fleet-telemetry/spool"
	// DefaultMinFreeBytes keeps room on a full disk for the writes that
	// free space (cursor updates, trims, Pebble's flushes and compactions).
	DefaultMinFreeBytes = 128 << 20
	// DefaultMonitoringHost is where the metrics and profiler ports bind.
	DefaultMonitoringHost = "127.0.0.1"
	// DefaultShutdownTimeout bounds the graceful part of a stop.
	DefaultShutdownTimeout = 25 * time.Second
)

//go:embed dev-config.json
var devConfigJSON []byte

// Dev parses the embedded dev config: 127.0.0.1:4443, certificates in
// ./var/dev-certs, spool in ./var/spool, every record type to stdout.
func Dev() (*Config, []string, error) { return Parse(devConfigJSON) }

// Load reads and parses a configuration file.
func Load(path string) (*Config, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	c, warnings, err := Parse(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, warnings, nil
}

// Parse decodes a configuration file's bytes and fills in the defaults. It
// returns the config, warnings for keys it does not act on (at every
// depth), and an error for a file it cannot use. It reads no environment
// variable and no file (see ApplyEnv and Validate).
func Parse(data []byte) (*Config, []string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, nil, fmt.Errorf("config: %w", describeJSONError(data, err))
	}
	c := &Config{}
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(c); err != nil {
		return nil, nil, fmt.Errorf("config: %w", describeJSONError(data, err))
	}
	warnings := unknownKeys(raw)
	if c.ReliableAck && len(c.ReliableAckSources) == 0 {
		warnings = append(warnings, `config key "reliable_ack" is ignored: name the sink per record type in "reliable_ack_sources"`)
	}
	if m := c.Monitoring; m != nil {
		if m.ProfilingPath != "" && m.ProfilerPort <= 0 {
			warnings = append(warnings, `config key "monitoring.profiling_path" is ignored: /live_profiler is served on monitoring.profiler_port, which is not set`)
		}
		if m.PrometheusMetricsHost == "" {
			m.PrometheusMetricsHost = DefaultMonitoringHost
		}
		if m.ProfilerHost == "" {
			m.ProfilerHost = DefaultMonitoringHost
		}
	}
	if !hasKeyFold(raw, "port") {
		c.Port = DefaultPort
	}
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	if c.Spool.Dir == "" {
		c.Spool.Dir = DefaultSpoolDir
	}
	return c, warnings, nil
}

// Marshal writes c in the file format (indented); Parse reads it back to
// the same settings. Keys at their zero value are left out, except port.
func Marshal(c *Config) ([]byte, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return append(b, '\n'), nil
}

// ShutdownWithin is shutdown_timeout when positive, else
// DefaultShutdownTimeout.
func (c *Config) ShutdownWithin() time.Duration {
	if c.ShutdownTimeout != nil && c.ShutdownTimeout.Duration > 0 {
		return c.ShutdownTimeout.Duration
	}
	return DefaultShutdownTimeout
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

package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder/kafka"
)

// knownRecordTypes are the record types the protocol defines.
var knownRecordTypes = map[string]bool{"V": true, "alerts": true, "errors": true, "connectivity": true}

// recordTypeList names them for messages.
const recordTypeList = "V, alerts, errors, connectivity"

// RecordTypes are the record types the protocol defines.
func RecordTypes() []string { return []string{"V", "alerts", "errors", "connectivity"} }

// knownDispatchers are the sinks this build has.
var knownDispatchers = map[string]bool{"logger": true, "kafka": true, "kinesis": true, "pubsub": true,
	"mqtt": true, "redis": true, "nats": true, "zmq": true}

// Validate reports every mistake at once, before anything starts: those
// of the file itself (ValidateSyntax), a vin_allowlist file that cannot be
// read and the redis.tls files.
func (c *Config) Validate() error {
	errs := c.syntaxErrors(true)
	if c.allowlistFile() != "" {
		if _, err := c.AllowedVINs(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ValidateSyntax is Validate without reading any file the configuration
// names.
func (c *Config) ValidateSyntax() error { return errors.Join(c.syntaxErrors(false)...) }

// syntaxErrors are the configuration's own mistakes; with files, those of
// the files a sink section names too.
func (c *Config) syntaxErrors(files bool) []error {
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
			errs = append(errs, fmt.Errorf("records: unknown record type %q (known: %s)", t, recordTypeList))
		}
		for _, d := range c.Records[t] {
			if !knownDispatchers[d] {
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
	if _, ok := ds["pubsub"]; ok {
		if err := c.Pubsub.Check(); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, c.sinkSectionErrors(ds, files)...)
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

// sinkSectionErrors checks the section of every routed sink that has one;
// with files, the files a section names are read too (redis.tls).
func (c *Config) sinkSectionErrors(ds map[string][]string, files bool) []error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if _, ok := ds["mqtt"]; ok {
		add(c.MQTT.Check())
	}
	if _, ok := ds["redis"]; ok {
		if files {
			add(c.Redis.Check())
		} else {
			add(c.Redis.checkSettings())
		}
	}
	if _, ok := ds["nats"]; ok {
		add(c.NATS.Check())
	}
	if _, ok := ds["zmq"]; ok {
		add(c.ZMQ.Check())
	}
	if _, ok := ds["kinesis"]; ok {
		add(c.Kinesis.Check())
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

// readAllowlistFile reads the vin_allowlist file.
func readAllowlistFile(path string) ([]byte, error) { return readRegularFile(path, maxAllowlistBytes) }

// readRegularFile reads a regular file of at most max bytes: a device or
// a FIFO named by mistake must not hang or exhaust the daemon at start (or
// check-config).
func readRegularFile(path string, max int64) ([]byte, error) {
	// Checked before opening: opening a FIFO blocks until a writer comes.
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%s is %d bytes; at most %d", path, st.Size(), max)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, max))
}

// AllowlistOf is a vin_allowlist of vins, for building a Config in code.
func AllowlistOf(vins ...string) json.RawMessage {
	b, _ := json.Marshal(append([]string{}, vins...)) // a list of strings always marshals
	return b
}

// AllowlistFile is a vin_allowlist naming a file of VINs, for building a
// Config in code.
func AllowlistFile(path string) json.RawMessage {
	b, _ := json.Marshal(path) // a string always marshals
	return b
}

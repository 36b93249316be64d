package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"
)

// sinkSections are the sink sections with a config struct of their own
// (sink_*.go): a key inside one that the struct does not have is loaded
// with a warning naming it, never silently.
var sinkSections = map[string]any{
	"mqtt":  MQTTConfig{},
	"redis": RedisConfig{},
	"nats":  NATSConfig{},
	"zmq":   ZMQConfig{},
}

// sinkMetricHelp is the HELP text of the metrics of the sinks in sink_*.go
// (the reference's names, labelled by record_type).
var sinkMetricHelp = map[string]string{
	"mqtt_publish_total":             "MQTT publishes the broker confirmed (QoS 0: written to the connection), by record type.",
	"mqtt_publish_total_bytes":       "JSON payload bytes of the publishes counted in mqtt_publish_total, by record type.",
	"mqtt_err":                       "MQTT publishes that failed, timed out or were refused (a value JSON cannot hold, a topic MQTT forbids), by record type.",
	"redis_publish_total":            "Redis PUBLISH commands Redis answered, by record type.",
	"redis_publish_total_bytes":      "Payload bytes of the publishes counted in redis_publish_total, by record type.",
	"redis_err":                      "Redis commands of the sink that failed (the batch is retried), by record type.",
	"fleet_redis_stream_added_total": "Records the Redis sink appended to a stream (stream mode).",
	"nats_produce_total":             "Records the NATS server confirmed (a flush, or a JetStream PubAck), by record type.",
	"nats_produce_total_bytes":       "Payload bytes of the records counted in nats_produce_total, by record type.",
	"nats_err":                       "NATS publishes, flushes or PubAck waits that failed (the batch is retried), and records refused.",
	"zmq_publish_total":              "Records the ZMQ PUB socket queued (best effort: PUB drops for absent or slow subscribers), by record type.",
	"zmq_publish_total_bytes":        "Bytes (topic and payload frames) of the records counted in zmq_publish_total, by record type.",
	"zmq_err":                        "Records the ZMQ socket failed to queue (the batch is retried), by record type.",
}

// validateSinkSections checks the section of every routed sink that has
// one (sink_*.go).
func (c *Config) validateSinkSections(ds map[string][]string) []error {
	var errs []error
	if _, ok := ds["mqtt"]; ok {
		if _, err := mqttOptions(c.MQTT); err != nil {
			errs = append(errs, err)
		}
	}
	if _, ok := ds["redis"]; ok {
		if _, err := redisOptions(c.Redis, os.Getenv); err != nil {
			errs = append(errs, err)
		}
	}
	if _, ok := ds["nats"]; ok {
		if _, err := natsOptions(c.NATS); err != nil {
			errs = append(errs, err)
		}
	}
	if _, ok := ds["zmq"]; ok {
		if _, err := zmqOptions(c.ZMQ); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// sinkSectionWarnings names the keys of the sink sections that their
// struct does not have.
func sinkSectionWarnings(raw map[string]json.RawMessage) []string {
	var warnings []string
	names := make([]string, 0, len(sinkSections))
	for n := range sinkSections {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		section, ok := raw[name]
		if !ok {
			continue
		}
		warnings = append(warnings, unknownKeys(name, section, reflect.TypeOf(sinkSections[name]))...)
	}
	return warnings
}

// unknownKeys warns about the keys of the JSON object raw (at path) that
// the struct type t has no field for, and of the objects nested in it.
func unknownKeys(path string, raw json.RawMessage, t reflect.Type) []string {
	var keys map[string]json.RawMessage
	if json.Unmarshal(raw, &keys) != nil {
		return nil // not an object: decoding the config reports it
	}
	fields := jsonFields(t)
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	var warnings []string
	for _, k := range names {
		ft, ok := fields[k]
		if !ok {
			warnings = append(warnings, fmt.Sprintf("config key %q is unknown and is ignored", path+"."+k))
			continue
		}
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			warnings = append(warnings, unknownKeys(path+"."+k, keys[k], ft)...)
		}
	}
	return warnings
}

// jsonFields are the JSON names of a struct type's fields, with their
// types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			fields[name] = t.Field(i).Type
		}
	}
	return fields
}

// maxSinkFileBytes bounds a file a sink section names (a CA bundle, a
// certificate, a key).
const maxSinkFileBytes = 4 << 20

// readSinkFile reads a small regular file: a device or a FIFO named by
// mistake must not hang or exhaust the daemon (or check-config).
func readSinkFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Size() > maxSinkFileBytes {
		return nil, fmt.Errorf("%s is %d bytes; at most %d", path, st.Size(), maxSinkFileBytes)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxSinkFileBytes))
}

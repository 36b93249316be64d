package forwarder

import (
	"sync"

	"github.com/VictoriaMetrics/metrics"

	"github.com/fleet-telemetry/fleet-telemetry/proto/record"
)

// TypeCounters are a sink's counters per record type under the reference
// server's metric names, labelled record_type. The four types vehicles
// send exist from the start (at 0), others on first use.
type TypeCounters struct {
	published, bytes, errs string

	mu sync.Mutex
	by map[string]*SinkCounters
}

// SinkCounters are one record type's counters: records published, their
// bytes, and failed publishes (nil when the sink keeps no such counter per
// type).
type SinkCounters struct {
	Published, Bytes, Errs *metrics.Counter
}

// NewTypeCounters names the counters, e.g. "mqtt_publish_total",
// "mqtt_publish_total_bytes" and "mqtt_err" (errs "" for none).
func NewTypeCounters(published, bytes, errs string) *TypeCounters {
	t := &TypeCounters{published: published, bytes: bytes, errs: errs, by: map[string]*SinkCounters{}}
	for _, rt := range []string{record.TopicV, record.TopicAlerts, record.TopicErrors, record.TopicConnectivity} {
		t.Of(rt)
	}
	return t
}

// Of returns recordType's counters.
func (t *TypeCounters) Of(recordType string) *SinkCounters {
	t.mu.Lock()
	defer t.mu.Unlock()
	if c := t.by[recordType]; c != nil {
		return c
	}
	l := `{record_type="` + recordType + `"}`
	c := &SinkCounters{
		Published: metrics.GetOrCreateCounter(t.published + l),
		Bytes:     metrics.GetOrCreateCounter(t.bytes + l),
	}
	if t.errs != "" {
		c.Errs = metrics.GetOrCreateCounter(t.errs + l)
	}
	t.by[recordType] = c
	return c
}

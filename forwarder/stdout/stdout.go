// Package stdout is the "logger" sink: one JSON object per line per record,
// {"topic", "vin", "txid", "received_at_ms", "record"}, where record is the
// reference's decoded JSON form (protojson, enum names, unpopulated fields).
package stdout

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"

	"github.com/VictoriaMetrics/metrics"

	"github.com/fleet-telemetry/fleet-telemetry/proto/record"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// Options configure the sink.
type Options struct {
	// Out receives the lines (default: the process's stdout is the caller's
	// choice; nil is an error).
	Out io.Writer
	// Logger gets a line for each record that cannot be decoded.
	Logger *slog.Logger
}

// Sink writes records as JSON lines.
type Sink struct {
	w   *bufio.Writer
	log *slog.Logger
}

var undecodable = metrics.GetOrCreateCounter(`fleet_forwarder_undecodable_total{forwarder="logger"}`)

// New returns a Sink writing to o.Out.
func New(o Options) (*Sink, error) {
	if o.Out == nil {
		return nil, fmt.Errorf("stdout sink: no output")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Sink{w: bufio.NewWriterSize(o.Out, 64<<10), log: o.Logger}, nil
}

// Line is one output line.
type Line struct {
	Topic        string          `json:"topic"`
	VIN          string          `json:"vin"`
	TxID         string          `json:"txid"`
	ReceivedAtMs int64           `json:"received_at_ms"`
	Record       json.RawMessage `json:"record"`
}

// Send implements forwarder.Sink. The batch is confirmed once it is written
// and flushed to Out.
func (s *Sink) Send(_ context.Context, batch []spool.Record) error {
	for i := range batch {
		r := &batch[i]
		msg, err := record.Transform(string(r.Topic), r.VIN, r.Payload)
		if err != nil {
			// The record was validated before it was acked; this means a
			// bug or a damaged spool. Skipping beats blocking the sink.
			undecodable.Inc()
			s.log.Error("record cannot be decoded; skipped", "seq", r.Seq, "vin", r.VIN, "topic", string(r.Topic), "err", err)
			continue
		}
		js, err := record.MarshalJSON(msg)
		if err != nil {
			undecodable.Inc()
			s.log.Error("record cannot be rendered as JSON; skipped", "seq", r.Seq, "vin", r.VIN, "err", err)
			continue
		}
		line, err := json.Marshal(Line{Topic: string(r.Topic), VIN: r.VIN, TxID: string(r.TxID), ReceivedAtMs: r.ReceivedAtMs, Record: js})
		if err != nil {
			return fmt.Errorf("stdout sink: encode seq %d: %w", r.Seq, err)
		}
		s.w.Write(line)
		s.w.WriteByte('\n')
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("stdout sink: write: %w", err)
	}
	return nil
}

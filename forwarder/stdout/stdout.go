// Package stdout is the "logger" sink: one JSON object per line per record,
// {"topic", "vin", "txid", "received_at_ms", "record"}, where record is the
// reference's decoded JSON form (protojson, enum names, unpopulated fields).
package stdout

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/VictoriaMetrics/metrics"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
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

// Sink writes records as JSON lines. Send may be called from several
// goroutines (the forwarder's lanes): one batch's lines are written at a
// time.
type Sink struct {
	mu  sync.Mutex // the fields below
	out io.Writer
	log *slog.Logger
	// js is the fast path's buffer for one record's JSON.
	js []byte
	// buf holds one batch's lines; it is written to out with one Write.
	// ends[i] is where batch record i's line ends in buf (its start when
	// it was skipped).
	buf  []byte
	ends []int
	// tail is the rest of a line that a failed write cut short; the next
	// Send writes it first so that the output stays one JSON object per
	// line.
	tail []byte
}

var undecodable = metrics.GetOrCreateCounter(`fleet_forwarder_undecodable_total{forwarder="logger"}`)

// jsonValues renders records as the reference's JSON (the namespace plays
// no part in a value).
var jsonValues = forwarder.Encoder{JSON: true}

// New returns a Sink writing to o.Out.
func New(o Options) (*Sink, error) {
	if o.Out == nil {
		return nil, fmt.Errorf("stdout sink: no output")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Sink{out: o.Out, log: o.Logger}, nil
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
// to Out. After a failed write the records whose lines were written whole
// are confirmed, the others reported in a *forwarder.BatchError; the next
// Send first completes the line the failure cut short (its record is then
// written twice), so that the output stays one JSON object per line.
func (s *Sink) Send(_ context.Context, batch []spool.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tail) > 0 {
		n, err := s.out.Write(s.tail)
		if err == nil && n < len(s.tail) {
			err = io.ErrShortWrite
		}
		s.tail = s.tail[n:]
		if err != nil {
			return fmt.Errorf("stdout sink: write: %w", err)
		}
	}
	s.buf, s.ends = s.buf[:0], s.ends[:0]
	for i := range batch {
		s.ends = append(s.ends, len(s.buf))
		r := &batch[i]
		// The record's JSON is what a sink with transmit_decoded_records
		// sends: forwarder.Encoder's.
		js, _, err := jsonValues.AppendValue(s.js[:0], r)
		if err != nil {
			// The record was validated before it was acked; this means a
			// bug or a damaged spool. Skipping beats blocking the sink.
			undecodable.Inc()
			s.log.Error("record cannot be decoded; skipped", "seq", r.Seq, "vin", r.VIN, "topic", string(r.Topic), "err", err)
			continue
		}
		s.js = js
		line, err := json.Marshal(Line{Topic: string(r.Topic), VIN: r.VIN, TxID: string(r.TxID), ReceivedAtMs: r.ReceivedAtMs, Record: js})
		if err != nil {
			return fmt.Errorf("stdout sink: encode seq %d: %w", r.Seq, err)
		}
		s.buf = append(s.buf, line...)
		s.buf = append(s.buf, '\n')
		s.ends[i] = len(s.buf)
	}
	if len(s.buf) == 0 {
		return nil
	}
	n, err := s.out.Write(s.buf)
	if err == nil && n < len(s.buf) {
		err = io.ErrShortWrite
	}
	if err != nil {
		if n > 0 && n < len(s.buf) && s.buf[n-1] != '\n' {
			end := n + bytes.IndexByte(s.buf[n:], '\n') + 1
			s.tail = append(s.tail[:0], s.buf[n:end]...)
		}
		err = fmt.Errorf("stdout sink: write: %w", err)
		be := &forwarder.BatchError{}
		for i, end := range s.ends {
			if end > n {
				be.Failed = append(be.Failed, forwarder.RecordError{Index: i, Err: err})
			}
		}
		return be
	}
	return nil
}

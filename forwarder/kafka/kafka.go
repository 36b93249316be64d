// Package kafka is the "kafka" sink: it produces each record to
// "<namespace>_<record type>" with the reference server's key (the VIN),
// value and headers, using franz-go (pure Go, no librdkafka). The producer
// is idempotent and waits for every in-sync replica by default, and Send
// returns nil only once the broker acknowledged every record of the batch.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/VictoriaMetrics/metrics"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

var (
	producedTotal     = metrics.GetOrCreateCounter("fleet_kafka_produced_total")
	produceErrorTotal = metrics.GetOrCreateCounter("fleet_kafka_produce_errors_total")
	undecodableTotal  = metrics.GetOrCreateCounter(`fleet_forwarder_undecodable_total{forwarder="kafka"}`)
)

// Sink produces spool records to Kafka. Send is meant to be driven by one
// forwarder; Close may be called once, after the last Send returned.
type Sink struct {
	client *kgo.Client
	enc    forwarder.Encoder
	log    *slog.Logger
}

// New connects lazily to cfg's brokers (no network I/O happens here) and
// returns a sink encoding records with enc.
func New(cfg Config, enc forwarder.Encoder, log *slog.Logger) (*Sink, error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("sink", "kafka")
	opts, err := cfg.Opts()
	if err != nil {
		return nil, err
	}
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	opts = append(opts, kgo.WithLogger(slogAdapter{log}))
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: new client: %w", err)
	}
	return &Sink{client: client, enc: enc, log: log}, nil
}

// Send implements forwarder.Sink: it produces every record of the batch,
// in order (per VIN, records keep their spool order within a partition),
// and waits until each is acknowledged. It returns nil only when every
// record was; otherwise an error describing the first failure, and the
// forwarder sends the whole batch again (records may then be duplicated,
// never lost). Records that cannot be decoded are skipped and counted, as
// in every sink.
//
// When ctx ends first, Send returns ctx's error without waiting: records
// still buffered are delivered or failed by the client later, and the
// forwarder's cursor does not move past them.
func (s *Sink) Send(ctx context.Context, batch []spool.Record) error {
	// The records may outlive this call (see below), so every Send hands
	// the client fresh ones.
	recs := make([]kgo.Record, 0, len(batch))
	for i := range batch {
		r := &batch[i]
		m, err := s.enc.Encode(r)
		if err != nil {
			undecodableTotal.Inc()
			s.log.Error("record cannot be encoded; skipped", "seq", r.Seq, "vin", r.VIN, "topic", string(r.Topic), "err", err)
			continue
		}
		headers := make([]kgo.RecordHeader, len(m.Headers))
		for j, h := range m.Headers {
			headers[j] = kgo.RecordHeader{Key: h.Key, Value: []byte(h.Value)}
		}
		recs = append(recs, kgo.Record{Topic: m.Topic, Key: []byte(m.Key), Value: m.Value, Headers: headers})
	}
	if len(recs) == 0 {
		return nil
	}
	w := newWaiter(len(recs))
	for i := range recs {
		// Produce blocks only while the client's buffer is full; ctx ends
		// that wait (the promise then gets ctx's error).
		s.client.Produce(ctx, &recs[i], w.promise)
	}
	// The forwarder waits for the whole batch anyway: end the client's
	// linger (10 ms by default) rather than sit it out on every batch.
	// Flush returns once nothing is buffered, or when ctx ends.
	_ = s.client.Flush(ctx)
	// ProduceSync would also wait for records the client cannot fail yet
	// (in flight to a broker that went away); waiting here on ctx as well
	// keeps a shutdown bounded.
	select {
	case <-w.done:
	case <-ctx.Done():
		acked, failed := w.counts()
		if acked > 0 {
			producedTotal.Add(acked)
		}
		return fmt.Errorf("kafka: %d of %d records unconfirmed (%d acked, %d failed) when the send was abandoned: %w",
			len(recs)-acked, len(recs), acked, failed, ctx.Err())
	}
	producedTotal.Add(w.acked)
	if w.failed > 0 {
		produceErrorTotal.Add(w.failed)
		if errors.Is(w.firstErr, kerr.UnknownTopicID) {
			// The topic was deleted and created again: it has a new ID the
			// client will not learn on its own. Forget it so the retry
			// looks it up afresh instead of failing for ever.
			s.client.PurgeTopicsFromClient(w.firstRec.Topic)
			s.log.Warn("kafka topic changed identity; refreshing it", "topic", w.firstRec.Topic)
		}
		return fmt.Errorf("kafka: %d of %d records not acknowledged; first: topic %s key %s: %w",
			w.failed, len(recs), w.firstRec.Topic, w.firstRec.Key, w.firstErr)
	}
	return nil
}

// Flush waits until every buffered record is delivered or failed, or ctx
// ends.
func (s *Sink) Flush(ctx context.Context) error {
	if err := s.client.Flush(ctx); err != nil {
		return fmt.Errorf("kafka: flush: %w", err)
	}
	return nil
}

// Close stops the client: records still buffered (only possible after a
// Send abandoned by its context) are failed, connections and goroutines
// end. It returns once they did.
func (s *Sink) Close() error {
	s.client.Close()
	return nil
}

// waiter collects the promises of one Send.
type waiter struct {
	mu       sync.Mutex
	pending  int
	acked    int
	failed   int
	firstErr error
	firstRec *kgo.Record
	done     chan struct{}
}

func newWaiter(n int) *waiter {
	return &waiter{pending: n, done: make(chan struct{})}
}

// promise is the kgo callback for each record; franz-go calls promises
// serially, and the last one closes done.
func (w *waiter) promise(r *kgo.Record, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.failed++
		if w.firstErr == nil {
			w.firstErr, w.firstRec = err, r
		}
	} else {
		w.acked++
	}
	w.pending--
	if w.pending == 0 {
		close(w.done)
	}
}

func (w *waiter) counts() (acked, failed int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.acked, w.failed
}

// slogAdapter routes franz-go's log lines to slog.
type slogAdapter struct{ l *slog.Logger }

// Level reports Warn: franz-go's info lines (metadata refreshes, every
// connection) are too chatty for a daemon log; warnings include failed
// connections and produce errors.
func (a slogAdapter) Level() kgo.LogLevel {
	ctx := context.Background()
	switch {
	case a.l.Enabled(ctx, slog.LevelDebug):
		return kgo.LogLevelInfo
	case a.l.Enabled(ctx, slog.LevelWarn):
		return kgo.LogLevelWarn
	case a.l.Enabled(ctx, slog.LevelError):
		return kgo.LogLevelError
	}
	return kgo.LogLevelNone
}

// Log implements kgo.Logger.
func (a slogAdapter) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	var l slog.Level
	switch level {
	case kgo.LogLevelError:
		l = slog.LevelError
	case kgo.LogLevelWarn:
		l = slog.LevelWarn
	case kgo.LogLevelInfo:
		l = slog.LevelInfo
	default:
		l = slog.LevelDebug
	}
	a.l.Log(context.Background(), l, "kafka client: "+msg, keyvals...)
}

// Package kafka is the "kafka" sink: it produces each record to
// "<namespace>_<record type>" with the reference server's key (the VIN),
// value and headers, using franz-go (pure Go, no librdkafka). The producer
// is idempotent and waits for every in-sync replica by default, and Send
// reports each record the broker did not acknowledge.
package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
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

// Sink produces spool records to Kafka. Send may be called from several
// goroutines (the forwarder's lanes); Close may be called once, after the
// last Send returned.
type Sink struct {
	client *kgo.Client
	enc    forwarder.Encoder
	log    *slog.Logger
	topics forwarder.TopicNames
	// spares is the memory of batches whose every record the client has
	// finished with; a new batch reuses one.
	sparesMu sync.Mutex
	spares   []batchMemory
}

// batchMemory is what encodeBatch builds a batch in; idx[i] is the batch
// index of recs[i] (records that cannot be encoded are left out).
type batchMemory struct {
	recs []kgo.Record
	hdrs []kgo.RecordHeader
	buf  []byte
	idx  []int
}

// maxSpares bounds the batch memories kept (one per lane in use).
const maxSpares = 8

// maxSpareBytes caps the value buffer kept between batches.
const maxSpareBytes = 16 << 20

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

// headersPerRecord is the reference's header count (forwarder.Message).
const headersPerRecord = 7

var versionHeader = []byte(forwarder.RecordVersion)

// encodeBatch builds the batch's Kafka records in the records, their
// headers and one buffer holding every value, key and header value
// (forwarder.Encoder.Encode would build ~15 strings and slices per record):
// the spare memory of an earlier batch when it is big enough, else three
// new allocations. Headers and their order are Encode's.
func (s *Sink) encodeBatch(batch []spool.Record) batchMemory {
	// Values, then each record's key and header values.
	size := forwarder.ValuesSize(batch)
	for i := range batch {
		r := &batch[i]
		size += len(r.VIN) + 2*binary.MaxVarintLen64 + 2*20 + len(r.TxID) + len(r.Topic) + len(r.ClientVersion)
	}
	var m batchMemory
	s.sparesMu.Lock()
	if n := len(s.spares); n > 0 {
		m = s.spares[n-1]
		s.spares = s.spares[:n-1]
	}
	s.sparesMu.Unlock()
	if cap(m.idx) < len(batch) {
		m.idx = make([]int, 0, len(batch))
	}
	if cap(m.recs) < len(batch) {
		m.recs = make([]kgo.Record, 0, len(batch))
	}
	if cap(m.hdrs) < headersPerRecord*len(batch) {
		m.hdrs = make([]kgo.RecordHeader, 0, headersPerRecord*len(batch))
	}
	if cap(m.buf) < size {
		m.buf = make([]byte, 0, size)
	}
	recs, hdrs, buf, idx := m.recs[:0], m.hdrs[:0], m.buf[:0], m.idx[:0]
	// field appends b to buf and returns the bytes it occupies there. An
	// append that outgrows buf moves on to a bigger array; slices taken
	// before keep the old one.
	field := func(b []byte) []byte {
		start := len(buf)
		buf = append(buf, b...)
		return buf[start:len(buf):len(buf)]
	}
	text := func(v string) []byte {
		start := len(buf)
		buf = append(buf, v...)
		return buf[start:len(buf):len(buf)]
	}
	number := func(n int64) []byte {
		start := len(buf)
		buf = strconv.AppendInt(buf, n, 10)
		return buf[start:len(buf):len(buf)]
	}
	for i := range batch {
		r := &batch[i]
		value, createdMs, err := s.enc.NextValue(&buf, r)
		if err != nil {
			undecodableTotal.Inc()
			s.log.Error("record cannot be encoded; skipped", "seq", r.Seq, "vin", r.VIN, "topic", string(r.Topic), "err", err)
			continue
		}
		vin := text(r.VIN)
		txtype := field(r.Topic)
		h := len(hdrs)
		hdrs = append(hdrs,
			kgo.RecordHeader{Key: "vin", Value: vin},
			kgo.RecordHeader{Key: "receivedat", Value: number(r.ReceivedAtMs)},
			kgo.RecordHeader{Key: "timestamp", Value: number(createdMs)},
			kgo.RecordHeader{Key: "txid", Value: field(r.TxID)},
			kgo.RecordHeader{Key: "txtype", Value: txtype},
			kgo.RecordHeader{Key: "version", Value: versionHeader},
			kgo.RecordHeader{Key: "device_client_version", Value: text(r.ClientVersion)},
		)
		recs = append(recs, kgo.Record{Topic: s.topics.Of(s.enc, r.Topic), Key: vin, Value: value, Headers: hdrs[h:len(hdrs):len(hdrs)]})
		idx = append(idx, i)
	}
	return batchMemory{recs: recs, hdrs: hdrs, buf: buf, idx: idx}
}

// keepSpare keeps m for the next batch. Only for a batch whose every
// promise has fired: franz-go no longer holds its records then.
func (s *Sink) keepSpare(m batchMemory) {
	if cap(m.buf) > maxSpareBytes {
		return
	}
	s.sparesMu.Lock()
	if len(s.spares) < maxSpares {
		s.spares = append(s.spares, m)
	}
	s.sparesMu.Unlock()
}

// Send implements forwarder.Sink: it produces every record of the batch,
// in order (per VIN, records keep their spool order within a partition:
// when the broker fails one, franz-go fails every record after it in the
// partition too), and waits until each is acknowledged. It returns nil
// when every record was; otherwise a *forwarder.BatchError naming each
// record that was not, and the forwarder sends only those again. A record
// the broker refuses for its size or content (MESSAGE_TOO_LARGE,
// INVALID_RECORD, ...) is marked permanent; a missing topic, a broker
// down and every other error are retried. Records that cannot be decoded
// are skipped and counted, as in every sink.
//
// When ctx ends first, Send returns ctx's error without waiting: records
// still buffered are delivered or failed by the client later, and the
// forwarder's cursor does not move past them.
func (s *Sink) Send(ctx context.Context, batch []spool.Record) error {
	m := s.encodeBatch(batch)
	recs := m.recs
	if len(recs) == 0 {
		s.keepSpare(m)
		return nil
	}
	w := newWaiter(len(recs))
	promise := w.promise // one method value per batch (each evaluation allocates)
	for i := range recs {
		// Produce blocks only while the client's buffer is full; ctx ends
		// that wait (the promise then gets ctx's error).
		s.client.Produce(ctx, &recs[i], promise)
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
		// Every promise fired: the batch's memory is free again. (Not
		// after an abandoned send, whose records the client may still
		// hold and send.)
		s.keepSpare(m)
	case <-ctx.Done():
		acked, failed := w.counts()
		if acked > 0 {
			producedTotal.Add(acked)
		}
		return fmt.Errorf("kafka: %d of %d records unconfirmed (%d acked, %d failed) when the send was abandoned: %w",
			len(recs)-acked, len(recs), acked, failed, ctx.Err())
	}
	producedTotal.Add(w.acked)
	if w.failed == 0 {
		return nil
	}
	produceErrorTotal.Add(w.failed)
	if errors.Is(w.firstErr, kerr.UnknownTopicID) {
		// The topic was deleted and created again: it has a new ID the
		// client will not learn on its own. Forget it so the retry looks
		// it up afresh instead of failing for ever.
		s.client.PurgeTopicsFromClient(w.firstRec.Topic)
		s.log.Warn("kafka topic changed identity; refreshing it", "topic", w.firstRec.Topic)
	}
	be := &forwarder.BatchError{Failed: make([]forwarder.RecordError, 0, w.failed)}
	for i := range recs {
		if err, ok := w.errs[&recs[i]]; ok {
			be.Failed = append(be.Failed, forwarder.RecordError{Index: m.idx[i],
				Err: classify(fmt.Errorf("kafka: topic %s key %s: %w", recs[i].Topic, recs[i].Key, err))})
		}
	}
	return be
}

// classify marks the errors that refuse a record for good: the broker
// judged the record itself (its size, its content) and would judge it the
// same way again until its configuration changes.
func classify(err error) error {
	for _, p := range []struct {
		err    error
		reason string
	}{
		{kerr.MessageTooLarge, "message_too_large"},
		{kerr.RecordListTooLarge, "message_too_large"},
		{kerr.InvalidRecord, "invalid_record"},
		{kerr.InvalidTimestamp, "invalid_timestamp"},
		{kerr.PolicyViolation, "policy_violation"},
	} {
		if errors.Is(err, p.err) {
			return forwarder.Permanent(p.reason, err)
		}
	}
	return err
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
	errs     map[*kgo.Record]error // the failed records' errors
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
			w.errs = map[*kgo.Record]error{}
		}
		w.errs[r] = err
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

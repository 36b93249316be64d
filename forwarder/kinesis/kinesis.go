// Package kinesis is the "kinesis" sink: every record goes to an Amazon
// Kinesis Data Streams stream with PutRecords, byte-compatible with the
// reference server (data = the dispatched protobuf or its JSON form, the
// same bytes as Kafka's value; partition key = the VIN; stream name from
// Options.Streams or <namespace>_<record type>).
package kinesis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/VictoriaMetrics/metrics"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	awskinesis "github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// Limits of one PutRecords call (Kinesis Data Streams quotas).
const (
	// MaxCallRecords is the most records one PutRecords call may carry.
	MaxCallRecords = 500
	// MaxCallBytes bounds one PutRecords call: the sum of every record's
	// data and partition key bytes.
	MaxCallBytes = 5 << 20
)

// DefaultRegion is used when neither Options.Region nor the AWS
// environment or config files name one.
const DefaultRegion = "us-east-1"

// Options configure a Sink.
type Options struct {
	// Namespace makes the default stream name <Namespace>_<record type>
	// (default: Encoder.Namespace).
	Namespace string
	// Streams maps a record type to its stream name (the config's
	// "kinesis.streams" with the environment's KINESIS_STREAM_<TYPE>
	// overrides applied).
	Streams map[string]string
	// OverrideHost replaces the AWS endpoint, e.g. "http://127.0.0.1:4567"
	// for a local Kinesis API. Without a scheme, https is assumed.
	OverrideHost string
	// MaxRetries is the AWS client's own retries per call (the config's
	// "max_retries"): 0 means one attempt and no retry; < 0 keeps the
	// SDK's default.
	MaxRetries int
	// Region is the AWS region (default: from the environment or the AWS
	// config files, else DefaultRegion).
	Region string
	// Encoder turns spool records into the bytes consumers read.
	Encoder forwarder.Encoder
	// Logger gets retry and skip lines (default slog.Default).
	Logger *slog.Logger

	// RecordAttempts bounds how many PutRecords calls one Send makes for a
	// record that Kinesis keeps rejecting (default 10); then Send returns
	// an error and the forwarder retries the batch later.
	RecordAttempts int
	// MinBackoff and MaxBackoff bound the waits between those calls
	// (defaults 100ms and 5s; doubling, with jitter).
	MinBackoff, MaxBackoff time.Duration
}

// Sink sends records to Kinesis. It holds no per-call state: Send is safe
// for concurrent use.
type Sink struct {
	client *awskinesis.Client
	opts   Options
	log    *slog.Logger

	undecodable *metrics.Counter
}

// New builds a Sink. Credentials come from the usual AWS sources (the
// environment, shared config files, ...); nothing is contacted until the
// first Send, so the daemon starts while Kinesis is unreachable.
func New(ctx context.Context, o Options) (*Sink, error) {
	if o.Namespace == "" {
		o.Namespace = o.Encoder.Namespace
	}
	if o.Namespace == "" {
		return nil, errors.New("kinesis sink: no namespace")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.RecordAttempts <= 0 {
		o.RecordAttempts = 10
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Second
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)

	var loadOpts []func(*config.LoadOptions) error
	if o.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(o.Region))
	}
	if o.MaxRetries >= 0 {
		// aws-sdk-go-v2 counts attempts, the reference's max_retries
		// counts retries after the first attempt.
		loadOpts = append(loadOpts, config.WithRetryMaxAttempts(o.MaxRetries+1))
	}
	if o.OverrideHost != "" {
		endpoint := o.OverrideHost
		if !strings.Contains(endpoint, "://") {
			endpoint = "https://" + endpoint
		}
		loadOpts = append(loadOpts, config.WithBaseEndpoint(endpoint))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("kinesis sink: load AWS config: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	s := &Sink{
		client:      awskinesis.NewFromConfig(cfg),
		opts:        o,
		log:         o.Logger.With("sink", "kinesis"),
		undecodable: metrics.GetOrCreateCounter(`fleet_forwarder_undecodable_total{forwarder="kinesis"}`),
	}
	s.log.Info("kinesis sink ready", "region", cfg.Region, "endpoint", o.OverrideHost)
	return s, nil
}

// StreamName is the stream a record type goes to:
// Options.Streams[recordType] when not empty, else
// <namespace>_<recordType>.
func (s *Sink) StreamName(recordType string) string {
	if v := s.opts.Streams[recordType]; v != "" {
		return v
	}
	return s.opts.Namespace + "_" + recordType
}

// entry is one record on its way to a stream; at is its index in the
// batch Send got.
type entry struct {
	at   int
	seq  uint64
	key  string
	data []byte
}

func (e *entry) size() int { return len(e.data) + len(e.key) }

// Limits of one record (Kinesis Data Streams quotas): a record over them
// is refused by Kinesis every time.
const (
	// MaxRecordBytes bounds one record's data plus partition key.
	MaxRecordBytes = 1 << 20
	// MaxPartitionKeyLen bounds a partition key, in Unicode code points.
	MaxPartitionKeyLen = 256
)

// streamMetrics are one stream's counters.
type streamMetrics struct {
	put, failures, calls *metrics.Counter
}

func metricsFor(stream string) streamMetrics {
	label := fmt.Sprintf(`{stream=%q}`, stream)
	return streamMetrics{
		put:      metrics.GetOrCreateCounter("fleet_kinesis_put_records_total" + label),
		failures: metrics.GetOrCreateCounter("fleet_kinesis_record_failures_total" + label),
		calls:    metrics.GetOrCreateCounter("fleet_kinesis_calls_total" + label),
	}
}

// Send implements forwarder.Sink: it puts every record of batch and
// returns nil once Kinesis accepted each of them, else a
// *forwarder.BatchError naming those it did not. Records go out in waves
// holding one record per VIN (forwarder.SendInWaves), so that a VIN's
// records enter its shard in order even when Kinesis takes some records of
// a call and rejects others; each wave goes out in PutRecords calls of at
// most MaxCallRecords records and MaxCallBytes bytes. Records a call's
// result marks failed (throttling, internal errors) are put again on
// their own, with capped exponential backoff, at most
// Options.RecordAttempts times, then reported. A record over Kinesis's
// per-record limits is refused for good (forwarder.Permanent) without
// being sent. Records whose payload cannot be decoded are skipped and
// counted.
func (s *Sink) Send(ctx context.Context, batch []spool.Record) error {
	entries := s.encode(batch)
	return forwarder.SendInWaves(batch, func(wave []int) []error {
		errs := make([]error, len(wave))
		byStream := map[string][]entry{}
		var streams []string
		pos := make(map[int]int, len(wave)) // batch index -> index in wave
		for j, i := range wave {
			e, ok := entries[i]
			if !ok {
				continue // undecodable: skipped
			}
			if err := tooLarge(e); err != nil {
				errs[j] = err
				continue
			}
			st := s.StreamName(string(batch[i].Topic))
			if _, seen := byStream[st]; !seen {
				streams = append(streams, st)
			}
			byStream[st] = append(byStream[st], e)
			pos[i] = j
		}
		for _, st := range streams {
			m := metricsFor(st)
			for _, chunk := range split(byStream[st]) {
				for _, f := range s.put(ctx, st, chunk, m) {
					errs[pos[f.entry.at]] = f.err
				}
			}
		}
		return errs
	})
}

// tooLarge refuses, for good, a record Kinesis would refuse every time.
func tooLarge(e entry) error {
	if e.size() > MaxRecordBytes {
		return forwarder.Permanent("message_too_large",
			fmt.Errorf("kinesis sink: record of %d bytes (data and partition key) is over Kinesis's limit of %d", e.size(), MaxRecordBytes))
	}
	if n := utf8.RuneCountInString(e.key); n > MaxPartitionKeyLen {
		return forwarder.Permanent("invalid_record",
			fmt.Errorf("kinesis sink: partition key of %d characters is over Kinesis's limit of %d", n, MaxPartitionKeyLen))
	}
	return nil
}

// encode encodes batch's records by their index. Every record's data goes
// into one buffer for the whole batch (Kinesis takes no headers, so
// Encode's would be built for nothing); the SDK has let go of it when Send
// returns.
func (s *Sink) encode(batch []spool.Record) map[int]entry {
	entries := make(map[int]entry, len(batch))
	// A record that cannot be encoded was validated before it was acked: a
	// bug or a damaged spool. Skipping it beats blocking the sink.
	for i, data := range s.opts.Encoder.Values(batch, s.undecodable, s.log) {
		entries[i] = entry{at: i, seq: batch[i].Seq, key: batch[i].VIN, data: data}
	}
	return entries
}

// split cuts entries into PutRecords-sized chunks, keeping their order.
func split(entries []entry) [][]entry {
	var chunks [][]entry
	start, size := 0, 0
	for i := range entries {
		n := entries[i].size()
		if i > start && (i-start == MaxCallRecords || size+n > MaxCallBytes) {
			chunks = append(chunks, entries[start:i])
			start, size = i, 0
		}
		size += n
	}
	if start < len(entries) {
		chunks = append(chunks, entries[start:])
	}
	return chunks
}

// failure is a record Kinesis did not accept, and why.
type failure struct {
	entry entry
	err   error
}

// put sends one chunk to stream, then again only the records a call's
// result marks failed, until none is left or RecordAttempts calls were
// made. It returns the records still not accepted.
func (s *Sink) put(ctx context.Context, stream string, pending []entry, m streamMetrics) []failure {
	backoff := s.opts.MinBackoff
	for attempt := 1; ; attempt++ {
		failed, err := s.call(ctx, stream, pending, m)
		if err != nil {
			out := make([]failure, len(pending))
			for i, e := range pending {
				out[i] = failure{entry: e, err: err}
			}
			return out
		}
		if len(failed) == 0 {
			return nil
		}
		if attempt >= s.opts.RecordAttempts || ctx.Err() != nil {
			return failed
		}
		pending = make([]entry, 0, len(failed))
		for _, f := range failed {
			pending = append(pending, f.entry)
		}
		wait := retryWait(backoff, s.opts.MinBackoff)
		s.log.Warn("kinesis rejected records; retrying them", "stream", stream, "records", len(pending),
			"first_seq", pending[0].seq, "attempt", attempt, "error", failed[0].err, "backoff", wait)
		select {
		case <-ctx.Done():
			return failed
		case <-time.After(wait):
		}
		backoff = min(backoff*2, s.opts.MaxBackoff)
	}
}

// call makes one PutRecords call and returns the records its result marks
// failed. An error means the call itself failed.
func (s *Sink) call(ctx context.Context, stream string, entries []entry, m streamMetrics) ([]failure, error) {
	in := &awskinesis.PutRecordsInput{
		StreamName: aws.String(stream),
		Records:    make([]types.PutRecordsRequestEntry, len(entries)),
	}
	for i := range entries {
		in.Records[i] = types.PutRecordsRequestEntry{Data: entries[i].data, PartitionKey: aws.String(entries[i].key)}
	}
	m.calls.Inc()
	out, err := s.client.PutRecords(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("kinesis sink: PutRecords to %s (%d records, first seq %d): %w", stream, len(entries), entries[0].seq, err)
	}
	if len(out.Records) != len(entries) {
		return nil, fmt.Errorf("kinesis sink: PutRecords to %s: %d results for %d records", stream, len(out.Records), len(entries))
	}
	var failed []failure
	for i, r := range out.Records {
		if r.ErrorCode != nil && *r.ErrorCode != "" {
			failed = append(failed, failure{entry: entries[i],
				err: fmt.Errorf("kinesis sink: stream %s seq %d: %s: %s", stream, entries[i].seq, *r.ErrorCode, aws.ToString(r.ErrorMessage))})
		}
	}
	m.put.Add(len(entries) - len(failed))
	m.failures.Add(len(failed))
	return failed, nil
}

// retryWait draws a wait from [backoff/2, backoff], at least floor, so that
// many sinks do not retry in lockstep.
func retryWait(backoff, floor time.Duration) time.Duration {
	half := backoff / 2
	return max(half+time.Duration(rand.Int64N(int64(backoff-half)+1)), floor)
}

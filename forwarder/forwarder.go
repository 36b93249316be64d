// Package forwarder drains the spool to a sink in lanes: one per record
// type the sink takes, each with its own cursor in the spool, batches,
// retries and backoff, so that a record type the sink cannot take (a
// missing topic, say) never holds back the others. A lane passes a record
// only once the sink confirmed it (at-least-once), or refused it for good:
// then the record moves to the spool's quarantine, in the same commit that
// moves the lane past it. Sinks live in the sub-packages (stdout, kafka,
// ...).
package forwarder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// Sink delivers records somewhere. Send returns nil only once the sink has
// confirmed every record of the batch. For a batch it took only in part it
// returns a *BatchError naming the records it did not confirm; any other
// error means it confirmed none. A record's error wrapped by Permanent
// says the sink refuses that record for good. Send must keep the records
// of one VIN in order: a record it confirms never follows one of the same
// VIN it did not (see SendInWaves). It must be safe to call again with the
// records it did not confirm, and safe to call from several goroutines at
// once: each lane calls it with records of one type.
type Sink interface {
	Send(ctx context.Context, batch []spool.Record) error
}

// Options configure one forwarder.
type Options struct {
	// Name is the forwarder's (the reference's dispatcher's) name: "logger",
	// "kafka", ... Its lanes' cursors are LaneName(Name, record type).
	Name string
	// Topics are the record types routed to this sink: one lane each.
	Topics []string
	// BatchRecords and BatchBytes bound one Send (defaults 4000, 16 MiB).
	// A lane waits for each batch's confirmation before reading the next,
	// so a batch must hold more than a round trip's worth of records.
	BatchRecords, BatchBytes int
	// MinBackoff and MaxBackoff bound retry waits (defaults 100ms, 30s).
	MinBackoff, MaxBackoff time.Duration
	// Logger gets retry, quarantine and skip lines (default
	// slog.Default).
	Logger *slog.Logger
	// Delivered, when set, is called with the records the sink confirmed
	// (and those it refused for good, which are kept in quarantine),
	// before the lane moves past them (reliable acks hang on it). It must
	// not block.
	Delivered func(batch []spool.Record)
	// Linger is how long after a send the next one waits for more records
	// while fewer than BatchRecords are waiting (default 5ms, librdkafka's
	// linger.ms default, which the reference's Kafka producer uses;
	// negative: no wait): a steady trickle then goes out in a few larger
	// requests rather than one per commit. Drain never waits.
	Linger time.Duration
}

// DefaultLinger is Options.Linger's default.
const DefaultLinger = 5 * time.Millisecond

// LaneName is the spool cursor of forwarder's lane for recordType.
func LaneName(forwarder, recordType string) string { return forwarder + "/" + recordType }

// LaneNames are the cursors of forwarder's lanes for recordTypes.
func LaneNames(forwarder string, recordTypes []string) []string {
	names := make([]string, len(recordTypes))
	for i, t := range recordTypes {
		names[i] = LaneName(forwarder, t)
	}
	return names
}

// Forwarder moves records from a spool to a sink, one lane per record
// type.
type Forwarder struct {
	opts  Options
	spool *spool.Spool
	sink  Sink
	log   *slog.Logger
	lanes []*lane

	sent, batches, failed, retries, corrupt, reordered *metrics.Counter
	lag                                                *metrics.Gauge
}

// New prepares a forwarder; Run starts it.
func New(sp *spool.Spool, sink Sink, o Options) (*Forwarder, error) {
	if o.Name == "" {
		return nil, errors.New("forwarder: no name")
	}
	if len(o.Topics) == 0 {
		return nil, fmt.Errorf("forwarder %s: no record types", o.Name)
	}
	if o.BatchRecords <= 0 {
		o.BatchRecords = 4000
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 16 << 20
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 30 * time.Second
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	if o.Linger == 0 {
		o.Linger = DefaultLinger
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	f := &Forwarder{opts: o, spool: sp, sink: sink, log: o.Logger.With("forwarder", o.Name)}
	label := `{forwarder="` + o.Name + `"}`
	f.sent = metrics.GetOrCreateCounter("fleet_forwarder_sent_total" + label)
	f.batches = metrics.GetOrCreateCounter("fleet_forwarder_sent_batches_total" + label)
	f.failed = metrics.GetOrCreateCounter("fleet_forwarder_failed_batches_total" + label)
	f.retries = metrics.GetOrCreateCounter("fleet_forwarder_retries_total" + label)
	f.corrupt = metrics.GetOrCreateCounter("fleet_forwarder_damaged_records_total" + label)
	f.reordered = metrics.GetOrCreateCounter("fleet_forwarder_out_of_order_total" + label)
	f.lag = metrics.GetOrCreateGauge("fleet_forwarder_lag_records"+label, nil)
	seen := map[string]bool{}
	for _, t := range o.Topics {
		if t == "" || seen[t] {
			return nil, fmt.Errorf("forwarder %s: record type %q empty or repeated", o.Name, t)
		}
		seen[t] = true
		f.lanes = append(f.lanes, newLane(f, t))
	}
	return f, nil
}

// Name is the forwarder's name.
func (f *Forwarder) Name() string { return f.opts.Name }

// Run forwards until ctx ends. It returns nil on ctx's end and an error only
// when the spool itself fails.
func (f *Forwarder) Run(ctx context.Context) error {
	return f.runLanes(ctx, false)
}

// Drain forwards until every lane has passed every record committed when
// it was called, or ctx ends (then it returns ctx's error). It gives up at
// once, with an error matching spool.ErrDiskFull, when the spool cannot be
// read until disk space is freed: the records stay for the next start.
func (f *Forwarder) Drain(ctx context.Context) error {
	return f.runLanes(ctx, true)
}

func (f *Forwarder) runLanes(ctx context.Context, drain bool) error {
	if err := f.start(); err != nil {
		return err
	}
	target := f.spool.LastSeq()
	stopLag := make(chan struct{})
	defer close(stopLag)
	go f.watchLag(stopLag)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(f.lanes))
	for _, l := range f.lanes {
		go func() {
			err := l.run(ctx, drain, target)
			if err != nil {
				cancel() // a failing spool stops every lane
			}
			errs <- err
		}()
	}
	var first error
	for range f.lanes {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	f.setLag()
	// The lanes' last moves are committed now rather than with the next
	// commit: a stop then sends nothing again.
	if err := f.spool.Sync(); err != nil && first == nil && !errors.Is(err, spool.ErrClosed) && !errors.Is(err, spool.ErrBusy) {
		first = fmt.Errorf("forwarder %s: %w", f.opts.Name, err)
	}
	return first
}

// start loads each lane's cursor. A spool written by a version without
// lanes has one cursor per forwarder: its lanes start there, and the old
// cursor is replaced by theirs in one commit.
func (f *Forwarder) start() error {
	legacy, err := f.spool.Cursor(f.opts.Name)
	if err != nil {
		return fmt.Errorf("forwarder %s: %w", f.opts.Name, err)
	}
	for _, l := range f.lanes {
		c, err := f.spool.Cursor(l.name)
		if err != nil {
			return fmt.Errorf("forwarder %s: %w", f.opts.Name, err)
		}
		passed, err := f.spool.Passed(l.name)
		if err != nil {
			return fmt.Errorf("forwarder %s: %w", f.opts.Name, err)
		}
		l.setCursor(max(c, legacy), passed)
	}
	if legacy > 0 {
		if err := f.spool.ReplaceCursor(f.opts.Name, LaneNames(f.opts.Name, f.opts.Topics)); err != nil {
			return fmt.Errorf("forwarder %s: %w", f.opts.Name, err)
		}
		f.log.Info("cursor split into one per record type", "cursor", legacy, "lanes", len(f.lanes))
	}
	return nil
}

// watchLag refreshes the lag gauges every second: while a send is blocked
// (a broker outage) its lane does not come round to it.
func (f *Forwarder) watchLag(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			f.setLag()
		}
	}
}

// setLag publishes how many committed records each lane, and the slowest
// of them, has not passed.
func (f *Forwarder) setLag() {
	last := f.spool.LastSeq()
	slowest := 0.0
	for _, l := range f.lanes {
		lag := l.setLag(last)
		slowest = max(slowest, lag)
	}
	f.lag.Set(slowest)
}

// LaneStatus is what an operator sees of one lane.
type LaneStatus struct {
	Forwarder  string `json:"forwarder"`
	RecordType string `json:"record_type"`
	// Cursor is the last seq the lane passed (delivered, quarantined or
	// not its type).
	Cursor uint64 `json:"cursor"`
	// Lag is how many committed records the lane has not passed (0 when
	// none of them is of its type).
	Lag uint64 `json:"lag"`
	// OldestWaitingMs is the receive time of the oldest record the lane
	// is trying to deliver (0: none waiting).
	OldestWaitingMs int64 `json:"oldest_waiting_ms,omitempty"`
	// LastError is the sink's last error for this lane, and when.
	LastError   string `json:"last_error,omitempty"`
	LastErrorMs int64  `json:"last_error_ms,omitempty"`
	// Quarantined counts the records this lane quarantined since start.
	Quarantined uint64 `json:"quarantined"`
}

// Lanes reports every lane's status.
func (f *Forwarder) Lanes() []LaneStatus {
	last := f.spool.LastSeq()
	out := make([]LaneStatus, 0, len(f.lanes))
	for _, l := range f.lanes {
		out = append(out, l.status(last))
	}
	return out
}

// Replay sends the record the lane for recordType quarantined at seq
// through the sink once more: if the sink confirms it, it leaves the
// quarantine; if it fails again, it stays, with the new error. Meant for
// after the cause was fixed (the broker's size limit raised, say).
func (f *Forwarder) Replay(ctx context.Context, recordType string, seq uint64) error {
	var l *lane
	for _, c := range f.lanes {
		if c.recordType == recordType {
			l = c
		}
	}
	if l == nil {
		return fmt.Errorf("forwarder %s: no lane for record type %q", f.opts.Name, recordType)
	}
	return l.replay(ctx, seq)
}

// Package forwarder drains the spool to a sink: each forwarder reads from
// its own cursor, sends batches, and advances the cursor only once the sink
// confirmed a batch (at-least-once), retrying with capped exponential
// backoff. Sinks live in the sub-packages (stdout, kafka, ...).
package forwarder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// Sink delivers records somewhere. Send returns nil only once the sink has
// confirmed every record of the batch; it must be safe to call again with
// the same batch after an error (records may then arrive twice).
type Sink interface {
	Send(ctx context.Context, batch []spool.Record) error
}

// Options configure one forwarder.
type Options struct {
	// Name is the forwarder's cursor in the spool: the reference's dispatcher
	// name ("logger", "kafka", ...).
	Name string
	// Topics are the record types routed to this sink; others are skipped
	// (but the cursor passes them).
	Topics []string
	// BatchRecords and BatchBytes bound one Send (defaults 4000, 16 MiB).
	// A forwarder waits for each batch's confirmation before reading the
	// next, so a batch must hold more than a round trip's worth of
	// records: with 500 a Kafka forwarder fell behind one busy vehicle.
	BatchRecords, BatchBytes int
	// MinBackoff and MaxBackoff bound retry waits (defaults 100ms, 30s).
	MinBackoff, MaxBackoff time.Duration
	// Logger gets retry and skip lines (default slog.Default).
	Logger *slog.Logger
	// Delivered, when set, is called with each batch the sink confirmed,
	// before the cursor moves (reliable acks hang on it). It must not block.
	Delivered func(batch []spool.Record)
	// CursorInterval is how often the cursor is written to the spool while
	// records flow (default 100ms; negative: after every batch). Each
	// write waits for an fsync and trims the spool, so writing it per batch
	// costs more than the batch at small batch sizes; the price is that
	// after a crash up to this interval's records are sent again (they were
	// delivered, at least once, already).
	CursorInterval time.Duration
	// Linger is how long after a send the next one waits for more records
	// while fewer than BatchRecords are waiting (default 5ms, librdkafka's
	// linger.ms default, which the reference's Kafka producer uses;
	// negative: no wait). Without it a steady trickle of records went out
	// in one request per commit, one or two records each: at 2,000
	// records/s that was ~1,400 sink round trips a second where ~200
	// carry the same records. Drain never waits.
	Linger time.Duration
}

// DefaultCursorInterval is Options.CursorInterval's default.
const DefaultCursorInterval = 100 * time.Millisecond

// DefaultLinger is Options.Linger's default.
const DefaultLinger = 5 * time.Millisecond

// Forwarder moves records from a spool to a sink.
type Forwarder struct {
	opts   Options
	spool  *spool.Spool
	sink   Sink
	topics map[string]bool
	log    *slog.Logger

	sent, batches, failed, retries, skipped, corrupt *metrics.Counter
	lag                                              *metrics.Gauge
}

// New prepares a forwarder; Run starts it.
func New(sp *spool.Spool, sink Sink, o Options) (*Forwarder, error) {
	if o.Name == "" {
		return nil, errors.New("forwarder: no name")
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
	if o.CursorInterval == 0 {
		o.CursorInterval = DefaultCursorInterval
	}
	if o.Linger == 0 {
		o.Linger = DefaultLinger
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	f := &Forwarder{opts: o, spool: sp, sink: sink, topics: map[string]bool{}, log: o.Logger.With("forwarder", o.Name)}
	for _, t := range o.Topics {
		f.topics[t] = true
	}
	label := `{forwarder="` + o.Name + `"}`
	f.sent = metrics.GetOrCreateCounter("fleet_forwarder_sent_total" + label)
	f.batches = metrics.GetOrCreateCounter("fleet_forwarder_sent_batches_total" + label)
	f.failed = metrics.GetOrCreateCounter("fleet_forwarder_failed_batches_total" + label)
	f.retries = metrics.GetOrCreateCounter("fleet_forwarder_retries_total" + label)
	f.skipped = metrics.GetOrCreateCounter("fleet_forwarder_skipped_total" + label)
	f.corrupt = metrics.GetOrCreateCounter("fleet_forwarder_damaged_records_total" + label)
	f.lag = metrics.GetOrCreateGauge("fleet_forwarder_lag_records"+label, nil)
	return f, nil
}

// Run forwards until ctx ends. It returns nil on ctx's end and an error only
// when the spool itself fails.
func (f *Forwarder) Run(ctx context.Context) error {
	return f.run(ctx, false)
}

// Drain forwards until the forwarder has passed every record committed when
// it was called, or ctx ends (then it returns ctx's error). It gives up at
// once, with an error matching spool.ErrDiskFull, when the spool cannot be
// read until disk space is freed: the records stay for the next start.
func (f *Forwarder) Drain(ctx context.Context) error {
	return f.run(ctx, true)
}

func (f *Forwarder) run(ctx context.Context, drain bool) error {
	cursor, err := f.spool.Cursor(f.opts.Name)
	if err != nil {
		return fmt.Errorf("forwarder %s: %w", f.opts.Name, err)
	}
	target := f.spool.LastSeq()
	// The lag gauge is refreshed on a timer too: while a Send is blocked (a
	// broker outage) the loop below does not come round to it.
	var cursorNow atomic.Uint64
	cursorNow.Store(cursor)
	stopLag := make(chan struct{})
	defer close(stopLag)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopLag:
				return
			case <-t.C:
				f.setLag(cursorNow.Load())
			}
		}
	}()
	var buf []spool.Record
	var batch []spool.Record
	// cursor is what has been delivered; persisted what the spool has on
	// disk. They differ for at most CursorInterval while records flow.
	persisted, lastWrite := cursor, time.Now()
	persist := func() error {
		if persisted == cursor {
			return nil
		}
		if err := f.spool.SetCursor(f.opts.Name, cursor); err != nil {
			return err
		}
		persisted, lastWrite = cursor, time.Now()
		return nil
	}
	// persistAtExit writes the cursor on the way out, so a clean stop
	// sends nothing again; a closed spool just keeps the older cursor.
	persistAtExit := func() {
		if err := persist(); err != nil && !errors.Is(err, spool.ErrClosed) {
			f.log.Warn("cursor not saved at stop; records after it will be sent again",
				"cursor", persisted, "delivered", cursor, "err", err)
		}
	}
	// persistDue writes the cursor if CursorInterval has passed. A busy
	// spool (reopening after a failed commit) is not an error: the cursor
	// stays in memory and is written on a later pass.
	persistDue := func() error {
		if persisted == cursor || time.Since(lastWrite) < f.opts.CursorInterval {
			return nil
		}
		if err := persist(); err != nil && !errors.Is(err, spool.ErrBusy) {
			return fmt.Errorf("forwarder %s: set cursor %d: %w", f.opts.Name, cursor, err)
		}
		return nil
	}
	var lastSend time.Time
	var busyWait time.Duration // the current wait while the spool is busy, 0 when it is not
	dueTimer := time.NewTimer(time.Hour)
	dueTimer.Stop()
	defer dueTimer.Stop()
	// A poll interval backs up the commit signal.
	poll := time.NewTicker(250 * time.Millisecond)
	defer poll.Stop()
	for {
		if drain && cursor >= target {
			persistAtExit()
			return nil
		}
		// Checked on every pass, not only while idle or failing: with a
		// backlog and a healthy sink the loop would otherwise never look at
		// ctx and Run would not stop until the spool was empty.
		if err := ctx.Err(); err != nil {
			persistAtExit()
			if drain {
				return err
			}
			return nil
		}
		if err := persistDue(); err != nil {
			return err
		}
		if !drain && !f.linger(ctx, lastSend, cursor) {
			persistAtExit()
			return nil
		}
		committed := f.spool.Committed() // fetched before Read: no lost wake-up
		recs, err := f.spool.Read(cursor+1, f.opts.BatchRecords, f.opts.BatchBytes, buf[:0])
		var damaged *spool.CorruptRecordError
		switch {
		case err == nil:
		case errors.As(err, &damaged) && len(recs) > 0:
			// Deliver what precedes the damaged record first.
		case errors.As(err, &damaged):
			// Unreadable, so undeliverable: stopping here would block every
			// record behind it for ever (and a restart would stop again).
			// Say so loudly and go past it.
			f.corrupt.Inc()
			f.log.Error("spool record is damaged; skipped", "seq", damaged.Seq, "err", damaged.Err)
			cursor = damaged.Seq
			cursorNow.Store(cursor)
			continue
		case drain && errors.Is(err, spool.ErrDiskFull):
			// Nothing can be read until space is freed, which a stop
			// should not wait for: the records stay in the spool.
			persistAtExit()
			return fmt.Errorf("forwarder %s: read from %d: %w", f.opts.Name, cursor+1, err)
		case errors.Is(err, spool.ErrBusy):
			if f.pause(ctx, &busyWait) {
				continue // the spool is reopening after a failed commit
			}
			persistAtExit()
			if drain {
				return ctx.Err()
			}
			return nil
		default:
			return fmt.Errorf("forwarder %s: read from %d: %w", f.opts.Name, cursor+1, err)
		}
		if busyWait > 0 {
			f.log.Info("spool readable again")
			busyWait = 0
		}
		buf = recs
		f.setLag(cursor)
		if len(recs) == 0 {
			if drain {
				persistAtExit()
				return nil
			}
			// With an unsaved cursor, wake up when it is due.
			var due <-chan time.Time
			if persisted != cursor {
				dueTimer.Reset(max(0, f.opts.CursorInterval-time.Since(lastWrite)))
				due = dueTimer.C
			}
			select {
			case <-ctx.Done():
				persistAtExit()
				return nil
			case <-committed:
				// Close also closes the channel, for good: without this
				// check Run would spin on a closed spool.
				if _, err := f.spool.Cursor(f.opts.Name); err != nil {
					return fmt.Errorf("forwarder %s: %w", f.opts.Name, err)
				}
			case <-due:
			case <-poll.C:
			}
			continue
		}
		batch = batch[:0]
		for _, r := range recs {
			if f.topics[string(r.Topic)] {
				batch = append(batch, r)
			}
		}
		if n := len(recs) - len(batch); n > 0 {
			f.skipped.Add(n)
		}
		if len(batch) > 0 {
			lastSend = time.Now()
			if err := f.send(ctx, batch); err != nil {
				persistAtExit()
				if drain {
					return err
				}
				return nil // ctx ended; the cursor stays where it was
			}
			if f.opts.Delivered != nil {
				f.opts.Delivered(batch)
			}
		}
		cursor = recs[len(recs)-1].Seq
		cursorNow.Store(cursor)
	}
}

// linger waits until Linger has passed since lastSend while records are
// waiting but fewer than a full batch; false if ctx ended meanwhile.
func (f *Forwarder) linger(ctx context.Context, lastSend time.Time, cursor uint64) bool {
	if f.opts.Linger <= 0 {
		return true
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		committed := f.spool.Committed() // fetched before LastSeq: no lost wake-up
		last := f.spool.LastSeq()
		wait := f.opts.Linger - time.Since(lastSend)
		if wait <= 0 || last <= cursor || last-cursor >= uint64(f.opts.BatchRecords) {
			return true
		}
		if timer == nil {
			timer = time.NewTimer(wait)
		}
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		case <-committed:
			// Re-count; a closed spool closes the channel for good, and
			// the main loop reports that.
			if _, err := f.spool.Cursor(f.opts.Name); err != nil {
				return true
			}
		}
	}
}

// setLag publishes how many committed records the forwarder has not passed.
func (f *Forwarder) setLag(cursor uint64) {
	if last := f.spool.LastSeq(); last > cursor {
		f.lag.Set(float64(last - cursor))
	} else {
		f.lag.Set(0)
	}
}

// send retries one batch until the sink confirms it or ctx ends.
func (f *Forwarder) send(ctx context.Context, batch []spool.Record) error {
	backoff := f.opts.MinBackoff
	for attempt := 0; ; attempt++ {
		err := f.sink.Send(ctx, batch)
		if err == nil {
			f.sent.Add(len(batch))
			f.batches.Inc()
			return nil
		}
		f.failed.Inc()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		f.retries.Inc()
		f.log.Warn("send failed; retrying", "records", len(batch), "first_seq", batch[0].Seq,
			"attempt", attempt+1, "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(f.retryWait(backoff)):
		}
		backoff = f.nextBackoff(backoff)
	}
}

// retryWait draws the wait before a retry from [backoff/2, backoff], but
// not below MinBackoff: the jitter keeps many forwarders from retrying in
// lockstep while every wait stays within [MinBackoff, MaxBackoff].
func (f *Forwarder) retryWait(backoff time.Duration) time.Duration {
	half := backoff / 2
	return max(half+time.Duration(rand.Int64N(int64(backoff-half)+1)), f.opts.MinBackoff)
}

// nextBackoff doubles backoff up to MaxBackoff without overflowing.
func (f *Forwarder) nextBackoff(backoff time.Duration) time.Duration {
	if backoff > f.opts.MaxBackoff/2 {
		return f.opts.MaxBackoff
	}
	return backoff * 2
}

// pause waits after a read the spool refused as busy (reopening after a
// failed commit, which lasts as long as the disk is full); false when ctx
// ended. The wait doubles from MinBackoff (at least 100 ms) to 5 s, and
// one line is logged per busy spell, not per retry.
func (f *Forwarder) pause(ctx context.Context, busy *time.Duration) bool {
	if *busy == 0 {
		f.log.Warn("spool busy (reopening after a failed commit); waiting to read")
		*busy = max(f.opts.MinBackoff, 100*time.Millisecond)
	} else {
		*busy = min(2**busy, 5*time.Second)
	}
	t := time.NewTimer(*busy)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

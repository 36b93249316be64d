package forwarder

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// maxScanFactor bounds how many records of other types one read passes
// over, in batches' worth, before the lane saves its place.
const maxScanFactor = 8

// lane delivers one record type of a forwarder: it reads that type from
// its cursor, sends batches, retries what the sink did not confirm (only
// that), quarantines what it refused for good, and moves its cursor with
// the spool's next commit.
type lane struct {
	f          *Forwarder
	name       string // the spool cursor
	recordType string

	cursor atomic.Uint64 // every record up to it is delivered, quarantined or of another type
	// passed are records beyond the cursor already delivered or
	// quarantined by a run that stopped in the middle of their batch
	// (spool.SetPassed): they are not sent again.
	passed map[uint64]bool
	buf    []spool.Record
	errs   []error

	// For operators (under mu).
	mu              sync.Mutex
	oldestWaitingMs int64
	lastErr         string
	lastErrAt       time.Time
	quarantined     uint64

	lag, oldestAge  *metrics.Gauge
	laneErrors      *metrics.Counter
	quarantineLabel string
}

func newLane(f *Forwarder, recordType string) *lane {
	l := &lane{f: f, name: LaneName(f.opts.Name, recordType), recordType: recordType}
	label := fmt.Sprintf(`{forwarder=%q,record_type=%q}`, f.opts.Name, recordType)
	l.lag = metrics.GetOrCreateGauge("fleet_forwarder_lane_lag_records"+label, nil)
	l.oldestAge = metrics.GetOrCreateGauge("fleet_forwarder_lane_oldest_waiting_seconds"+label, func() float64 {
		l.mu.Lock()
		ms := l.oldestWaitingMs
		l.mu.Unlock()
		if ms == 0 {
			return 0
		}
		return max(0, float64(time.Now().UnixMilli()-ms)/1000)
	})
	l.laneErrors = metrics.GetOrCreateCounter("fleet_forwarder_lane_errors_total" + label)
	l.quarantineLabel = fmt.Sprintf(`dispatcher=%q,record_type=%q`, f.opts.Name, recordType)
	return l
}

func (l *lane) setCursor(c uint64, passed []uint64) {
	l.cursor.Store(c)
	l.passed = nil
	for _, q := range passed {
		if q > c {
			if l.passed == nil {
				l.passed = map[uint64]bool{}
			}
			l.passed[q] = true
		}
	}
}

// behind is how many committed records up to last the lane has not
// passed, 0 when none of them is of its type (read last first).
func (l *lane) behind(last uint64) uint64 {
	c := l.cursor.Load()
	if last <= c || l.f.spool.TopicLastSeq(l.recordType) <= c {
		return 0
	}
	return last - c
}

func (l *lane) setLag(last uint64) float64 {
	lag := float64(l.behind(last))
	l.lag.Set(lag)
	return lag
}

func (l *lane) status(last uint64) LaneStatus {
	st := LaneStatus{Forwarder: l.f.opts.Name, RecordType: l.recordType, Cursor: l.cursor.Load(), Lag: l.behind(last)}
	l.mu.Lock()
	st.OldestWaitingMs, st.LastError, st.Quarantined = l.oldestWaitingMs, l.lastErr, l.quarantined
	if !l.lastErrAt.IsZero() {
		st.LastErrorMs = l.lastErrAt.UnixMilli()
	}
	l.mu.Unlock()
	return st
}

func (l *lane) setOldest(ms int64) {
	l.mu.Lock()
	l.oldestWaitingMs = ms
	l.mu.Unlock()
}

func (l *lane) noteError(err error) {
	l.laneErrors.Inc()
	l.mu.Lock()
	l.lastErr, l.lastErrAt = err.Error(), time.Now()
	l.mu.Unlock()
}

// run delivers until ctx ends or, with drain, until the lane has passed
// target. It returns an error only when the spool fails (or, draining,
// when ctx ended or the disk is too full to read).
func (l *lane) run(ctx context.Context, drain bool, target uint64) error {
	f := l.f
	var lastSend time.Time
	var busyWait time.Duration // the current wait while the spool is busy, 0 when it is not
	// A poll interval backs up the commit signal.
	poll := time.NewTicker(250 * time.Millisecond)
	defer poll.Stop()
	for {
		cursor := l.cursor.Load()
		if drain && cursor >= target {
			return nil
		}
		// Checked on every pass, not only while idle or failing: with a
		// backlog and a healthy sink the loop would otherwise never look
		// at ctx and Run would not stop until the spool was empty.
		if err := ctx.Err(); err != nil {
			if drain {
				return err
			}
			return nil
		}
		if !drain && !l.linger(ctx, lastSend, cursor) {
			return nil
		}
		// Both fetched before the reads below: no lost wake-up.
		committed := f.spool.TopicCommitted(l.recordType)
		last := f.spool.LastSeq()
		if f.spool.TopicLastSeq(l.recordType) <= cursor {
			// Nothing of this type beyond the cursor: pass the rest
			// unread, and sleep until a commit holds one (or the poll,
			// which keeps the cursor, and so trimming, moving).
			if done, err := l.passOrSleep(ctx, cursor, last, drain, committed, poll.C); done || err != nil {
				return err
			}
			continue
		}
		recs, scanned, err := f.spool.ReadTopic(cursor+1, l.recordType, f.opts.BatchRecords, f.opts.BatchBytes,
			maxScanFactor*f.opts.BatchRecords, l.buf[:0])
		var damaged *spool.CorruptRecordError
		switch {
		case err == nil:
		case errors.As(err, &damaged) && len(recs) > 0:
			// Deliver what precedes the damaged record first.
		case errors.As(err, &damaged):
			// Unreadable, so undeliverable: stopping here would block
			// every record behind it for ever (and a restart would stop
			// again). Say so loudly and go past it.
			f.corrupt.Inc()
			f.log.Error("spool record is damaged; skipped", "lane", l.name, "seq", damaged.Seq, "err", damaged.Err)
			if err := l.advance(damaged.Seq, nil); err != nil {
				return err
			}
			continue
		case drain && errors.Is(err, spool.ErrDiskFull):
			// Nothing can be read until space is freed, which a stop
			// should not wait for: the records stay in the spool.
			return fmt.Errorf("forwarder %s: read from %d: %w", l.name, cursor+1, err)
		case errors.Is(err, spool.ErrBusy):
			if l.pause(ctx, &busyWait) {
				continue // the spool is reopening after a failed commit
			}
			if drain {
				return ctx.Err()
			}
			return nil
		default:
			return fmt.Errorf("forwarder %s: read from %d: %w", l.name, cursor+1, err)
		}
		if busyWait > 0 {
			f.log.Info("spool readable again", "lane", l.name)
			busyWait = 0
		}
		l.buf = recs
		if len(recs) == 0 {
			// Only records of other types, or none.
			if done, err := l.passOrSleep(ctx, cursor, scanned, drain, committed, poll.C); done || err != nil {
				return err
			}
			continue
		}
		lastSend = time.Now()
		l.setOldest(recs[0].ReceivedAtMs)
		f.setLag() // before a send that may block for long (a broker outage)
		quarantined, resolved, err := l.deliver(ctx, recs)
		if err != nil {
			// ctx ended: what was not confirmed is sent again after a
			// restart; what was, is not.
			l.stopInBatch(recs, resolved, quarantined)
			if drain {
				return err
			}
			return nil
		}
		l.setOldest(0)
		if err := l.advance(max(scanned, recs[len(recs)-1].Seq), quarantined); err != nil {
			return err
		}
		if damaged != nil {
			continue // the damaged record is next
		}
	}
}

// passOrSleep moves the cursor to `to` when that is beyond it (nothing of
// the lane's type lying between); with nothing to pass it reports done
// when draining, else sleeps (wait).
func (l *lane) passOrSleep(ctx context.Context, cursor, to uint64, drain bool, committed <-chan struct{}, poll <-chan time.Time) (done bool, err error) {
	if to > cursor {
		return false, l.advance(to, nil)
	}
	if drain {
		return true, nil
	}
	return false, l.wait(ctx, committed, poll)
}

// wait sleeps until committed is closed, a poll tick or ctx ends (nil
// then: run checks ctx next). A closed spool closes committed for good:
// that is reported, or run would spin.
func (l *lane) wait(ctx context.Context, committed <-chan struct{}, poll <-chan time.Time) error {
	select {
	case <-ctx.Done():
	case <-committed:
		if _, err := l.f.spool.Cursor(l.name); err != nil {
			return fmt.Errorf("forwarder %s: %w", l.name, err)
		}
	case <-poll:
	}
	return nil
}

// advance moves the lane past to, quarantining q in the same spool commit.
func (l *lane) advance(to uint64, q []spool.Quarantined) error {
	if err := l.f.spool.Advance(l.name, to, q...); err != nil {
		return fmt.Errorf("forwarder %s: advance to %d: %w", l.name, to, err)
	}
	l.cursor.Store(to)
	if l.passed != nil {
		for q := range l.passed {
			if q <= to {
				delete(l.passed, q)
			}
		}
		if len(l.passed) == 0 {
			l.passed = nil
			if err := l.f.spool.SetPassed(l.name, nil); err != nil {
				return fmt.Errorf("forwarder %s: %w", l.name, err)
			}
		}
	}
	return nil
}

// stopInBatch saves what a lane stopped in the middle of recs had
// resolved: the cursor moves past the leading records that were delivered
// or quarantined, and the others that were are recorded as passed, so
// that a restart sends none of them again.
func (l *lane) stopInBatch(recs []spool.Record, resolved map[uint64]bool, quarantined []spool.Quarantined) {
	to := l.cursor.Load()
	var after []uint64
	for _, r := range recs {
		switch {
		case !resolved[r.Seq] && !l.passed[r.Seq]:
			if after == nil {
				after = []uint64{}
			}
		case after == nil:
			to = r.Seq
		default:
			after = append(after, r.Seq)
		}
	}
	for q := range l.passed {
		if q > to && !slices.Contains(after, q) {
			after = append(after, q)
		}
	}
	slices.Sort(after)
	if err := l.advance(to, quarantined); err != nil {
		return // the spool is closing: the restart sends them again
	}
	if len(after) > 0 {
		l.passed = map[uint64]bool{}
		for _, q := range after {
			l.passed[q] = true
		}
		_ = l.f.spool.SetPassed(l.name, after)
	}
}

// deliver sends recs until the sink confirmed or refused for good each of
// them, sending again only what it did not confirm. It returns the refused
// ones, to quarantine, or ctx's error.
//
// A record refused for good in a batch of several may not be at fault
// itself (a broker refusing a whole produce request for one record too
// large): the records not confirmed are then sent one at a time, in
// order, until each refused one was judged on its own.
func (l *lane) deliver(ctx context.Context, recs []spool.Record) ([]spool.Quarantined, map[uint64]bool, error) {
	f := l.f
	pending := recs
	if l.passed != nil {
		pending = make([]spool.Record, 0, len(recs))
		for _, r := range recs {
			if !l.passed[r.Seq] {
				pending = append(pending, r)
			}
		}
	}
	resolved := make(map[uint64]bool, len(recs))
	var quarantined []spool.Quarantined
	var suspect uint64 // send one at a time until past this seq (0: no suspect)
	backoff := f.opts.MinBackoff
	for attempt := 0; len(pending) > 0; attempt++ {
		send := pending
		if suspect != 0 {
			send = pending[:1]
		}
		err := f.sink.Send(ctx, send)
		if err == nil {
			f.sent.Add(len(send))
			f.batches.Inc()
			l.delivered(send)
			for _, r := range send {
				resolved[r.Seq] = true
			}
			pending = pending[len(send):]
			if suspect != 0 && send[0].Seq >= suspect {
				suspect = 0
			}
			backoff = f.opts.MinBackoff
			continue
		}
		f.failed.Inc()
		l.errs = recordErrors(err, len(send), l.errs)
		l.checkOrder(send, l.errs)
		var confirmed, retry []spool.Record
		var firstErr error
		progress := false
		for i := range send {
			e := l.errs[i]
			if e == nil {
				confirmed = append(confirmed, send[i])
				resolved[send[i].Seq] = true
				progress = true
				continue
			}
			if firstErr == nil {
				firstErr = e
			}
			if reason, ok := IsPermanent(e); ok {
				if len(send) == 1 && ctx.Err() == nil {
					quarantined = append(quarantined, l.quarantine(send[i], reason, e))
					resolved[send[i].Seq] = true
					progress = true
					continue
				}
				suspect = max(suspect, send[i].Seq)
			}
			retry = append(retry, send[i])
		}
		if len(confirmed) > 0 {
			f.sent.Add(len(confirmed))
			l.delivered(confirmed)
		}
		if ctx.Err() != nil {
			return quarantined, resolved, ctx.Err()
		}
		pending = append(retry, pending[len(send):]...)
		if suspect != 0 && len(send) == 1 && send[0].Seq >= suspect && progress {
			suspect = 0
		}
		if firstErr == nil || len(pending) == 0 {
			continue
		}
		l.noteError(firstErr)
		if progress || (suspect != 0 && len(send) > 1) {
			continue // judge the suspects alone at once
		}
		f.retries.Inc()
		wait := f.retryWait(backoff)
		f.log.Warn("send failed; retrying what was not confirmed", "lane", l.name, "records", len(pending),
			"first_seq", pending[0].Seq, "attempt", attempt+1, "backoff", wait, "err", firstErr)
		select {
		case <-ctx.Done():
			return quarantined, resolved, ctx.Err()
		case <-time.After(wait):
		}
		backoff = f.nextBackoff(backoff)
	}
	return quarantined, resolved, nil
}

// delivered reports records the sink confirmed.
func (l *lane) delivered(recs []spool.Record) {
	if l.f.opts.Delivered != nil {
		l.f.opts.Delivered(recs)
	}
}

// quarantine prepares the record's move to the spool's quarantine (done
// with the lane's next advance) and counts and logs it. Its ack, if it
// waits for delivery, is released: the record is kept.
func (l *lane) quarantine(r spool.Record, reason string, err error) spool.Quarantined {
	metrics.GetOrCreateCounter(`fleet_forwarder_quarantined_total{` + l.quarantineLabel + `,reason="` + reasonLabel(reason) + `"}`).Inc()
	l.mu.Lock()
	l.quarantined++
	l.mu.Unlock()
	l.f.log.Error("record refused for good by the sink; quarantined", "lane", l.name, "seq", r.Seq, "vin", r.VIN,
		"txid", string(r.TxID), "reason", reason, "err", err)
	l.delivered([]spool.Record{r})
	return spool.Quarantined{Lane: l.name, Sink: l.f.opts.Name, Reason: reason, Error: err.Error(),
		AtMs: time.Now().UnixMilli(), Record: r}
}

// reasonLabel keeps a reason usable as a label value.
func reasonLabel(reason string) string {
	b := []byte(reason)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) == 0 || len(b) > 64 {
		return "other"
	}
	return string(b)
}

// checkOrder counts sends after which a VIN's confirmed records are not the
// first of its records in the send: a sink breaking the contract.
func (l *lane) checkOrder(send []spool.Record, errs []error) {
	var failedVIN map[string]bool
	for i := range send {
		if errs[i] != nil {
			if failedVIN == nil {
				failedVIN = map[string]bool{}
			}
			failedVIN[send[i].VIN] = true
		} else if failedVIN[send[i].VIN] {
			l.f.reordered.Inc()
			l.f.log.Error("sink confirmed a record after an earlier one of the same VIN failed: out of order",
				"lane", l.name, "seq", send[i].Seq, "vin", send[i].VIN)
			return
		}
	}
}

// replay sends a quarantined record once more; see Forwarder.Replay.
func (l *lane) replay(ctx context.Context, seq uint64) error {
	q, err := l.f.spool.QuarantinedRecord(l.name, seq)
	if err != nil {
		return err
	}
	err = l.f.sink.Send(ctx, []spool.Record{q.Record})
	if err == nil {
		l.f.log.Info("quarantined record replayed", "lane", l.name, "seq", seq, "vin", q.Record.VIN, "txid", string(q.Record.TxID))
		return l.f.spool.DropQuarantined(l.name, seq)
	}
	l.noteError(err)
	return fmt.Errorf("forwarder %s: replay of seq %d failed; it stays quarantined: %w", l.name, seq, err)
}

// linger waits until Linger has passed since lastSend while records are
// waiting but fewer than a full batch; false if ctx ended meanwhile.
func (l *lane) linger(ctx context.Context, lastSend time.Time, cursor uint64) bool {
	f := l.f
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
		committed := f.spool.TopicCommitted(l.recordType) // fetched before LastSeq: no lost wake-up
		last := f.spool.LastSeq()
		wait := f.opts.Linger - time.Since(lastSend)
		if wait <= 0 || last <= cursor || f.spool.TopicLastSeq(l.recordType) <= cursor || last-cursor >= uint64(f.opts.BatchRecords) {
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
			if _, err := f.spool.Cursor(l.name); err != nil {
				return true
			}
		}
	}
}

// pause waits after a read the spool refused as busy (reopening after a
// failed commit, which lasts as long as the disk is full); false when ctx
// ended. The wait doubles from MinBackoff (at least 100 ms) to 5 s, and
// one line is logged per busy spell, not per retry.
func (l *lane) pause(ctx context.Context, busy *time.Duration) bool {
	if *busy == 0 {
		l.f.log.Warn("spool busy (reopening after a failed commit); waiting to read", "lane", l.name)
		*busy = max(l.f.opts.MinBackoff, 100*time.Millisecond)
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

// retryWait draws the wait before a retry from [backoff/2, backoff], but
// not below MinBackoff: the jitter keeps many lanes from retrying in
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

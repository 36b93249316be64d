package spool

// Group commit: Append puts a record into the pending batch and returns;
// one committer goroutine commits each batch with pebble.Sync (with the
// staged cursor moves, quarantine writes and trims) and tells every
// record's Waiter.

import (
	"context"
	"encoding/binary"
	"fmt"
	"runtime/trace"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Append copies r into the pending batch, assigns its seq (also stored in
// r.Seq) and returns without waiting for the disk; w (which may be nil) is
// told, with token, once the record is durable or its commit failed.
//
// It returns ErrFull when the record would exceed Options.MaxBytes, ErrBusy
// when Options.MaxPendingBytes are waiting for a commit or the spool is
// recovering from a failed commit, ErrTooLarge for a record larger than
// Options.MaxPendingBytes, and ErrClosed after Close. Nothing is stored then
// and w is not called.
func (s *Spool) Append(r *Record, w Waiter, token uint64) error {
	vlen := encodedLen(r)
	size := recKeyLen + vlen
	if size > s.maxPending {
		refusedTooLarge.Inc()
		return ErrTooLarge
	}
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		refusedClosed.Inc()
		return ErrClosed
	case s.degraded || s.pendingBytes+size > s.maxPending:
		s.mu.Unlock()
		refusedBusy.Inc()
		return ErrBusy
	case s.opts.MaxBytes > 0 && s.liveBytes+int64(size) > s.opts.MaxBytes:
		s.mu.Unlock()
		refusedFull.Inc()
		return ErrFull
	case s.opts.MinFreeBytes > 0 && s.freeAtProbe-s.appendedSinceProbe-int64(size) < s.opts.MinFreeBytes:
		s.mu.Unlock()
		refusedLowDisk.Inc()
		return ErrFull
	}
	seq := s.nextSeq
	s.nextSeq++
	r.Seq = seq
	s.topics.noteAppendLocked(r.Topic, seq)
	op := s.pending.SetDeferred(recKeyLen, vlen)
	putRecKey(op.Key, seq)
	encodeInto(op.Value, r)
	_ = op.Finish() // the batch is not indexed: Finish cannot fail
	wasEmpty := s.pendingBytes == 0 && len(s.pendingW) == 0
	s.pendingBytes += size
	s.pendingRecs++
	s.appendedSinceProbe += int64(size)
	s.liveBytes += int64(size)
	s.liveRecords++
	s.pendingW = append(s.pendingW, waitEntry{w: w, token: token, seq: seq})
	s.mu.Unlock()
	if wasEmpty {
		s.wake()
	}
	appendedTotal.Inc()
	return nil
}

func (s *Spool) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run is the committer goroutine.
func (s *Spool) run() {
	defer close(s.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		s.mu.Lock()
		// Staged cursor moves ride along with appended records; alone they
		// wait until due (or until Close).
		for len(s.pendingW) == 0 && (s.staged.empty() || !s.stagedDue && !s.closed) {
			if s.closed {
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
			select {
			case <-s.kick:
			case <-tick.C:
				s.updateAgeGauge()
			}
			s.mu.Lock()
		}
		if s.pending == nil {
			// Closed while a reopen after a failed commit was retrying:
			// there is no store to commit to. What is staged was never
			// committed; its consumers pass those records again.
			s.mu.Unlock()
			return
		}
		b, ws, nrec := s.pending, s.pendingW, s.pendingRecs
		hwm := s.nextSeq - 1
		live, recs := s.liveBytes, s.liveRecords
		qBytes, qRecs := s.quarantineBytes, s.quarantineRecords
		st, err := s.takeStaged(b)
		marks := s.topics.takeLocked()
		s.pending, s.pendingW = s.spare, s.spareW
		s.spare, s.spareW = nil, nil
		s.pendingBytes, s.pendingRecs = 0, 0
		s.mu.Unlock()

		var meta [metaLen]byte
		binary.BigEndian.PutUint64(meta[0:], hwm)
		binary.BigEndian.PutUint64(meta[8:], uint64(live))
		binary.BigEndian.PutUint64(meta[16:], uint64(recs))
		if err == nil {
			err = b.Set(metaKey, meta[:], nil)
		}
		if err == nil {
			err = b.Set(quarantineMetaKey, quarantineMeta(qBytes, qRecs), nil)
		}
		start := time.Now()
		if err == nil {
			// A region for `go tool trace` (free while not tracing).
			region := trace.StartRegion(context.Background(), "spool commit")
			err = s.commit(b)
			region.End()
		}
		commitDuration.UpdateDuration(start)
		commitRecords.Update(float64(nrec))
		if err != nil {
			s.fail(err, ws, st)
			continue
		}
		commitsTotal.Inc()
		publish(marks) // before committedSeq: see TopicLastSeq
		s.committedSeq.Store(hwm)
		s.mu.Lock()
		s.statBytes, s.statRecords = live, recs
		s.statQBytes, s.statQRecords = qBytes, qRecs
		s.committedStaged(st)
		s.mu.Unlock()
		bytesGauge.Set(float64(live))
		recordsGauge.Set(float64(recs))
		for _, e := range ws {
			if e.w != nil {
				e.w.Committed(e.token, e.seq, nil)
			}
		}
		s.signal()
		signalTopics(marks)
		clear(ws) // drop Waiter references
		b.Reset()
		s.mu.Lock()
		s.spare, s.spareW = b, ws[:0]
		s.mu.Unlock()
	}
}

// commit commits b with pebble.Sync. A failed WAL write or fsync makes
// Pebble's DB.Apply call Logger.Fatalf ("pebble: fatal commit error"), which
// by default exits the process; pebbleLogger panics instead and the panic is
// recovered here. Pebble considers that DB unusable afterwards (its WAL
// writer keeps the error, and the commit pipeline keeps the failed batch
// queued), so the caller reopens it.
func (s *Spool) commit(b *pebble.Batch) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if f, ok := r.(pebbleFatal); ok {
				err = fmt.Errorf("spool: commit: %w", f)
				return
			}
			err = fmt.Errorf("spool: commit: panic: %v", r)
		}
	}()
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("spool: commit: %w", err)
	}
	return nil
}

type chanWaiter chan error

func (c chanWaiter) Committed(_, _ uint64, err error) { c <- err }

package spool

// Reads: records in seq order (all, or one record type), cursors, and the
// committed totals.

import (
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Read appends to dst the committed records with Seq >= from, in seq order,
// at most maxRecords of them and at most maxBytes of encoded values, but at
// least one if any is available. maxRecords or maxBytes <= 0 mean no limit.
// The records own their memory (fresh for every Read; records share chunks
// of it). A damaged record ends the read with a *CorruptRecordError; the
// records before it are returned with it.
func (s *Spool) Read(from uint64, maxRecords, maxBytes int, dst []Record) ([]Record, error) {
	dst, _, err := s.read(scanLimits{from: from, maxRecords: maxRecords, maxBytes: maxBytes}, dst)
	return dst, err
}

// ReadTopic is Read for the records of one topic (record type): it passes
// over the others, looking at no more than maxScan records in all (<= 0:
// no limit), and also returns the last seq it looked at (from-1 if none),
// up to which a consumer of that topic alone has seen everything. A
// damaged record is returned as by Read, whatever its topic.
func (s *Spool) ReadTopic(from uint64, topic string, maxRecords, maxBytes, maxScan int, dst []Record) ([]Record, uint64, error) {
	return s.read(scanLimits{from: from, maxRecords: maxRecords, maxBytes: maxBytes, maxScan: maxScan,
		keep: func(v []byte) bool {
			t, err := recordTopic(v)
			return err != nil || string(t) == topic // a damaged one is reported
		}}, dst)
}

// read is Read and ReadTopic.
func (s *Spool) read(l scanLimits, dst []Record) ([]Record, uint64, error) {
	last := s.LastSeq()
	if l.from > last {
		return dst, l.from - 1, nil
	}
	l.to = last
	db, err := s.getDB()
	if err != nil {
		return dst, l.from - 1, fmt.Errorf("spool: read from %d: %w", l.from, err)
	}
	defer s.dbMu.RUnlock()
	// Values are copied into chunks of readChunkBytes rather than one
	// allocation each (a forwarder reads thousands of records a second).
	var chunk []byte
	scanned, err := scanRecords(db, l, func(seq uint64, v []byte) error {
		if cap(chunk)-len(chunk) < len(v) {
			chunk = make([]byte, 0, max(len(v), readChunkBytes))
		}
		start := len(chunk)
		chunk = append(chunk, v...)
		var r Record
		// The copy is the record's alone: its strings may alias it.
		if err := decodeRecord(chunk[start:len(chunk):len(chunk)], seq, &r, true); err != nil {
			return &CorruptRecordError{Seq: seq, Err: err}
		}
		dst = append(dst, r)
		return nil
	})
	return dst, scanned, err
}

// readChunkBytes is the size of the chunks Read copies values into: the
// largest of Go's small size classes.
const readChunkBytes = 32 << 10

// Cursor returns the last seq consumer name has delivered, 0 if none.
func (s *Spool) Cursor(name string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	return s.cursors[name], nil
}

// sizeRange counts the records with from <= seq <= to and their bytes.
func sizeRange(db *pebble.DB, from, to uint64) (n, size int64, err error) {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: recKey(from), UpperBound: recKeyAfter(to)})
	if err != nil {
		return 0, 0, fmt.Errorf("count records %d..%d: %w", from, to, err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		n++
		lv := it.LazyValue()
		size += int64(len(it.Key())) + int64(lv.Len())
	}
	if err := it.Close(); err != nil {
		return 0, 0, fmt.Errorf("count records %d..%d: %w", from, to, err)
	}
	return n, size, nil
}

// first returns the oldest committed record's seq and ReceivedAtMs.
func (s *Spool) first() (seq uint64, receivedAtMs int64, err error) {
	last := s.LastSeq()
	if last == 0 {
		return 0, 0, nil
	}
	db, err := s.getDB()
	if err != nil {
		return 0, 0, err
	}
	defer s.dbMu.RUnlock()
	// Start after the trimmed records: iterating from "r/" would step over
	// every deleted key not yet compacted away.
	s.mu.Lock()
	lower := recKey(s.trimmedTo + 1)
	s.mu.Unlock()
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: recKeyAfter(last)})
	if err != nil {
		return 0, 0, err
	}
	defer it.Close()
	if !it.First() {
		return 0, 0, it.Error()
	}
	if seq, err = parseRecKey(it.Key()); err != nil {
		return 0, 0, err
	}
	v, err := it.ValueAndErr()
	if err != nil {
		return 0, 0, fmt.Errorf("spool: read record %d: %w", seq, err)
	}
	var r Record
	if err := DecodeRecord(v, seq, &r); err != nil {
		return 0, 0, err
	}
	return seq, r.ReceivedAtMs, nil
}

func (s *Spool) updateAgeGauge() {
	_, ms, err := s.first()
	if err != nil || ms == 0 {
		oldestAgeGauge.Set(0)
		return
	}
	oldestAgeGauge.Set(max(0, float64(time.Now().UnixMilli()-ms)/1000))
}

// Stats returns a snapshot of the committed contents. FirstSeq and
// OldestReceivedAtMs are 0 when the oldest record cannot be read.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	st := Stats{
		Records:            s.statRecords,
		Bytes:              s.statBytes,
		QuarantinedRecords: s.statQRecords,
		QuarantinedBytes:   s.statQBytes,
		LastSeq:            s.LastSeq(),
		Cursors:            make(map[string]uint64, len(s.cursors)),
	}
	for k, v := range s.cursors {
		st.Cursors[k] = v
	}
	s.mu.Unlock()
	// Unreadable (a closed or reopening store, a damaged record): left 0;
	// Info reports such errors.
	if seq, ms, err := s.first(); err == nil {
		st.FirstSeq, st.OldestReceivedAtMs = seq, ms
	}
	return st
}

package spool

// Read-only inspection, for the `fleet-telemetry spool` command and the
// daemon's admin socket: raw (undecoded) record reads, in both directions,
// on a live *Spool or on a stopped spool opened with OpenView.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
)

// ErrLocked is returned by OpenView when another process (normally the
// daemon) has the spool open: Pebble's LOCK file is held.
var ErrLocked = errors.New("spool: locked by another process")

// RawRecord is one stored record as it is on disk: its seq and the
// EncodeRecord bytes, not decoded (so that damaged records can be reported
// rather than stop a scan). Value is owned by the RawRecord.
type RawRecord struct {
	Seq   uint64
	Value []byte
}

// Info describes a spool's committed contents.
type Info struct {
	Records            int64             `json:"records"`               // live records
	Bytes              int64             `json:"bytes"`                 // live record bytes (keys plus values)
	FirstSeq           uint64            `json:"first_seq"`             // oldest live record, 0 if empty
	OldestReceivedAtMs int64             `json:"oldest_received_at_ms"` // of FirstSeq, 0 if empty or undecodable
	NewestSeq          uint64            `json:"newest_seq"`            // newest live record, 0 if empty
	NewestReceivedAtMs int64             `json:"newest_received_at_ms"` // of NewestSeq
	LastSeq            uint64            `json:"last_seq"`              // seq high-water mark (may be trimmed)
	Cursors            map[string]uint64 `json:"cursors"`               // every persisted cursor
	Consumers          []string          `json:"consumers,omitempty"`   // the cursors the daemon trims by (live spool only)
	// QuarantinedRecords and QuarantinedBytes are the records sinks refused
	// for good, kept aside; Records and Bytes include them.
	QuarantinedRecords int64 `json:"quarantined_records"`
	QuarantinedBytes   int64 `json:"quarantined_bytes"`
}

// RawReader is what inspection needs from a spool; *Spool and *View
// implement it.
type RawReader interface {
	// ReadRaw appends the records with from <= seq <= to (to == 0: no
	// bound) in ascending order, at most maxRecords and maxBytes of values
	// (<= 0: no limit) but at least one if any.
	ReadRaw(from, to uint64, maxRecords, maxBytes int, dst []RawRecord) ([]RawRecord, error)
	// ReadRawBefore appends at most maxRecords records with seq < before,
	// newest first.
	ReadRawBefore(before uint64, maxRecords int, dst []RawRecord) ([]RawRecord, error)
	// Info describes the committed contents.
	Info() (Info, error)
}

// readRaw is ReadRaw on db with seqs capped at upper.
func readRaw(db *pebble.DB, from, to, upper uint64, maxRecords, maxBytes int, dst []RawRecord) ([]RawRecord, error) {
	if to == 0 || to > upper {
		to = upper
	}
	_, err := scanRecords(db, scanLimits{from: max(from, 1), to: to, maxRecords: maxRecords, maxBytes: maxBytes}, func(seq uint64, v []byte) error {
		dst = append(dst, RawRecord{Seq: seq, Value: slices.Clone(v)})
		return nil
	})
	return dst, err
}

// scanLimits bound a scanRecords call.
type scanLimits struct {
	from, to uint64 // seqs, inclusive
	// maxRecords and maxBytes (of values) bound the records passed to fn
	// (<= 0: no limit), but fn gets at least one if any.
	maxRecords, maxBytes int
	// maxScan bounds the records looked at, passed to fn or not (<= 0: no
	// limit).
	maxScan int
	// keep, when set, picks the records fn gets; the others are passed
	// over (a damaged one is not: keep sees only readable values).
	keep func(v []byte) bool
}

// scanRecords calls fn for each stored record in l's range that l.keep
// accepts, in seq order, within l's limits, and returns the last seq it
// looked at (l.from-1 if none). v is valid only during the call. A value
// that cannot be read ends the scan with a *CorruptRecordError, and an
// error from fn ends it with that error.
func scanRecords(db *pebble.DB, l scanLimits, fn func(seq uint64, v []byte) error) (uint64, error) {
	last := l.from - 1
	if l.from > l.to {
		return last, nil
	}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: recKey(l.from), UpperBound: recKeyAfter(l.to)})
	if err != nil {
		return last, fmt.Errorf("spool: read from %d: %w", l.from, err)
	}
	n, size, scanned := 0, 0, 0
	for ok := it.First(); ok; ok = it.Next() {
		if l.maxScan > 0 && scanned >= l.maxScan {
			break
		}
		seq, err := parseRecKey(it.Key())
		if err != nil {
			_ = it.Close()
			return last, err
		}
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return last, &CorruptRecordError{Seq: seq, Err: err}
		}
		if l.keep != nil && !l.keep(v) {
			last = seq
			scanned++
			continue
		}
		if n > 0 && l.maxBytes > 0 && size+len(v) > l.maxBytes {
			break
		}
		if err := fn(seq, v); err != nil {
			_ = it.Close()
			return last, err
		}
		last = seq
		scanned++
		n++
		size += len(v)
		if l.maxRecords > 0 && n >= l.maxRecords {
			break
		}
	}
	if err := it.Close(); err != nil {
		return last, fmt.Errorf("spool: read from %d: %w", l.from, err)
	}
	return last, nil
}

// readRawBefore is ReadRawBefore on db.
func readRawBefore(db *pebble.DB, before uint64, maxRecords int, dst []RawRecord) ([]RawRecord, error) {
	if before <= 1 {
		return dst, nil
	}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte("r/"), UpperBound: recKey(before)})
	if err != nil {
		return dst, fmt.Errorf("spool: read before %d: %w", before, err)
	}
	n := 0
	for ok := it.Last(); ok; ok = it.Prev() {
		seq, err := parseRecKey(it.Key())
		if err != nil {
			_ = it.Close()
			return dst, err
		}
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return dst, fmt.Errorf("spool: read record %d: %w", seq, err)
		}
		dst = append(dst, RawRecord{Seq: seq, Value: slices.Clone(v)})
		n++
		if maxRecords > 0 && n >= maxRecords {
			break
		}
	}
	if err := it.Close(); err != nil {
		return dst, fmt.Errorf("spool: read before %d: %w", before, err)
	}
	return dst, nil
}

// receivedAt returns a raw record's ReceivedAtMs, 0 if it does not decode.
func receivedAt(r RawRecord) int64 {
	var rec Record
	if DecodeRecord(r.Value, r.Seq, &rec) != nil {
		return 0
	}
	return rec.ReceivedAtMs
}

// edges fills the oldest/newest fields of in from the records themselves.
func edges(rr RawReader, in *Info) error {
	first, err := rr.ReadRaw(1, 0, 1, 0, nil)
	if err != nil {
		return err
	}
	last, err := rr.ReadRawBefore(math.MaxUint64, 1, nil)
	if err != nil {
		return err
	}
	if len(first) > 0 {
		in.FirstSeq, in.OldestReceivedAtMs = first[0].Seq, receivedAt(first[0])
	}
	if len(last) > 0 {
		in.NewestSeq, in.NewestReceivedAtMs = last[0].Seq, receivedAt(last[0])
	}
	return nil
}

// ReadRaw implements RawReader on a live spool: only committed records
// (seq <= LastSeq) are read. It returns ErrClosed after Close.
func (s *Spool) ReadRaw(from, to uint64, maxRecords, maxBytes int, dst []RawRecord) ([]RawRecord, error) {
	if err := s.checkOpen(); err != nil {
		return dst, err
	}
	last := s.LastSeq()
	db, err := s.getDB()
	if err != nil {
		return dst, fmt.Errorf("spool: read from %d: %w", from, err)
	}
	defer s.dbMu.RUnlock()
	return readRaw(db, from, to, last, maxRecords, maxBytes, dst)
}

// ReadRawBefore implements RawReader on a live spool.
func (s *Spool) ReadRawBefore(before uint64, maxRecords int, dst []RawRecord) ([]RawRecord, error) {
	if err := s.checkOpen(); err != nil {
		return dst, err
	}
	if last := s.LastSeq(); before > last {
		before = last + 1
	}
	db, err := s.getDB()
	if err != nil {
		return dst, fmt.Errorf("spool: read before %d: %w", before, err)
	}
	defer s.dbMu.RUnlock()
	return readRawBefore(db, before, maxRecords, dst)
}

func (s *Spool) checkOpen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	return nil
}

// Info implements RawReader on a live spool.
func (s *Spool) Info() (Info, error) {
	if err := s.checkOpen(); err != nil {
		return Info{}, err
	}
	st := s.Stats()
	in := Info{
		Records: st.Records, Bytes: st.Bytes, LastSeq: st.LastSeq,
		Cursors: st.Cursors, Consumers: slices.Clone(s.opts.Consumers),
		QuarantinedRecords: st.QuarantinedRecords, QuarantinedBytes: st.QuarantinedBytes,
	}
	if err := edges(s, &in); err != nil {
		return in, err
	}
	return in, nil
}

// View is a spool opened read-only by another process than the daemon (the
// spool command on a stopped daemon's spool). It holds Pebble's LOCK while
// open, so a daemon cannot start on the directory meanwhile; close it soon.
type View struct {
	dir string
	db  *pebble.DB
	st  diskState
}

// OpenView opens the spool in dir read-only. It fails at once with an error
// wrapping ErrLocked when a daemon has the spool open (it never waits), and
// with an error wrapping fs.ErrNotExist-like text when there is no spool.
func OpenView(dir string, log *slog.Logger) (*View, error) {
	if log == nil {
		log = slog.Default()
	}
	o := &pebble.Options{
		Logger:   pebbleLogger{l: log.With("component", "spool", "dir", dir)},
		ReadOnly: true,
	}
	db, err := pebble.Open(dir, o)
	if err != nil {
		// Another process holds the fcntl lock: EAGAIN or EACCES. Pebble
		// refuses a second open in the same process with its own message.
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) || strings.Contains(err.Error(), "lock held by current process") {
			return nil, fmt.Errorf("spool: open %s read-only: %w (%v)", dir, ErrLocked, err)
		}
		return nil, fmt.Errorf("spool: open %s read-only: %w", dir, err)
	}
	st, err := loadState(db)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("spool: open %s read-only: %w", dir, err)
	}
	return &View{dir: dir, db: db, st: st}, nil
}

// ReadRaw implements RawReader.
func (v *View) ReadRaw(from, to uint64, maxRecords, maxBytes int, dst []RawRecord) ([]RawRecord, error) {
	return readRaw(v.db, from, to, math.MaxUint64, maxRecords, maxBytes, dst)
}

// ReadRawBefore implements RawReader.
func (v *View) ReadRawBefore(before uint64, maxRecords int, dst []RawRecord) ([]RawRecord, error) {
	return readRawBefore(v.db, before, maxRecords, dst)
}

// Info implements RawReader. Consumers is empty: a stopped spool does not
// know which forwarders the daemon will run.
func (v *View) Info() (Info, error) {
	in := Info{
		Records: int64(v.st.records), Bytes: int64(v.st.bytes), LastSeq: v.st.hwm,
		Cursors:            make(map[string]uint64, len(v.st.cursors)),
		QuarantinedRecords: int64(v.st.qRecords), QuarantinedBytes: int64(v.st.qBytes),
	}
	for k, c := range v.st.cursors {
		in.Cursors[k] = c
	}
	if err := edges(v, &in); err != nil {
		return in, err
	}
	return in, nil
}

// Quarantine calls fn for each quarantined record of lane ("" for every
// lane), in lane and seq order, until fn returns false.
func (v *View) Quarantine(lane string, fn func(*Quarantined) bool) error {
	return scanQuarantine(v.db, lane, fn)
}

// Close releases the spool (and its LOCK).
func (v *View) Close() error {
	if err := v.db.Close(); err != nil {
		return fmt.Errorf("spool: close %s: %w", v.dir, err)
	}
	return nil
}

// RecordSize is the bytes a record takes in the budget: key plus value.
func RecordSize(r RawRecord) int { return recKeyLen + len(r.Value) }

// ScanRaw calls fn for every record with from <= seq <= to (to == 0: up to
// the newest at each step), in order, reading in chunks so that a live
// spool is never held for long. It stops at fn's first error or when ctx
// ends.
func ScanRaw(ctx context.Context, rr RawReader, from, to uint64, fn func(RawRecord) error) error {
	var buf []RawRecord
	next := max(from, 1)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if to != 0 && next > to {
			return nil
		}
		var err error
		buf, err = rr.ReadRaw(next, to, 1024, 4<<20, buf[:0])
		if err != nil {
			return err
		}
		if len(buf) == 0 {
			return nil
		}
		for _, r := range buf {
			if err := fn(r); err != nil {
				return err
			}
		}
		last := buf[len(buf)-1].Seq
		if last == math.MaxUint64 {
			return nil
		}
		next = last + 1
		clear(buf)
	}
}

// LastRaw returns, oldest first, the newest n records for which match (nil:
// every record) is true, walking back in chunks.
func LastRaw(ctx context.Context, rr RawReader, n int, match func(RawRecord) bool) ([]RawRecord, error) {
	var out, buf []RawRecord
	before := uint64(math.MaxUint64)
	for len(out) < n {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var err error
		buf, err = rr.ReadRawBefore(before, max(n-len(out), 256), buf[:0])
		if err != nil {
			return nil, err
		}
		if len(buf) == 0 {
			break
		}
		for _, r := range buf {
			if match == nil || match(r) {
				out = append(out, r)
				if len(out) == n {
					break
				}
			}
		}
		before = buf[len(buf)-1].Seq
	}
	slices.Reverse(out)
	return out, nil
}

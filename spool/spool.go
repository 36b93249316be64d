// Package spool is the durable write-ahead spool between ingest and the
// forwarders: records are appended with group commit (one pebble.Sync
// covers every record appended while the previous fsync ran), numbered with
// sequence numbers that never repeat, read back in order by consumers that
// keep named cursors, and deleted once every consumer has passed them.
//
// Layout in Pebble:
//
//	r/<seq: 8 bytes big-endian>  → EncodeRecord output
//	c/<consumer>                 → 8-byte big-endian last delivered seq
//	m/meta                       → 24 bytes: seq high-water mark, live record
//	                               bytes, live record count (big-endian)
//
// The meta key is rewritten in every commit batch, in the same batch as the
// records and deletions it accounts for, so it is never out of step with
// them and seqs continue after a full trim and restart.
package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sys/unix"
)

// Errors returned by Append and the other methods.
var (
	// ErrFull means the byte budget (Options.MaxBytes) is used up, or the
	// disk's free space is under Options.MinFreeBytes; it clears when
	// consumers advance and records are trimmed (or space is freed).
	ErrFull = errors.New("spool: full")
	// ErrBusy means too many bytes are waiting for the next commit, or the
	// spool is recovering from a failed commit. It is transient.
	ErrBusy = errors.New("spool: busy")
	// ErrClosed means Close was called.
	ErrClosed = errors.New("spool: closed")
	// ErrTooLarge means a single record is larger than
	// Options.MaxPendingBytes and can never be appended.
	ErrTooLarge = errors.New("spool: record too large")
	// ErrDiskFull is returned by Open when the disk has too little free
	// space to replay the write-ahead logs (Pebble would retry that flush
	// for as long as the disk stays full, and Open would not return). It
	// clears when space is freed. Read's ErrBusy wraps it too while a
	// reopen after a failed commit waits for that room: a reader that
	// must finish soon (a drain at stop) can give up rather than wait.
	ErrDiskFull = errors.New("spool: disk too full")
	// ErrCommitStalled is returned by Close when the commit in progress
	// did not finish within Options.CloseTimeout: Pebble holds commits
	// while its memtables are full and cannot be flushed (a full disk).
	// Pebble is then left open; what was committed is in its write-ahead
	// log, and what was not was never acknowledged.
	ErrCommitStalled = errors.New("spool: commit stalled")
)

const (
	// MaxOpenFiles bounds the files Pebble keeps open (its default is
	// 1000); a daemon holding one descriptor per vehicle budgets for it.
	MaxOpenFiles = 500

	// DefaultMaxPendingBytes is used when Options.MaxPendingBytes is 0.
	DefaultMaxPendingBytes = 4 << 20
	// maxPendingLimit keeps a batch far below Pebble's 4 GiB batch limit,
	// beyond which Batch.grow panics.
	maxPendingLimit = 1 << 30
	recKeyLen       = 10
	metaLen         = 24
)

var (
	metaKey      = []byte("m/meta")
	cursorPrefix = []byte("c/")
	// recUpper is the first key after every r/ key ('0' follows '/').
	recUpper = []byte("r0")
)

// Options configures Open.
type Options struct {
	// Dir is the data directory; it is created if missing.
	Dir string
	// MaxBytes is the budget for live record bytes (key plus encoded
	// value); 0 means unlimited. Append returns ErrFull while a record would
	// exceed it.
	MaxBytes int64
	// MaxPendingBytes bounds the bytes appended but not yet committed
	// (default DefaultMaxPendingBytes, at most 1 GiB); beyond it Append
	// returns ErrBusy.
	MaxPendingBytes int
	// Consumers names the cursors (forwarders) known at open. A record is
	// trimmed only once every one of them has passed it; with no consumers
	// nothing is ever trimmed.
	Consumers []string
	// Logger receives the spool's and Pebble's log lines; nil means
	// slog.Default().
	Logger *slog.Logger

	// MinFreeBytes is a floor on the free space of the file system holding
	// Dir: below it Append returns ErrFull (checked every 250 ms). What
	// remains is for the writes that free space (cursor updates and trims,
	// Pebble's flushes and compactions) and for the records already
	// appended, so a disk filled by a backlog drains on its own once the
	// sinks are back, instead of failing commits. 0 disables the check.
	MinFreeBytes int64

	// PreallocateLogs keeps a write-ahead log file written ahead of need
	// (a memtable's size, ~17 MiB, in the spool directory), so that commits
	// overwrite it instead of growing a new file: each commit's fdatasync
	// then has no file size to make durable. The daemon sets it; the file
	// is only written while the disk has three times its size free.
	PreallocateLogs bool

	// CloseTimeout bounds how long Close waits for the commit in progress.
	// A commit stalled on a full disk would otherwise hold Close until
	// space is freed. 0 means 30 s.
	CloseTimeout time.Duration

	// FS is the file system Pebble works on (nil: the operating system's).
	// Tests use an in-memory one that can inject errors or show what a
	// crash would leave (vfs.NewCrashableMem).
	FS vfs.FS
	// freeSpace replaces the free-space probe in tests.
	freeSpace func(dir string) (int64, error)
}

// Waiter learns when appended records are durable.
//
// Committed is called from the spool's committer goroutine, once per record,
// in append order, after the batch holding the record was committed with
// pebble.Sync; err != nil if the commit failed, and then nothing of that
// batch is durable. It must not block.
type Waiter interface {
	Committed(token uint64, seq uint64, err error)
}

// Stats is a snapshot of the committed contents of the spool.
type Stats struct {
	Records            int64             // live committed records, quarantined ones included
	Bytes              int64             // their bytes (keys plus values), against Options.MaxBytes
	QuarantinedRecords int64             // records sinks refused for good, kept aside
	QuarantinedBytes   int64             // their bytes
	FirstSeq           uint64            // oldest live record, 0 if empty
	LastSeq            uint64            // last committed seq
	OldestReceivedAtMs int64             // ReceivedAtMs of FirstSeq, 0 if empty
	Cursors            map[string]uint64 // every persisted cursor
}

type waitEntry struct {
	w     Waiter
	token uint64
	seq   uint64 // 0 for internal waiters (SetCursor), which carry no record
}

// Spool is a Pebble-backed write-ahead spool. Its methods are safe for
// concurrent use.
type Spool struct {
	opts       Options
	log        *slog.Logger
	maxPending int

	// dbMu guards db against the committer replacing it after a failed
	// commit and against Close; readers hold it shared. db is nil while a
	// reopen is retrying.
	dbMu sync.RWMutex
	db   *pebble.DB

	// trimMu serializes trims so that freed bytes are counted once.
	trimMu   sync.Mutex
	trimKick chan struct{} // 1-buffered: a cursor moved, trim

	// mu guards the append side and the state below.
	mu           sync.Mutex
	pending      *pebble.Batch
	pendingW     []waitEntry
	pendingBytes int
	pendingRecs  int
	spare        *pebble.Batch // the batch being committed returns here
	spareW       []waitEntry
	nextSeq      uint64
	liveBytes    int64 // committed plus pending, for the budget
	liveRecords  int64
	trimmedTo    uint64              // every record with seq <= trimmedTo is deleted (or staged to be)
	cursors      map[string]uint64   // as committed
	passed       map[string][]uint64 // as committed (SetPassed)
	// staged waits for the next commit; stagedTimer: a commit for it is
	// scheduled (CursorCommitDelay), stagedDue: that time has come.
	staged                 staged
	stagedTimer, stagedDue bool
	quarantineBytes        int64 // part of liveBytes
	quarantineRecords      int64 // part of liveRecords
	statBytes              int64 // as of the last successful commit
	statRecords            int64
	statQBytes             int64 // quarantined, as of the last successful commit
	statQRecords           int64
	closed                 bool
	degraded               bool // a commit failed and the DB is being reopened
	// waitingForRoom is set while the reopen waits for free space.
	waitingForRoom atomic.Bool

	closeOnce sync.Once
	closeErr  error

	committedSeq atomic.Uint64
	notify       atomic.Pointer[chan struct{}]

	bgErrs  backgroundErrorLog
	lowDisk atomic.Bool // the last probe saw free space under Options.MinFreeBytes (for its log lines)
	// freeAtProbe is the free space the last probe saw, and
	// appendedSinceProbe the bytes appended since (both under mu): between
	// probes Append refuses once what it took may have used up the room
	// above the floor, so a burst cannot fill the disk before the next
	// probe (250 ms) notices. With preallocated logs this is pessimistic,
	// and the next probe corrects it. Until a probe succeeds it is
	// unknown, and nothing is refused for it.
	freeAtProbe        int64
	appendedSinceProbe int64
	fs                 vfs.FS
	walFS              *preallocWALFS // nil without Options.PreallocateLogs

	kick    chan struct{} // wakes the committer; 1-buffered
	closing chan struct{} // closed by Close, stops reopen retries
	done    chan struct{} // closed when the committer exits
}

// diskState is what Open (and a reopen) reads back from Pebble.
type diskState struct {
	hwm, bytes, records uint64
	firstSeq            uint64 // 0 if no records
	cursors             map[string]uint64
	passed              map[string][]uint64
	qBytes, qRecords    uint64 // quarantined, part of bytes and records
}

// Open opens or creates the spool in o.Dir and starts its committer.
func Open(o Options) (*Spool, error) {
	if o.Dir == "" {
		return nil, errors.New("spool: open: Options.Dir is empty")
	}
	if o.MaxBytes < 0 {
		return nil, fmt.Errorf("spool: open %s: negative MaxBytes %d", o.Dir, o.MaxBytes)
	}
	if o.MaxPendingBytes == 0 {
		o.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if o.MaxPendingBytes < 0 || o.MaxPendingBytes > maxPendingLimit {
		return nil, fmt.Errorf("spool: open %s: MaxPendingBytes %d out of range (0, %d]", o.Dir, o.MaxPendingBytes, maxPendingLimit)
	}
	for _, c := range o.Consumers {
		if c == "" {
			return nil, fmt.Errorf("spool: open %s: empty consumer name", o.Dir)
		}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil && o.FS == nil {
		return nil, fmt.Errorf("spool: open %s: %w", o.Dir, err)
	}
	s := &Spool{
		opts:        o,
		log:         o.Logger.With("component", "spool", "dir", o.Dir),
		maxPending:  o.MaxPendingBytes,
		kick:        make(chan struct{}, 1),
		trimKick:    make(chan struct{}, 1),
		staged:      staged{cursors: map[string]uint64{}, passed: map[string][]uint64{}},
		closing:     make(chan struct{}),
		done:        make(chan struct{}),
		freeAtProbe: math.MaxInt64 / 2,
	}
	s.bgErrs = backgroundErrorLog{log: s.log, interval: 10 * time.Second, maxPause: 500 * time.Millisecond}
	if need, free, ok := s.reopenRoom(); ok && free < need {
		return nil, fmt.Errorf("spool: open %s: %w: %d bytes free, %d needed to replay the write-ahead logs",
			o.Dir, ErrDiskFull, free, need)
	}
	s.fs = o.FS
	if s.fs == nil {
		s.fs = vfs.Default
	}
	if o.PreallocateLogs {
		if err := os.MkdirAll(o.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("spool: open %s: %w", o.Dir, err)
		}
		s.walFS = newPreallocWALFS(s.fs, o.Dir, int64(s.memTableSize())+1<<20, s.log)
		s.fs = s.walFS
	}
	db, st, err := s.openDB()
	if err != nil {
		if s.walFS != nil {
			s.walFS.close()
		}
		return nil, err
	}
	s.db = db
	s.install(st)
	if o.MinFreeBytes > 0 {
		s.checkFreeSpace()
		go s.watchFreeSpace()
	}
	ch := make(chan struct{})
	s.notify.Store(&ch)
	s.log.Info("spool opened", "records", st.records, "bytes", st.bytes, "first_seq", st.firstSeq, "last_seq", st.hwm)
	go s.run()
	go s.trimLoop()
	return s, nil
}

func (s *Spool) memTableSize() uint64 { return uint64(max(16<<20, 2*s.maxPending+1<<20)) }

func (s *Spool) pebbleOptions() *pebble.Options {
	o := &pebble.Options{
		// Bounded so the daemon can reserve descriptors for it and give
		// the rest to vehicle connections (see netloop's MaxConnections).
		MaxOpenFiles:       MaxOpenFiles,
		Logger:             pebbleLogger{l: s.log},
		FormatMajorVersion: pebble.FormatNewest,
		// Batches up to MaxPendingBytes should go through the memtable, not
		// become flushable batches (threshold is half the memtable size),
		// which would force a flush per commit.
		MemTableSize:  s.memTableSize(),
		FS:            s.fs,
		EventListener: &pebble.EventListener{BackgroundError: s.bgErrs.report},
	}
	// No block compression: records live seconds when the sinks keep up,
	// and snappy at flush, compaction and read was a tenth of the daemon's
	// CPU per record. A backlog takes about 1.5x the disk space instead.
	o.ApplyCompressionSettings(func() pebble.DBCompressionSettings { return pebble.DBCompressionNone })
	return o
}

// openDB opens Pebble and reads the state back. It is used by Open and by
// the committer after a failed commit.
func (s *Spool) openDB() (*pebble.DB, diskState, error) {
	db, err := pebble.Open(s.opts.Dir, s.pebbleOptions())
	if err != nil {
		return nil, diskState{}, fmt.Errorf("spool: open %s: %w", s.opts.Dir, err)
	}
	st, err := loadState(db)
	if err != nil {
		_ = db.Close()
		return nil, diskState{}, fmt.Errorf("spool: open %s: %w", s.opts.Dir, err)
	}
	return db, st, nil
}

func loadState(db *pebble.DB) (diskState, error) {
	st := diskState{cursors: map[string]uint64{}, passed: map[string][]uint64{}}
	v, closer, err := db.Get(metaKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		// A new spool, or one written only by a crash before the first
		// commit: counted below from the records themselves.
	case err != nil:
		return st, fmt.Errorf("read meta: %w", err)
	default:
		if len(v) != metaLen {
			_ = closer.Close()
			return st, fmt.Errorf("corrupt meta: %d bytes, want %d", len(v), metaLen)
		}
		st.hwm = binary.BigEndian.Uint64(v[0:])
		st.bytes = binary.BigEndian.Uint64(v[8:])
		st.records = binary.BigEndian.Uint64(v[16:])
		_ = closer.Close()
	}
	switch qv, closer, err := db.Get(quarantineMetaKey); {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return st, fmt.Errorf("read quarantine meta: %w", err)
	default:
		if len(qv) != 16 {
			_ = closer.Close()
			return st, fmt.Errorf("corrupt quarantine meta: %d bytes, want 16", len(qv))
		}
		st.qBytes = binary.BigEndian.Uint64(qv[0:])
		st.qRecords = binary.BigEndian.Uint64(qv[8:])
		_ = closer.Close()
	}
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: cursorPrefix, UpperBound: []byte("c0")})
	if err != nil {
		return st, fmt.Errorf("read cursors: %w", err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return st, fmt.Errorf("read cursor %q: %w", it.Key()[2:], err)
		}
		if len(v) != 8 {
			_ = it.Close()
			return st, fmt.Errorf("corrupt cursor %q: %d bytes", it.Key()[2:], len(v))
		}
		st.cursors[string(it.Key()[2:])] = binary.BigEndian.Uint64(v)
	}
	if err := it.Close(); err != nil {
		return st, fmt.Errorf("read cursors: %w", err)
	}
	if err := loadPassed(db, st.passed); err != nil {
		return st, err
	}
	first, last, err := recordBounds(db)
	if err != nil {
		return st, err
	}
	st.firstSeq = first
	if err == nil && first != 0 && st.records == 0 && st.bytes == 0 {
		// Records without accounting cannot come from this code (meta is in
		// every batch), but counting them is cheap insurance.
		n, b, err := sizeRange(db, 0, math.MaxUint64)
		if err != nil {
			return st, err
		}
		st.records, st.bytes = uint64(n), uint64(b)
	}
	st.hwm = max(st.hwm, last)
	return st, nil
}

// recordBounds returns the first and last record seqs, 0 if there are none.
func recordBounds(db *pebble.DB) (first, last uint64, err error) {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte("r/"), UpperBound: recUpper})
	if err != nil {
		return 0, 0, fmt.Errorf("scan records: %w", err)
	}
	if it.First() {
		if first, err = parseRecKey(it.Key()); err != nil {
			_ = it.Close()
			return 0, 0, err
		}
		if it.Last() {
			if last, err = parseRecKey(it.Key()); err != nil {
				_ = it.Close()
				return 0, 0, err
			}
		}
	}
	if err := it.Close(); err != nil {
		return 0, 0, fmt.Errorf("scan records: %w", err)
	}
	return first, last, nil
}

// install sets the in-memory state from st. Called with mu held or before
// the committer runs.
func (s *Spool) install(st diskState) {
	s.nextSeq = max(s.nextSeq, st.hwm+1)
	s.liveBytes, s.statBytes = int64(st.bytes), int64(st.bytes)
	s.liveRecords, s.statRecords = int64(st.records), int64(st.records)
	if st.firstSeq != 0 {
		s.trimmedTo = st.firstSeq - 1
	} else {
		s.trimmedTo = st.hwm
	}
	s.cursors = st.cursors
	s.passed = st.passed
	s.quarantineBytes, s.quarantineRecords = int64(st.qBytes), int64(st.qRecords)
	s.statQBytes, s.statQRecords = int64(st.qBytes), int64(st.qRecords)
	s.committedSeq.Store(max(s.committedSeq.Load(), st.hwm))
	// A batch doubles as it grows, so a full one can have twice
	// MaxPendingBytes of capacity; keep it rather than reallocate per fill.
	bopts := []pebble.BatchOption{pebble.WithMaxRetainedSizeBytes(2*s.maxPending + 1<<20)}
	s.pending, s.spare = s.db.NewBatch(bopts...), s.db.NewBatch(bopts...)
	s.pendingW, s.spareW = s.pendingW[:0], s.spareW[:0]
	s.pendingBytes, s.pendingRecs = 0, 0
	bytesGauge.Set(float64(st.bytes))
	recordsGauge.Set(float64(st.records))
}

func putRecKey(k []byte, seq uint64) {
	k[0], k[1] = 'r', '/'
	binary.BigEndian.PutUint64(k[2:], seq)
}

func recKey(seq uint64) []byte {
	k := make([]byte, recKeyLen)
	putRecKey(k, seq)
	return k
}

func parseRecKey(k []byte) (uint64, error) {
	if len(k) != recKeyLen || k[0] != 'r' || k[1] != '/' {
		return 0, fmt.Errorf("spool: corrupt record key %q", k)
	}
	return binary.BigEndian.Uint64(k[2:]), nil
}

// recKeyAfter returns the key after every record with seq <= seq.
func recKeyAfter(seq uint64) []byte {
	if seq == math.MaxUint64 {
		return recUpper
	}
	return recKey(seq + 1)
}

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
			err = s.commit(b)
		}
		commitDuration.UpdateDuration(start)
		commitRecords.Update(float64(nrec))
		if err != nil {
			s.fail(err, ws, st)
			continue
		}
		commitsTotal.Inc()
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

// fail handles a failed commit: it reports err to the batch's waiters, fails
// what was appended meanwhile (it was bound to the broken DB) and reopens
// Pebble, retrying with backoff until it opens or Close is called. Appends
// get ErrBusy meanwhile.
func (s *Spool) fail(err error, ws []waitEntry, lost staged) {
	commitErrorsTotal.Inc()
	s.log.Error("spool commit failed; reopening", "err", err, "waiters", len(ws))
	// Degraded before anyone hears of the failure: an append made in
	// reaction to it must get ErrBusy, not join the batches abandoned here.
	s.mu.Lock()
	s.degraded = true
	later := s.pendingW
	s.pendingW, s.spareW = nil, nil
	s.pending, s.spare = nil, nil
	s.mu.Unlock()
	for _, e := range ws {
		if e.w != nil {
			e.w.Committed(e.token, e.seq, err)
		}
	}
	abandoned := fmt.Errorf("spool: commit abandoned after an earlier failure: %w", err)
	for _, e := range later {
		if e.w != nil {
			e.w.Committed(e.token, e.seq, abandoned)
		}
	}

	s.dbMu.Lock()
	old := s.db
	s.db = nil
	s.dbMu.Unlock()
	closeQuietly(old, s.log)

	degradedGauge.Set(1)
	defer degradedGauge.Set(0)
	backoff := 100 * time.Millisecond
	defer s.waitingForRoom.Store(false)
	for {
		if need, free, ok := s.reopenRoom(); ok && free < need {
			if !s.waitingForRoom.Swap(true) {
				s.log.Warn("disk too full to reopen the spool; waiting for free space",
					"free_bytes", free, "need_bytes", need)
			}
			select {
			case <-s.closing:
				return
			case <-time.After(min(backoff, time.Second)):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		db, st, err := s.openDB()
		if err == nil {
			s.dbMu.Lock()
			s.db = db
			s.dbMu.Unlock()
			s.mu.Lock()
			s.install(st)
			s.restage(lost)
			s.degraded = false
			s.mu.Unlock()
			s.log.Info("spool reopened after commit failure", "last_seq", st.hwm)
			return
		}
		s.log.Error("spool reopen failed", "err", err, "retry_in", backoff)
		select {
		case <-s.closing:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// watchFreeSpace refreshes the low-disk flag Append reads until Close.
func (s *Spool) watchFreeSpace() {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.closing:
			return
		case <-t.C:
			s.checkFreeSpace()
		}
	}
}

// checkFreeSpace sets the low-disk flag from the file system's free space
// and logs when it changes.
func (s *Spool) checkFreeSpace() {
	free, err := s.diskFree()
	if err != nil {
		return // the last probe's figure stands, counting appends since
	}
	freeGauge.Set(float64(free))
	s.mu.Lock()
	s.freeAtProbe, s.appendedSinceProbe = free, 0
	s.mu.Unlock()
	low := free < s.opts.MinFreeBytes
	if s.lowDisk.Swap(low) == low {
		return
	}
	if low {
		s.log.Warn("spool: free disk space under the floor; refusing new records", "free_bytes", free, "min_free_bytes", s.opts.MinFreeBytes)
	} else {
		s.log.Info("spool: free disk space back above the floor; taking records", "free_bytes", free, "min_free_bytes", s.opts.MinFreeBytes)
	}
}

// diskFree is freeSpace of the spool's directory (or the tests' stand-in).
func (s *Spool) diskFree() (int64, error) {
	if s.opts.freeSpace != nil {
		return s.opts.freeSpace(s.opts.Dir)
	}
	return freeSpace(s.opts.Dir)
}

// freeSpace is the space unprivileged writers may still use on the file
// system holding dir.
func freeSpace(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("spool: statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// reopenRoom says how much free space opening the spool needs and how much
// its file system has (ok is false where that cannot be told). Opening
// replays the write-ahead logs into a memtable and flushes it to an
// sstable; with too little room that flush fails, and Pebble retries it
// for as long as the disk stays full, inside Open (which Close would then
// wait for). So the reopen after a failed commit waits for room, and Open
// refuses with ErrDiskFull: the logs' size, at most a memtable's, plus
// 1 MiB for the manifest. (Recycled logs count at their full size, so
// this asks for up to ~17 MiB more than a replay may need.)
func (s *Spool) reopenRoom() (need, free uint64, ok bool) {
	avail, err := s.diskFree()
	if err != nil {
		return 0, 0, false
	}
	entries, err := os.ReadDir(s.opts.Dir)
	if err != nil {
		return 0, 0, false
	}
	var logs uint64
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		if fi, err := e.Info(); err == nil {
			logs += uint64(fi.Size())
		}
	}
	return min(logs, s.memTableSize()) + 1<<20, uint64(max(avail, 0)), true
}

// closeQuietly closes a DB whose commit failed. Pebble may return an error
// or panic there (the failed batch is still queued); the files on disk are
// what counts and the reopen replays them.
func closeQuietly(db *pebble.DB, log *slog.Logger) {
	defer func() {
		if r := recover(); r != nil {
			log.Warn("closing failed pebble DB panicked", "panic", r)
		}
	}()
	if err := db.Close(); err != nil {
		log.Warn("closing failed pebble DB", "err", err)
	}
}

func (s *Spool) signal() {
	ch := make(chan struct{})
	old := s.notify.Swap(&ch)
	close(*old)
}

// Committed returns a channel that is closed after the next successful
// commit (and at Close). Take the channel before checking LastSeq so that
// no commit is missed:
//
//	ch := s.Committed()
//	if s.LastSeq() < want { <-ch }
func (s *Spool) Committed() <-chan struct{} {
	return *s.notify.Load()
}

// LastSeq returns the last committed seq, 0 if none.
func (s *Spool) LastSeq() uint64 { return s.committedSeq.Load() }

// errBusyDiskFull is ErrBusy while the reopen waits for free space.
var errBusyDiskFull = fmt.Errorf("%w: reopening waits for free space (%w)", ErrBusy, ErrDiskFull)

// getDB returns the DB with dbMu read-locked; the caller must RUnlock.
func (s *Spool) getDB() (*pebble.DB, error) {
	s.dbMu.RLock()
	if s.db == nil {
		s.dbMu.RUnlock()
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		if s.waitingForRoom.Load() {
			return nil, errBusyDiskFull
		}
		return nil, ErrBusy
	}
	return s.db, nil
}

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

type chanWaiter chan error

func (c chanWaiter) Committed(_, _ uint64, err error) { c <- err }

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

// Stats returns a snapshot of the committed contents.
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
	if seq, ms, err := s.first(); err == nil {
		st.FirstSeq, st.OldestReceivedAtMs = seq, ms
	} else {
		s.log.Warn("spool stats: reading oldest record", "err", err)
	}
	return st
}

// Close stops accepting appends, commits what is pending (reporting to its
// waiters) and closes Pebble. It is idempotent; later calls return the
// first call's result.
func (s *Spool) Close() error {
	s.closeOnce.Do(s.close)
	return s.closeErr
}

func (s *Spool) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	close(s.closing)
	s.wake()
	wait := s.opts.CloseTimeout
	if wait <= 0 {
		wait = 30 * time.Second
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-s.done:
	case <-timer.C:
		// The committer is blocked inside Pebble's commit. Closing Pebble
		// would block behind it; the process is about to exit anyway.
		s.closeErr = fmt.Errorf("spool: close %s: no commit finished in %s (disk full?); records not committed were not acknowledged: %w",
			s.opts.Dir, wait, ErrCommitStalled)
		s.log.Error("spool commit stalled at close; leaving the store open", "waited", wait)
		// Wake whoever waits for a commit. Not by closing the current
		// channel for good, as below: the committer may still finish and
		// signal.
		s.signal()
		return
	}

	s.dbMu.Lock()
	if s.db != nil {
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("spool: close %s: %w", s.opts.Dir, err)
		}
		s.db = nil
	}
	s.dbMu.Unlock()
	if s.walFS != nil {
		s.walFS.close()
	}
	s.mu.Lock()
	// Drop the batches: they belong to the closed DB.
	s.pending, s.spare = nil, nil
	s.mu.Unlock()
	close(*s.notify.Load())
}

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
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
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
	topics       topicTable

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
	s.topics.openHWM.Store(max(s.topics.openHWM.Load(), st.hwm))
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
		s.topics.signalAll()
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
	s.topics.closeAll()
	close(*s.notify.Load())
}

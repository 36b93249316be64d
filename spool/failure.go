package spool

// A failed commit: its waiters hear of it, appends get ErrBusy, and the
// store is reopened (waiting for disk space when it must) until it opens
// or Close is called.

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

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

package spool

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sys/unix"
)

// spareWALName is the file preallocWALFS keeps ready for Pebble's next new
// write-ahead log. Pebble ignores files whose names it does not know.
const spareWALName = "fleet-spare-wal"

// preallocWALFS makes the write-ahead logs Pebble creates overwrite a file
// already written (with zeros) to a memtable's size, as Pebble's recycled
// logs do. An fdatasync after an append to a growing file must also make
// its new size durable, a journal commit; after an overwrite of written
// blocks it flushes the data alone (BenchmarkFdatasync: written vs
// append). Pebble recycles a log only once a memtable it held has been
// flushed, so without this every commit in the first two memtables' worth
// of records after each start pays that extra cost.
//
// One spare file is kept: a new log takes it (a rename, which Pebble's own
// sync of the log directory makes durable), and the next spare is written
// in the background. Pebble's log reader treats the zeros after the last
// record like the stale tail of a recycled log: the end of the log.
type preallocWALFS struct {
	vfs.FS
	dir  string
	size int64
	log  *slog.Logger

	mu        sync.Mutex
	ready     bool // the spare is complete and durable
	preparing bool
	closed    bool
	wg        sync.WaitGroup
}

// newPreallocWALFS wraps fs for the spool in dir. It writes the spare now
// if there is none, so a new spool's first log gets one too.
func newPreallocWALFS(fs vfs.FS, dir string, size int64, log *slog.Logger) *preallocWALFS {
	p := &preallocWALFS{FS: fs, dir: dir, size: size, log: log}
	if fi, err := fs.Stat(p.sparePath()); err == nil && fi.Size() >= size {
		p.ready = true
		return p
	}
	p.preparing = true
	p.wg.Add(1)
	p.prepare(0) // at open no log is live: no pause
	return p
}

func (p *preallocWALFS) sparePath() string { return filepath.Join(p.dir, spareWALName) }

// Create implements vfs.FS: a new write-ahead log in the spool's directory
// takes the spare when one is ready.
func (p *preallocWALFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	if !strings.HasSuffix(name, ".log") || filepath.Dir(name) != filepath.Clean(p.dir) || !p.takeSpare() {
		return p.FS.Create(name, category)
	}
	f, err := p.FS.ReuseForWrite(p.sparePath(), name, category)
	if err != nil {
		p.log.Warn("spool: could not use the preallocated log file; creating a new one", "err", err)
		return p.FS.Create(name, category)
	}
	p.startPrepare()
	return f, nil
}

func (p *preallocWALFS) takeSpare() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.ready {
		p.startPrepareLocked()
		return false
	}
	p.ready = false
	return true
}

func (p *preallocWALFS) startPrepare() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.startPrepareLocked()
}

func (p *preallocWALFS) startPrepareLocked() {
	if p.ready || p.preparing || p.closed {
		return
	}
	p.preparing = true
	p.wg.Add(1)
	go p.prepare(spareChunkPause)
}

// prepare writes the spare: allocated first, so a disk without room says so
// at once instead of being filled, then zeros, fsync, rename into place. It
// leaves a disk with less than three times its size free alone, so that it
// never takes the room the records need.
func (p *preallocWALFS) prepare(pause time.Duration) {
	defer p.wg.Done()
	err := p.write(pause)
	p.mu.Lock()
	p.preparing = false
	p.ready = err == nil
	p.mu.Unlock()
	switch {
	case err == nil:
	case errors.Is(err, errSpoolClosing):
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, errNoRoomForSpare):
		p.log.Debug("spool: no room for a preallocated log file", "err", err)
	default:
		p.log.Warn("spool: preallocating a log file failed; new logs grow as they are written", "err", err)
	}
}

var (
	errNoRoomForSpare = errors.New("too little free space")
	errSpoolClosing   = errors.New("spool closing")
)

func (p *preallocWALFS) write(pause time.Duration) error {
	if free, err := freeSpace(p.dir); err == nil && free < 3*p.size {
		return errNoRoomForSpare
	}
	tmp := p.sparePath() + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("spool: spare log: %w", err)
	}
	err = p.fill(f, pause)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p.sparePath())
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("spool: spare log %s: %w", tmp, err)
	}
	return nil
}

func (p *preallocWALFS) fill(f *os.File, pause time.Duration) error {
	if err := unix.Fallocate(int(f.Fd()), 0, 0, p.size); err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < p.size; off += int64(len(zeros)) {
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		if closed {
			return errSpoolClosing
		}
		n := min(int64(len(zeros)), p.size-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return err
		}
		// Write each chunk out before the next and pause between them:
		// one fdatasync of the whole file at the end would put a
		// memtable's worth of writes in front of the live log's next
		// commits (measured: 5-7 ms fdatasyncs of the log at each
		// rotation), where these leave gaps for them.
		if err := unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER); err != nil && !errors.Is(err, unix.ENOSYS) {
			return err
		}
		time.Sleep(pause)
	}
	return unix.Fdatasync(int(f.Fd()))
}

// spareChunkPause is the pause between the spare log's 1 MiB chunks
// while a live log is being committed to.
const spareChunkPause = 2 * time.Millisecond

// close waits for a spare being written (which stops early).
func (p *preallocWALFS) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.wg.Wait()
}

package spool

// The free-space floor (Options.MinFreeBytes): a probe every 250 ms, and
// appends counted against the room it saw.

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

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

// DiskFree is the space unprivileged writers may still use on the file
// system holding the spool (a statfs now, whether or not MinFreeBytes
// is set).
func (s *Spool) DiskFree() (int64, error) { return s.diskFree() }

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

// Package diskfloor measures a file system's own commit latency: small
// writes into a file written ahead, each followed by fdatasync, the way
// the daemon's spool commits into its preallocated write-ahead log. Its
// percentiles are the floor the daemon's ack latency stands on: no
// daemon acks a record faster than the disk makes it durable.
package diskfloor

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fleet-telemetry/fleet-telemetry/bench/internal/hist"
)

// Options shape a probe.
type Options struct {
	// Dir is where the probe's file goes: the spool's file system.
	Dir string
	// Duration bounds the probe (default 2s).
	Duration time.Duration
	// WriteBytes is written before each fdatasync (default 600, about a
	// commit of one record).
	WriteBytes int
	// FileBytes is the file written ahead and overwritten round and round
	// (default 4 MiB).
	FileBytes int
}

// Result is a probe's fdatasync latencies.
type Result struct {
	Syncs          int
	P50, P99, P999 time.Duration
	Max            time.Duration
}

func (r Result) String() string {
	return fmt.Sprintf("%d fdatasyncs: p50 %s p99 %s p99.9 %s max %s", r.Syncs,
		r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.P999.Round(time.Microsecond), r.Max.Round(time.Microsecond))
}

// Probe writes and fdatasyncs for o.Duration and records the latency of
// each write+fdatasync pair in h. The file is removed afterwards.
func Probe(o Options, h *hist.H) error {
	if o.Duration <= 0 {
		o.Duration = 2 * time.Second
	}
	if o.WriteBytes <= 0 {
		o.WriteBytes = 600
	}
	if o.FileBytes <= 0 {
		o.FileBytes = 4 << 20
	}
	f, err := os.CreateTemp(o.Dir, "disk-floor-*")
	if err != nil {
		return fmt.Errorf("disk floor: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	// Written and synced ahead: later commits overwrite blocks and have no
	// file size to make durable, as the spool's preallocated log.
	zeros := make([]byte, 64<<10)
	for off := 0; off < o.FileBytes; off += len(zeros) {
		if _, err := f.WriteAt(zeros, int64(off)); err != nil {
			return fmt.Errorf("disk floor: %w", err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("disk floor: %w", err)
	}
	buf := make([]byte, o.WriteBytes)
	for i := range buf {
		buf[i] = byte(i)
	}
	fd := int(f.Fd())
	off := 0
	end := time.Now().Add(o.Duration)
	for time.Now().Before(end) {
		start := time.Now()
		if _, err := f.WriteAt(buf, int64(off)); err != nil {
			return fmt.Errorf("disk floor %s: %w", filepath.Base(f.Name()), err)
		}
		if err := unix.Fdatasync(fd); err != nil {
			return fmt.Errorf("disk floor %s: %w", filepath.Base(f.Name()), err)
		}
		h.Record(int64(time.Since(start)))
		if off += len(buf); off+len(buf) > o.FileBytes {
			off = 0
		}
	}
	return nil
}

// Summarize reads a probe's histogram.
func Summarize(h *hist.H) Result {
	s := h.Snapshot()
	return Result{Syncs: int(s.Total), P50: time.Duration(s.Quantile(0.5)), P99: time.Duration(s.Quantile(0.99)),
		P999: time.Duration(s.Quantile(0.999)), Max: time.Duration(s.Max)}
}

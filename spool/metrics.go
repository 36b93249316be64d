package spool

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Metrics are package-level and created with the GetOrCreate functions so
// that a process (or a test) may open many spools without a duplicate
// registration panic. With several spools open the gauges show the one that
// updated last; the daemon opens exactly one.
var (
	appendedTotal     = metrics.GetOrCreateCounter(`fleet_spool_appended_total`)
	commitsTotal      = metrics.GetOrCreateCounter(`fleet_spool_commits_total`)
	commitErrorsTotal = metrics.GetOrCreateCounter(`fleet_spool_commit_errors_total`)
	refusedFull       = metrics.GetOrCreateCounter(`fleet_spool_refused_total{reason="full"}`)
	refusedBusy       = metrics.GetOrCreateCounter(`fleet_spool_refused_total{reason="busy"}`)
	refusedClosed     = metrics.GetOrCreateCounter(`fleet_spool_refused_total{reason="closed"}`)
	refusedTooLarge   = metrics.GetOrCreateCounter(`fleet_spool_refused_total{reason="too_large"}`)
	refusedLowDisk    = metrics.GetOrCreateCounter(`fleet_spool_refused_total{reason="low_disk"}`)
	freeGauge         = metrics.GetOrCreateGauge(`fleet_spool_disk_free_bytes`, nil)
	bytesGauge        = metrics.GetOrCreateGauge(`fleet_spool_bytes`, nil)
	recordsGauge      = metrics.GetOrCreateGauge(`fleet_spool_records`, nil)
	oldestAgeGauge    = metrics.GetOrCreateGauge(`fleet_spool_oldest_record_age_seconds`, nil)
	commitDuration    = metrics.GetOrCreateHistogram(`fleet_spool_commit_duration_seconds`)
	commitRecords     = metrics.GetOrCreateHistogram(`fleet_spool_commit_records`)
	backgroundErrors  = metrics.GetOrCreateCounter(`fleet_spool_background_errors_total`)
	degradedGauge     = metrics.GetOrCreateGauge(`fleet_spool_degraded`, nil)
)

// backgroundErrorLog counts Pebble's background errors (failed flushes and
// compactions) and logs them at most once per interval. Pebble retries a
// failed flush at once, without backoff: on a full disk that is thousands
// of identical errors a second, which would flood the journal.
type backgroundErrorLog struct {
	log      *slog.Logger
	interval time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (b *backgroundErrorLog) report(err error) {
	backgroundErrors.Inc()
	b.mu.Lock()
	now := time.Now()
	if now.Sub(b.last) < b.interval {
		b.suppressed++
		b.mu.Unlock()
		return
	}
	n := b.suppressed
	b.last, b.suppressed = now, 0
	b.mu.Unlock()
	b.log.Error("pebble background error (flush or compaction); retried", "err", err,
		"component", "pebble", "suppressed_since_last", n)
}

// pebbleLogger routes Pebble's log lines to slog.
//
// Fatalf panics instead of exiting: Pebble calls it when a commit fails
// (DB.Apply, after a WAL write or fsync error), and the committer recovers
// that panic so a full disk fails one batch instead of killing the daemon.
// Fatalf called from Pebble's own background goroutines still ends the
// process, which is what Pebble intends there.
type pebbleLogger struct{ l *slog.Logger }

type pebbleFatal struct{ msg string }

func (f pebbleFatal) Error() string { return f.msg }

func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "component", "pebble", "fatal", true)
	panic(pebbleFatal{msg: msg})
}

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
	// backgroundErrorPauses counts the pauses report put between quick
	// repeats of a failing flush or compaction.
	backgroundErrorPauses = metrics.GetOrCreateCounter(`fleet_spool_background_error_pauses_total`)
	degradedGauge         = metrics.GetOrCreateGauge(`fleet_spool_degraded`, nil)
)

// backgroundErrorLog counts Pebble's background errors (failed flushes and
// compactions), logs them at most once per interval (a failing flush would
// otherwise flood the journal), and paces a failure that repeats at once
// (see report).
type backgroundErrorLog struct {
	log      *slog.Logger
	interval time.Duration
	// maxPause bounds the pause between retries of a background error
	// that keeps failing (0: no pause).
	maxPause time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
	lastEnd    time.Time     // when the last report returned (after its pause)
	pause      time.Duration // the pause the next quick repeat gets
}

// Background errors closer together than retryGap are one failure being
// retried; after quietGap without one the pause starts small again.
const (
	retryGap      = 100 * time.Millisecond
	quietGap      = 5 * time.Second
	firstRetryGap = 10 * time.Millisecond
)

// report is Pebble's BackgroundError listener. It counts every error, logs
// at most one line per interval, and paces a failure that repeats at once.
//
// Pebble retries a failed flush immediately, with no backoff (a TODO in
// its DB.flush): on a full disk that is one core spinning through the same
// ENOSPC thousands of times a second. Pebble calls this listener on the
// flush goroutine, so sleeping here spaces its retries: 10 ms after the
// first quick repeat, doubling to maxPause. The sleep holds Pebble's DB
// mutex (commits that need a new memtable and Close wait for it), which is
// the price of not spinning while the disk is full.
func (b *backgroundErrorLog) report(err error) {
	backgroundErrors.Inc()
	b.mu.Lock()
	now := time.Now()
	var pause time.Duration
	switch gap := now.Sub(b.lastEnd); {
	case b.maxPause <= 0:
	case gap < retryGap:
		pause = min(max(b.pause, firstRetryGap), b.maxPause)
		b.pause = min(2*pause, b.maxPause)
	case gap > quietGap:
		b.pause = 0
	}
	if now.Sub(b.last) < b.interval {
		b.suppressed++
		b.mu.Unlock()
	} else {
		n := b.suppressed
		b.last, b.suppressed = now, 0
		b.mu.Unlock()
		b.log.Error("pebble background error (flush or compaction); retried", "err", err,
			"component", "pebble", "suppressed_since_last", n, "next_retry_after", pause)
	}
	if pause > 0 {
		backgroundErrorPauses.Inc()
		time.Sleep(pause)
	}
	b.mu.Lock()
	b.lastEnd = time.Now()
	b.mu.Unlock()
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

package spool

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/fleet-telemetry/fleet-telemetry/internal/testkit"
)

// diskFullFS fails the given operations on files whose names end in suffix
// with ENOSPC while armed is set.
func diskFullFS(armed *atomic.Bool, suffix string, kinds ...errorfs.OpKind) vfs.FS {
	return errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if armed.Load() && strings.HasSuffix(op.Path, suffix) && slices.Contains(kinds, op.Kind) {
			return syscall.ENOSPC
		}
		return nil
	}))
}

// TestCommitErrorKeepsGoing makes WAL writes fail as on a full disk: the
// batch's waiters get the error, the process survives, and once writes
// succeed again the spool reopens and continues with fresh seqs.
func TestCommitErrorKeepsGoing(t *testing.T) {
	var armed atomic.Bool
	fs := diskFullFS(&armed, ".log", errorfs.OpFileWrite, errorfs.OpFileSync)
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir, FS: fs})
	defer s.Close()
	if err := s.Append(testRecord(1), nil, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, s, 1)

	errsBefore := commitErrorsTotal.Get()
	armed.Store(true)
	w := make(chWaiter, 10)
	if err := s.Append(testRecord(2), w, 2); err != nil {
		t.Fatal(err)
	}
	rep := <-w
	if rep.err == nil || rep.seq != 2 {
		t.Fatalf("commit on a full disk reported %+v", rep)
	}
	if commitErrorsTotal.Get() != errsBefore+1 {
		t.Fatal("commit error not counted")
	}
	if s.LastSeq() != 1 {
		t.Fatalf("LastSeq %d after failed commit", s.LastSeq())
	}
	armed.Store(false)

	// Appends are refused (ErrBusy) until the reopen finished.
	deadline := time.Now().Add(10 * time.Second)
	r := testRecord(3)
	for {
		err := s.Append(r, w, 3)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			t.Fatalf("append after disk recovered: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	rep = <-w
	if rep.err != nil || rep.seq != 3 {
		t.Fatalf("commit after recovery reported %+v", rep)
	}
	got := readAll(t, s, 0)
	if len(got) != 2 || got[0].Seq != 1 || got[1].Seq != 3 || !sameRecord(&got[1], testRecord(3)) {
		t.Fatalf("records after recovery: %+v", got)
	}
}

// TestReadWhileWaitingForRoom: after a failed commit on a full disk the
// reopen waits for free space; meanwhile Read is refused with ErrBusy that
// also matches ErrDiskFull (so a drain at stop can give up at once), and
// once space returns the spool reopens and reads again.
func TestReadWhileWaitingForRoom(t *testing.T) {
	var armed atomic.Bool
	var free atomic.Int64
	free.Store(1 << 30)
	fs := diskFullFS(&armed, ".log", errorfs.OpFileWrite, errorfs.OpFileSync)
	s := openT(t, Options{Dir: t.TempDir(), FS: fs,
		freeSpace: func(string) (int64, error) { return free.Load(), nil }})
	defer s.Close()
	if err := s.Append(testRecord(1), nil, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, s, 1)

	armed.Store(true)
	free.Store(1 << 10)
	w := make(chWaiter, 1)
	if err := s.Append(testRecord(2), w, 2); err != nil {
		t.Fatal(err)
	}
	if rep := <-w; rep.err == nil {
		t.Fatal("commit on a full disk succeeded")
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		_, err := s.Read(1, 0, 0, nil)
		if errors.Is(err, ErrDiskFull) {
			if !errors.Is(err, ErrBusy) {
				t.Fatalf("Read while waiting for room: %v, want it to match ErrBusy too", err)
			}
			break
		}
		if (err != nil && !errors.Is(err, ErrBusy)) || time.Now().After(deadline) {
			t.Fatalf("Read while the reopen waits for room: %v, want ErrDiskFull", err)
		}
	}

	armed.Store(false)
	free.Store(1 << 30)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		got, err := s.Read(1, 0, 0, nil)
		if err == nil {
			if len(got) != 1 || got[0].Seq != 1 {
				t.Fatalf("records after the reopen: %+v", got)
			}
			break
		}
		if !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			t.Fatalf("Read once space returned: %v", err)
		}
	}
}

// TestSetCursorFailedCommitIsBusy: a cursor write whose commit fails (the
// disk filled) reports ErrBusy, as an append would, so a forwarder waits
// and sets it again instead of treating the spool as broken; once the
// spool has reopened the same cursor is set and trims.
func TestSetCursorFailedCommitIsBusy(t *testing.T) {
	var armed atomic.Bool
	fs := diskFullFS(&armed, ".log", errorfs.OpFileWrite, errorfs.OpFileSync)
	s := openT(t, Options{Dir: t.TempDir(), FS: fs, Consumers: []string{"sink"}})
	defer s.Close()
	for i := uint64(1); i <= 3; i++ {
		if err := s.Append(testRecord(i), nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, s, 3)

	armed.Store(true)
	err := s.SetCursor("sink", 2)
	if err == nil || !errors.Is(err, ErrBusy) {
		t.Fatalf("SetCursor on a failing disk: %v, want an error matching ErrBusy", err)
	}
	if !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("SetCursor error %q does not say why", err)
	}
	armed.Store(false)

	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.SetCursor("sink", 2)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			t.Fatalf("SetCursor after the disk recovered: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if c, err := s.Cursor("sink"); err != nil || c != 2 {
		t.Fatalf("cursor after recovery: %d, %v", c, err)
	}
	if got := readAll(t, s, 0); len(got) != 1 || got[0].Seq != 3 {
		t.Fatalf("records after the trim: %+v", got)
	}
}

// TestBackgroundErrorsPaced: an error that repeats at once (Pebble
// retrying a failed flush) is paused before its retry, 10 ms doubling to
// the maximum; after a quiet spell the pauses start small again.
func TestBackgroundErrorsPaced(t *testing.T) {
	var buf testkit.LockedBuffer
	b := backgroundErrorLog{log: slog.New(slog.NewTextHandler(&buf, nil)), interval: time.Hour, maxPause: 40 * time.Millisecond}
	pauses := func(n int) (took time.Duration, paused uint64) {
		p0, t0 := backgroundErrorPauses.Get(), time.Now()
		for range n {
			b.report(syscall.ENOSPC)
		}
		return time.Since(t0), backgroundErrorPauses.Get() - p0
	}
	// The first error is not paused; then 10, 20, 40, 40, 40 ms.
	if took, paused := pauses(6); paused != 5 || took < 150*time.Millisecond || took > 2*time.Second {
		t.Fatalf("6 quick errors: %d pauses in %v, want 5 in ~150 ms", paused, took)
	}
	// A repeat after the quiet gap starts again without a pause, and the
	// next quick one gets the smallest pause.
	b.lastEnd = time.Now().Add(-2 * quietGap)
	if took, paused := pauses(2); paused != 1 || took < firstRetryGap || took > 30*time.Millisecond+time.Second/2 {
		t.Fatalf("after a quiet spell: %d pauses in %v, want 1 of 10 ms", paused, took)
	}
	// Without maxPause nothing is paused.
	b = backgroundErrorLog{log: b.log, interval: time.Hour}
	if _, paused := pauses(100); paused != 0 {
		t.Fatalf("%d pauses without maxPause", paused)
	}
}

// TestBackgroundErrorsThrottled: Pebble's background errors are all
// counted but logged at most once per interval, the next line saying how
// many were left out.
func TestBackgroundErrorsThrottled(t *testing.T) {
	var buf testkit.LockedBuffer
	b := backgroundErrorLog{log: slog.New(slog.NewTextHandler(&buf, nil)), interval: time.Hour}
	before := backgroundErrors.Get()
	for i := 0; i < 1000; i++ {
		b.report(syscall.ENOSPC)
	}
	if got := backgroundErrors.Get() - before; got != 1000 {
		t.Fatalf("counted %d of 1000 background errors", got)
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 {
		t.Fatalf("%d log lines for 1000 errors in one interval:\n%s", n, buf.String())
	}
	b.last = time.Now().Add(-2 * time.Hour)
	b.report(syscall.ENOSPC)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "suppressed_since_last=999") || !strings.Contains(lines[1], "no space left") {
		t.Fatalf("the line after the interval: %q", lines)
	}
}

// TestFlushFailureStallsWithoutLoss: the write-ahead log has room (it is
// preallocated, or a reused one) but sstables cannot be written, as on a
// full disk. Pebble retries its flushes, commits stall once the memtables
// are full, appends are refused with ErrBusy instead of piling up, no
// commit reports success it did not have, and everything committed or
// appended is there once writes succeed again.
func TestFlushFailureStallsWithoutLoss(t *testing.T) {
	var armed atomic.Bool
	fs := diskFullFS(&armed, ".sst", errorfs.OpFileWrite)
	s := openT(t, Options{Dir: t.TempDir(), FS: fs, MaxPendingBytes: 1 << 20, PreallocateLogs: true})
	defer s.Close()
	armed.Store(true)
	r := benchRecord() // ~600 bytes
	w := make(chWaiter, 1<<20)
	appended := uint64(0)
	busy := false
	for deadline := time.Now().Add(60 * time.Second); !busy; {
		err := s.Append(r, w, appended+1)
		switch {
		case err == nil:
			appended++
		case errors.Is(err, ErrBusy):
			// Either the committer is behind, or the stall: wait and see.
			time.Sleep(200 * time.Millisecond)
			busy = s.Append(r, w, appended+1) != nil
			if !busy {
				appended++
			}
		default:
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stall after %d records with failing flushes", appended)
		}
	}
	committedWhileStalled := s.LastSeq()
	if committedWhileStalled >= appended {
		t.Fatalf("all %d records committed although flushes fail", appended)
	}
	if backgroundErrors.Get() == 0 {
		t.Fatal("failed flushes not counted")
	}
	// Pebble retries the failing flush at once; the listener's pauses
	// space the retries (10 ms doubling to 500 ms) instead of a core
	// spinning through thousands of ENOSPCs a second.
	time.Sleep(time.Second) // past the pauses' ramp
	errs0 := backgroundErrors.Get()
	time.Sleep(2 * time.Second)
	if n := backgroundErrors.Get() - errs0; n < 1 || n > 10 {
		t.Fatalf("%d failed flushes in 2 s; want a paced retry (about 4)", n)
	}
	t.Logf("stalled: %d appended, %d committed", appended, committedWhileStalled)

	armed.Store(false)
	waitForTimeout(t, s, appended, 60*time.Second)
	for i := uint64(0); i < appended; i++ {
		if rep := <-w; rep.err != nil {
			t.Fatalf("record %d: %v", rep.token, rep.err)
		}
	}
	if got := readAll(t, s, 0); uint64(len(got)) != appended {
		t.Fatalf("%d records read back, %d appended", len(got), appended)
	}
}

// TestMinFreeBytes: under the free-space floor appends are refused with
// ErrFull (and counted), while cursor updates still commit and trim; above
// it appends are taken again.
func TestMinFreeBytes(t *testing.T) {
	var free atomic.Int64
	free.Store(1 << 30)
	s := openT(t, Options{Dir: t.TempDir(), MinFreeBytes: 64 << 20, Consumers: []string{"sink"},
		freeSpace: func(string) (int64, error) { return free.Load(), nil }})
	defer s.Close()
	for i := uint64(1); i <= 3; i++ {
		if err := s.Append(testRecord(i), nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, s, 3)

	refused := refusedLowDisk.Get()
	free.Store(10 << 20)
	appended := uint64(3)
	// The floor is checked every 250 ms: appends go on until then.
	for deadline := time.Now().Add(5 * time.Second); ; {
		err := s.Append(testRecord(9), nil, 0)
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("Append under the floor: %v, want ErrFull", err)
		}
		appended++
		time.Sleep(20 * time.Millisecond)
	}
	if refusedLowDisk.Get() == refused {
		t.Fatal("low-disk refusal not counted")
	}
	waitFor(t, s, appended)
	if err := s.SetCursor("sink", appended); err != nil {
		t.Fatalf("cursor update under the floor: %v", err)
	}
	if got := readAll(t, s, 0); len(got) != 0 {
		t.Fatalf("%d records left after trimming every one", len(got))
	}
	free.Store(1 << 30)
	appendOnceFreed(t, s, testRecord(9))
}

// appendOnceFreed appends r, retrying for up to 5 s while the spool
// answers ErrFull (until its next free-space probe).
func appendOnceFreed(t *testing.T, s *Spool, r *Record) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; {
		err := s.Append(r, nil, 0)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrFull) || time.Now().After(deadline) {
			t.Fatalf("Append after the next free-space probe: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMinFreeBytesBurst: between two probes of the free space (250 ms) a
// burst of appends cannot take more than the room above the floor that
// the last probe saw; the next probe resets the count.
func TestMinFreeBytesBurst(t *testing.T) {
	const floor = 64 << 20
	var free atomic.Int64
	free.Store(floor + 100<<10) // 100 KiB above the floor
	s := openT(t, Options{Dir: t.TempDir(), MinFreeBytes: floor,
		freeSpace: func(string) (int64, error) { return free.Load(), nil }})
	defer s.Close()
	r := benchRecord() // ~600 bytes
	taken := 0
	for {
		err := s.Append(r, nil, 0)
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if taken++; taken > 1000 {
			t.Fatal("1000 records (~600 KB) taken with 100 KiB above the floor")
		}
	}
	if taken < 100 || taken > 180 {
		t.Fatalf("%d records of ~600 bytes taken with 100 KiB above the floor", taken)
	}
	// The next probe sees the space the records really took (here: none,
	// as with a preallocated log), and appends go on.
	appendOnceFreed(t, s, r)
}

// TestCloseWhileFlushesFail: a spool whose flushes keep failing (a full
// disk) still closes promptly, although Pebble's Close waits for the flush
// in progress and each retry now comes after a pause of up to 500 ms.
func TestCloseWhileFlushesFail(t *testing.T) {
	var armed atomic.Bool
	fs := diskFullFS(&armed, ".sst", errorfs.OpFileWrite)
	s := openT(t, Options{Dir: t.TempDir(), FS: fs, MaxPendingBytes: 1 << 20, PreallocateLogs: true})
	armed.Store(true)
	r := benchRecord()
	errs0 := backgroundErrors.Get()
	// Fill memtables until a flush has failed.
	for i := uint64(1); backgroundErrors.Get() == errs0; i++ {
		if err := s.Append(r, nil, i); err != nil && !errors.Is(err, ErrBusy) {
			t.Fatal(err)
		}
		if i%1000 == 0 {
			time.Sleep(10 * time.Millisecond)
		}
		if i > 1_000_000 {
			t.Fatal("no flush failed")
		}
	}
	time.Sleep(time.Second) // the retries' pauses have ramped up
	done := make(chan error, 1)
	t0 := time.Now()
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		t.Logf("closed in %v (err %v) with flushes failing", time.Since(t0), err)
	case <-time.After(10 * time.Second):
		armed.Store(false) // let it finish, then fail
		<-done
		t.Fatal("Close did not return within 10 s while flushes failed")
	}
}

// TestCloseWhileCommitStalled: with the memtables full and flushes failing
// (a full disk), Pebble holds the commit in progress until a flush
// succeeds. Close gives up after CloseTimeout with ErrCommitStalled
// instead of hanging the daemon's stop; the committer finishing later (the
// disk freed) does no harm.
func TestCloseWhileCommitStalled(t *testing.T) {
	var armed atomic.Bool
	fs := diskFullFS(&armed, ".sst", errorfs.OpFileWrite)
	s := openT(t, Options{Dir: t.TempDir(), FS: fs, MaxPendingBytes: 1 << 20, PreallocateLogs: true,
		CloseTimeout: 2 * time.Second})
	armed.Store(true)
	r := benchRecord()
	w := make(chWaiter, 1<<20)
	appended := uint64(0)
	var busySince time.Time
	for deadline := time.Now().Add(60 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatalf("no stall after %d records with failing flushes", appended)
		}
		err := s.Append(r, w, appended+1)
		if err == nil {
			appended++
			busySince = time.Time{}
			continue
		}
		if !errors.Is(err, ErrBusy) {
			t.Fatal(err)
		}
		if busySince.IsZero() {
			busySince = time.Now()
		}
		if time.Since(busySince) > 2*time.Second {
			break // busy for 2 s: the commit is stalled, not just behind
		}
		time.Sleep(10 * time.Millisecond)
	}
	committed := s.LastSeq()
	done := make(chan error, 1)
	t0 := time.Now()
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrCommitStalled) {
			t.Fatalf("Close while a commit is stalled: %v, want ErrCommitStalled", err)
		}
		t.Logf("Close gave up after %v: %v", time.Since(t0), err)
	case <-time.After(20 * time.Second):
		armed.Store(false)
		<-done
		t.Fatal("Close did not return within 20 s while a commit was stalled")
	}
	if err := s.Append(r, w, appended+1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	// Space comes back: the stalled commit finishes and the committer
	// exits, reporting every record it committed.
	armed.Store(false)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the committer did not finish once flushes succeeded")
	}
	ok := uint64(0)
	for len(w) > 0 {
		if rep := <-w; rep.err == nil {
			ok++
		}
	}
	if ok < committed {
		t.Fatalf("%d records reported committed, %d were before Close", ok, committed)
	}
	if err := s.db.Close(); err != nil {
		t.Fatal(err)
	}
}

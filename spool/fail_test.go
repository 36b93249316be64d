package spool

import (
	"errors"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// TestCommitErrorKeepsGoing makes WAL writes fail as on a full disk: the
// batch's waiters get the error, the process survives, and once writes
// succeed again the spool reopens and continues with fresh seqs.
func TestCommitErrorKeepsGoing(t *testing.T) {
	var armed atomic.Bool
	fs := errorfs.Wrap(vfs.Default, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if armed.Load() && strings.HasSuffix(op.Path, ".log") &&
			(op.Kind == errorfs.OpFileWrite || op.Kind == errorfs.OpFileSync) {
			return syscall.ENOSPC
		}
		return nil
	}))
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir, fs: fs})
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

package spool

import (
	"context"
	"errors"
	"math"
	"testing"

	"golang.org/x/sys/unix"
)

func TestInspectLiveAndView(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir, Consumers: []string{"a", "b"}})
	const n = 50
	for i := uint64(1); i <= n; i++ {
		if err := s.Append(testRecord(i), nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, s, n)
	if err := s.SetCursor("a", 20); err != nil {
		t.Fatal(err)
	}
	if err := s.SetCursor("b", 10); err != nil { // trims 1..10
		t.Fatal(err)
	}
	if _, err := OpenView(dir, quietLogger()); !errors.Is(err, ErrLocked) {
		t.Fatalf("OpenView on an open spool: %v, want ErrLocked", err)
	}

	check := func(name string, rr RawReader) {
		t.Helper()
		in, err := rr.Info()
		if err != nil {
			t.Fatal(err)
		}
		if in.Records != 40 || in.FirstSeq != 11 || in.NewestSeq != n || in.LastSeq != n ||
			in.Cursors["a"] != 20 || in.Cursors["b"] != 10 ||
			in.OldestReceivedAtMs != testRecord(11).ReceivedAtMs || in.NewestReceivedAtMs != testRecord(n).ReceivedAtMs {
			t.Fatalf("%s: info %+v", name, in)
		}
		var seqs []uint64
		if err := ScanRaw(context.Background(), rr, 0, 0, func(r RawRecord) error {
			var rec Record
			if err := DecodeRecord(r.Value, r.Seq, &rec); err != nil || !sameRecord(&rec, testRecord(r.Seq)) {
				t.Fatalf("%s: seq %d: %v", name, r.Seq, err)
			}
			seqs = append(seqs, r.Seq)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(seqs) != 40 || seqs[0] != 11 || seqs[39] != n {
			t.Fatalf("%s: scanned %v", name, seqs)
		}
		got, err := rr.ReadRaw(15, 17, 0, 0, nil)
		if err != nil || len(got) != 3 || got[0].Seq != 15 || got[2].Seq != 17 {
			t.Fatalf("%s: ReadRaw 15..17: %v %v", name, got, err)
		}
		last, err := LastRaw(context.Background(), rr, 5, func(r RawRecord) bool { return r.Seq%2 == 0 })
		if err != nil || len(last) != 5 || last[0].Seq != 42 || last[4].Seq != 50 {
			t.Fatalf("%s: LastRaw: %v %v", name, last, err)
		}
		all, err := LastRaw(context.Background(), rr, 1000, nil)
		if err != nil || len(all) != 40 || all[0].Seq != 11 {
			t.Fatalf("%s: LastRaw all: %d %v", name, len(all), err)
		}
		none, err := rr.ReadRawBefore(11, 10, nil)
		if err != nil || len(none) != 0 {
			t.Fatalf("%s: before 11: %v %v", name, none, err)
		}
		if got, err := rr.ReadRaw(math.MaxUint64, 0, 0, 0, nil); err != nil || len(got) != 0 {
			t.Fatalf("%s: ReadRaw past the end: %v %v", name, got, err)
		}
	}
	check("live", s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadRaw(1, 0, 0, 0, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReadRaw after Close: %v", err)
	}
	v, err := OpenView(dir, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	check("view", v)
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	// The view released the lock.
	s2 := openT(t, Options{Dir: dir})
	s2.Close()
}

func TestOpenViewMissing(t *testing.T) {
	if v, err := OpenView(t.TempDir()+"/nope", quietLogger()); err == nil {
		v.Close()
		t.Fatal("OpenView of a missing directory succeeded")
	}
}

// TestDiskFreeIsTheFileSystemsFreeSpace: DiskFree answers with a probe of
// the spool's file system now, MinFreeBytes set or not.
func TestDiskFreeIsTheFileSystemsFreeSpace(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir})
	defer s.Close()
	got, err := s.DiskFree()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	// Other writers on the machine move it a little between the two.
	if want := int64(st.Bavail) * st.Bsize; got <= 0 || got > want+64<<20 || got < want-64<<20 {
		t.Fatalf("DiskFree %d, statfs says %d", got, want)
	}
}

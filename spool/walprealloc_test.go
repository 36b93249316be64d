package spool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPreallocatedLogs: with PreallocateLogs the write-ahead log Pebble
// opens is the preallocated file (full size before any record), a new
// spare is written behind it, and the records committed into it read back
// after a reopen with and without the option.
func TestPreallocatedLogs(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir, PreallocateLogs: true})
	size := int64(s.memTableSize()) + 1<<20
	logs := walSizes(t, dir)
	if len(logs) != 1 || logs[0] != size {
		t.Fatalf("log sizes after open %v, want one of %d (the preallocated file)", logs, size)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		fi, err := os.Stat(filepath.Join(dir, spareWALName))
		if err == nil && fi.Size() == size {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new spare log after 10s: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	const n = 500
	for i := uint64(1); i <= n; i++ {
		if err := s.Append(testRecord(i), nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, s, n)
	if logs := walSizes(t, dir); len(logs) != 1 || logs[0] != size {
		t.Fatalf("log sizes after %d records %v: the log grew instead of being overwritten", n, logs)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, prealloc := range []bool{false, true} {
		s := openT(t, Options{Dir: dir, PreallocateLogs: prealloc})
		got := readAll(t, s, 0)
		if len(got) != n {
			t.Fatalf("reopened (PreallocateLogs %v): %d records, want %d", prealloc, len(got), n)
		}
		for i, r := range got {
			if !sameRecord(&r, testRecord(uint64(i+1))) {
				t.Fatalf("reopened (PreallocateLogs %v): record %d differs", prealloc, i+1)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func walSizes(t *testing.T, dir string) []int64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int64
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".log") {
			fi, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			sizes = append(sizes, fi.Size())
		}
	}
	return sizes
}

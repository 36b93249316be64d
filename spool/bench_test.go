package spool

import (
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func benchRecord() *Record {
	return &Record{
		ReceivedAtMs:  1_700_000_000_000,
		CreatedAtSec:  1_700_000_000,
		VIN:           "5YJ3E1EA7KF000001",
		ClientVersion: "2024.44.25",
		Topic:         []byte("V"),
		TxID:          []byte("0b5e2f4c-9d7a-4c1e-8f3a-2d6b7c8e9f01"),
		Payload:       make([]byte, 512),
	}
}

// BenchmarkAppend measures the hand-off into the pending batch. The
// committer runs concurrently; when the pending bound is reached the clock
// stops while the benchmark waits for a commit.
func BenchmarkAppend(b *testing.B) {
	s := openT(b, Options{Dir: b.TempDir()})
	defer s.Close()
	r := benchRecord()
	b.ReportAllocs()
	b.SetBytes(int64(recKeyLen + encodedLen(r)))
	for b.Loop() {
		for {
			ch := s.Committed()
			err := s.Append(r, nil, 0)
			if err == nil {
				break
			}
			if err != ErrBusy {
				b.Fatal(err)
			}
			b.StopTimer()
			<-ch
			b.StartTimer()
		}
	}
}

type benchWaiter chan error

func (w benchWaiter) Committed(_, _ uint64, err error) { w <- err }

// BenchmarkAppendCommitted measures records through fsync with 100
// appenders that each wait for their record to be durable.
func BenchmarkAppendCommitted(b *testing.B) {
	s := openT(b, Options{Dir: b.TempDir()})
	defer s.Close()
	const appenders = 100
	commits0 := commitsTotal.Get()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	work := make(chan struct{}, appenders)
	go func() {
		for i := 0; i < b.N; i++ {
			work <- struct{}{}
		}
		close(work)
	}()
	for g := 0; g < appenders; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := benchRecord()
			w := make(benchWaiter, 1)
			for range work {
				for s.Append(r, w, 0) != nil {
					time.Sleep(100 * time.Microsecond)
				}
				if err := <-w; err != nil {
					b.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	commits := commitsTotal.Get() - commits0
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	if commits > 0 {
		b.ReportMetric(float64(b.N)/float64(commits), "records/commit")
	}
}

// BenchmarkRead measures reading batches of 256 committed records.
func BenchmarkRead(b *testing.B) {
	s := openT(b, Options{Dir: b.TempDir()})
	defer s.Close()
	r := benchRecord()
	const n = 20_000
	for i := 0; i < n; i++ {
		for s.Append(r, nil, 0) != nil {
			time.Sleep(time.Millisecond)
		}
	}
	waitFor(b, s, n)
	dst := make([]Record, 0, 256)
	from := uint64(1)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got, err := s.Read(from, 256, 1<<20, dst[:0])
		if err != nil {
			b.Fatal(err)
		}
		from = got[len(got)-1].Seq + 1
		if from > n {
			from = 1
		}
	}
	b.ReportMetric(256*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkCommitOneRecord is one appender waiting for each record to be
// durable: every record is its own commit, so ns/op is the spool's commit
// latency (WAL write + fdatasync) on this disk, the floor under ack
// latency at low load. p50/p99 are reported next to ns/op.
func BenchmarkCommitOneRecord(b *testing.B) {
	s := openT(b, Options{Dir: b.TempDir()})
	defer s.Close()
	r := benchRecord()
	w := make(benchWaiter, 1)
	var lat []time.Duration
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		if err := s.Append(r, w, 0); err != nil {
			b.Fatal(err)
		}
		if err := <-w; err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkFdatasync is the disk alone: 600 bytes written in place into a
// preallocated file, then fdatasync, as a lower bound for a commit.
func BenchmarkFdatasync(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "probe"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	const size = 64 << 20
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 600)
	var lat []time.Duration
	off := int64(0)
	for b.Loop() {
		t0 := time.Now()
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		off = (off + int64(len(buf))) % (size - int64(len(buf)))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

package memtrim

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

var sink [][]byte

func releasedBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// A burst of garbage followed by quiet is handed back to the OS; steady
// allocation is left to the collector.
func TestTrimAfterBurst(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	before := trims.Get()
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, Options{Interval: 50 * time.Millisecond, BusyBytes: 8 << 20, QuietBytes: 1 << 20,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()
	// Steady allocation: busy every interval, never quiet.
	steadyEnd := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(steadyEnd) {
		sink = append(sink[:0], make([]byte, 1<<20))
		time.Sleep(time.Millisecond)
	}
	if got := trims.Get() - before; got != 0 {
		t.Fatalf("trimmed %d times under steady allocation", got)
	}
	// A burst: 64 MiB of garbage at once, then nothing.
	for range 64 {
		sink = append(sink, make([]byte, 1<<20))
	}
	sink = nil
	runtime.GC() // the garbage is free now, but kept by the heap
	released := releasedBytes()
	deadline := time.Now().Add(5 * time.Second)
	for trims.Get() == before {
		if time.Now().After(deadline) {
			t.Fatal("no trim after a burst and quiet")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := releasedBytes(); got <= released {
		t.Fatalf("released heap %d bytes, before the trim %d: nothing returned", got, released)
	}
}

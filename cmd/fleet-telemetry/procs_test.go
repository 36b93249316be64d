package main

import (
	"io"
	"log/slog"
	"runtime"
	"testing"
)

func TestMinProcs(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))

	t.Setenv("GOMAXPROCS", "")
	runtime.GOMAXPROCS(1)
	minProcs(quiet)
	if got := runtime.GOMAXPROCS(0); got != 2 {
		t.Fatalf("one CPU, GOMAXPROCS unset: GOMAXPROCS = %d, want 2", got)
	}

	runtime.GOMAXPROCS(4)
	minProcs(quiet)
	if got := runtime.GOMAXPROCS(0); got != 4 {
		t.Fatalf("four CPUs: GOMAXPROCS = %d, want 4 (left alone)", got)
	}

	t.Setenv("GOMAXPROCS", "1")
	runtime.GOMAXPROCS(1)
	minProcs(quiet)
	if got := runtime.GOMAXPROCS(0); got != 1 {
		t.Fatalf("GOMAXPROCS=1 set by the operator: GOMAXPROCS = %d, want 1", got)
	}
}

package main

import (
	"log/slog"
	"os"
	"runtime"
)

// minProcs raises GOMAXPROCS to 2 when the daemon may use a single CPU
// (taskset, a cpuset, a one-core VM) and the operator did not set
// GOMAXPROCS. With one P, a thread blocked in the spool's fdatasync (or
// Pebble's WAL rotation) holds the P until the runtime's monitor takes it
// back, up to milliseconds later, and the event loop woken meanwhile
// waits: acks queue behind the disk twice. With two, the loop takes the
// other P at once and the kernel shares the core between the threads.
// The event loops still follow the CPUs (one here).
func minProcs(log *slog.Logger) {
	if os.Getenv("GOMAXPROCS") != "" || runtime.GOMAXPROCS(0) >= 2 {
		return
	}
	runtime.GOMAXPROCS(2)
	log.Info("one CPU available: GOMAXPROCS set to 2 so the event loop never waits for a thread blocked on the disk (set GOMAXPROCS to override)")
}

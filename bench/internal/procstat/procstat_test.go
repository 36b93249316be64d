package procstat

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// TestReadLive reads this process while a goroutine keeps a thread busy:
// CPU time grows, and run-queue wait never goes backwards.
func TestReadLive(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs /proc")
	}
	s0, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	s1, err := Read(0)
	if err != nil {
		t.Fatal(err)
	}
	if s1.CPU <= s0.CPU || s1.RSSKiB <= 0 || s1.Threads <= 0 || s1.RunDelay < s0.RunDelay {
		t.Fatalf("samples did not advance: %+v then %+v", s0, s1)
	}
}

// TestRunDelayCountsWaiting keeps more threads busy than this process may
// use CPUs: they must wait for each other, and the wait is counted.
func TestRunDelayCountsWaiting(t *testing.T) {
	if _, err := os.Stat("/proc/self/schedstat"); err != nil {
		t.Skip("the kernel keeps no schedstats")
	}
	s0, err := Read(0)
	if err != nil {
		t.Fatal(err)
	}
	n := 2*runtime.NumCPU() + 1
	prev := runtime.GOMAXPROCS(n)
	defer runtime.GOMAXPROCS(prev)
	done := make(chan struct{})
	deadline := time.Now().Add(300 * time.Millisecond)
	for range n {
		go func() {
			defer func() { done <- struct{}{} }()
			for x := 0; time.Now().Before(deadline); x++ {
				_ = x * x
			}
		}()
	}
	for range n {
		<-done
	}
	s1, err := Read(0)
	if err != nil {
		t.Fatal(err)
	}
	if s1.RunDelay-s0.RunDelay < 10*time.Millisecond {
		t.Fatalf("%d busy threads on %d CPUs waited only %v", n, runtime.NumCPU(), s1.RunDelay-s0.RunDelay)
	}
}

package spool

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/testkit"
)

const (
	crashChildEnv    = "SPOOL_CRASH_CHILD_DIR"
	crashPreallocEnv = "SPOOL_CRASH_CHILD_PREALLOC"
)

// crashChild runs in the re-executed test binary: it appends records from a
// few goroutines forever and prints "token seq" for each record its waiter
// reports durable, until the parent kills it.
func crashChild(dir string) {
	prealloc := os.Getenv(crashPreallocEnv) == "1"
	s, err := Open(Options{Dir: dir, MaxPendingBytes: 1 << 20, Logger: quietLogger(), PreallocateLogs: prealloc})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	out := make(chan report, 1<<16)
	w := chWaiter(out)
	go func() {
		bw := bufio.NewWriter(os.Stdout)
		for rep := range out {
			if rep.err != nil {
				continue
			}
			fmt.Fprintf(bw, "%d %d\n", rep.token, rep.seq)
			if len(out) == 0 {
				bw.Flush() // printed only after the durable report
			}
		}
	}()
	base := uint64(time.Now().UnixNano())
	var wg sync.WaitGroup
	for g := uint64(0); g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint64(0); ; i++ {
				tok := base + g<<40 + i
				for s.Append(crashRecord(tok), w, tok) != nil {
					time.Sleep(time.Millisecond)
				}
				if len(out) > cap(out)/2 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
}

func crashRecord(tok uint64) *Record {
	return &Record{
		ReceivedAtMs: int64(tok % 1e12),
		VIN:          fmt.Sprintf("VIN-%d", tok%97),
		Topic:        []byte("V"),
		Payload:      bytes.Repeat([]byte(fmt.Sprintf("%d,", tok)), int(tok%50)+1),
	}
}

// TestCrashDurability kills a child appending as fast as it can at random
// moments and checks every record it reported durable is there, with logs
// grown as written and with preallocated logs (whose unwritten tail is
// zeros Pebble must read as the end of the log).
func TestCrashDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	t.Run("grown-logs", func(t *testing.T) { testCrashDurability(t, false) })
	t.Run("preallocated-logs", func(t *testing.T) { testCrashDurability(t, true) })
}

func testCrashDurability(t *testing.T, prealloc bool) {
	dir := t.TempDir()
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	t.Logf("seed %d", seed)
	acked := map[uint64]uint64{} // seq -> token
	for round := 0; round < 4; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
		if prealloc {
			cmd.Env = append(cmd.Env, crashPreallocEnv+"=1")
		}
		var stdout testkit.LockedBuffer
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill at a random moment after the child started acking (start-up
		// time varies a lot under -race).
		for deadline := time.Now().Add(20 * time.Second); !strings.Contains(stdout.String(), "\n") && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		n := 0
		lines := strings.Split(stdout.String(), "\n")
		// The last element follows the last newline: a line the kill cut
		// off (it could parse as a shorter, wrong seq), or empty.
		for _, line := range lines[:len(lines)-1] {
			var tok, seq uint64
			if _, err := fmt.Sscanf(line, "%d %d", &tok, &seq); err != nil {
				t.Fatalf("round %d: unparsable line %q", round, line)
			}
			if prev, ok := acked[seq]; ok && prev != tok {
				t.Fatalf("round %d: seq %d acked for tokens %d and %d", round, seq, prev, tok)
			}
			acked[seq] = tok
			n++
		}
		if n == 0 {
			t.Fatalf("round %d: child acked nothing; stderr: %s", round, stderr.String())
		}
		s := openT(t, Options{Dir: dir, PreallocateLogs: prealloc})
		got := map[uint64]Record{}
		for _, r := range readAll(t, s, 0) {
			got[r.Seq] = r
		}
		for seq, tok := range acked {
			r, ok := got[seq]
			if !ok {
				t.Fatalf("round %d: acked seq %d (token %d) lost after SIGKILL", round, seq, tok)
			}
			if !sameRecord(&r, crashRecord(tok)) {
				t.Fatalf("round %d: seq %d has wrong content", round, seq)
			}
		}
		t.Logf("round %d: %d acked this round, %d total, %d on disk", round, n, len(acked), len(got))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// Package test holds end-to-end tests: they build the real binary, start it
// with a reference-format config file on 127.0.0.1, and talk to it with real
// mTLS WebSocket clients.
package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binary is the daemon built once for the whole package.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fleet-telemetry-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "fleet-telemetry")
	build := exec.Command("go", "build", "-o", binary, "../cmd/fleet-telemetry")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build the daemon:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is one running fleet-telemetry process.
type daemon struct {
	t    *testing.T
	cmd  *exec.Cmd
	addr string

	mu     sync.Mutex
	lines  []stdoutLine // parsed stdout records
	logs   []string
	exited chan struct{}

	// stdoutGate is held while the test stops reading the daemon's
	// stdout (holdStdout): the pipe fills and the stdout sink blocks.
	stdoutGate sync.Mutex
}

// stdoutLine is what the logger dispatcher prints.
type stdoutLine struct {
	Topic        string          `json:"topic"`
	VIN          string          `json:"vin"`
	TxID         string          `json:"txid"`
	ReceivedAtMs int64           `json:"received_at_ms"`
	Record       json.RawMessage `json:"record"`
}

// startDaemon runs the binary with a config file and waits for its
// "listening" log line, which carries the bound address.
func startDaemon(t *testing.T, configPath string) *daemon {
	t.Helper()
	return startDaemonCmd(t, exec.Command(binary, "-config", configPath))
}

// startDaemonCmd is startDaemon for a command line of the caller's (for
// example the binary under prlimit, which execs it in place).
func startDaemonCmd(t *testing.T, cmd *exec.Cmd) *daemon {
	t.Helper()
	d := &daemon{t: t, exited: make(chan struct{}), cmd: cmd}
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrCh := make(chan string, 1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		br := bufio.NewReaderSize(stdout, 1<<20)
		for {
			d.stdoutGate.Lock()
			d.stdoutGate.Unlock()
			line, err := br.ReadBytes('\n')
			if err != nil {
				// A SIGKILL may cut the last line; only whole lines count.
				return
			}
			var l stdoutLine
			if err := json.Unmarshal(line, &l); err != nil {
				t.Errorf("stdout line is not JSON: %q: %v", line, err)
				continue
			}
			d.mu.Lock()
			d.lines = append(d.lines, l)
			d.mu.Unlock()
		}
	}()
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.logs = append(d.logs, line)
			d.mu.Unlock()
			var entry struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "listening" {
				addrCh <- entry.Addr
			}
		}
	}()
	go func() {
		wg.Wait()
		d.cmd.Wait()
		close(d.exited)
	}()
	select {
	case d.addr = <-addrCh:
	case <-d.exited:
		t.Fatalf("daemon exited before listening:\n%s", d.logText())
	case <-time.After(20 * time.Second):
		d.cmd.Process.Kill()
		t.Fatalf("daemon did not listen within 20s:\n%s", d.logText())
	}
	t.Cleanup(func() { d.kill() })
	return d
}

func (d *daemon) logText() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.logs, "\n")
}

// holdStdout stops reading the daemon's stdout until the returned func is
// called: once the pipe's buffer is full, the stdout sink's writes block
// and what the spool holds stays unforwarded. Release before waiting for
// the process to exit (kill does that itself after its signal).
func (d *daemon) holdStdout() (release func()) {
	d.stdoutGate.Lock()
	return sync.OnceFunc(d.stdoutGate.Unlock)
}

// kill sends SIGKILL and waits for the process to be gone.
func (d *daemon) kill() {
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon did not stop within 30s after SIGTERM:\n%s", d.logText())
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("daemon exited %d after SIGTERM:\n%s", code, d.logText())
	}
}

// printed returns the stdout records so far.
func (d *daemon) printed() []stdoutLine {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]stdoutLine(nil), d.lines...)
}

// waitPrinted waits until every txid in want was printed at least once.
func (d *daemon) waitPrinted(t *testing.T, want map[string]bool, timeout time.Duration) map[string]stdoutLine {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := map[string]stdoutLine{}
		for _, l := range d.printed() {
			got[l.TxID] = l
		}
		missing := 0
		for tx := range want {
			if _, ok := got[tx]; !ok {
				missing++
			}
		}
		if missing == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d records never printed", missing, len(want))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

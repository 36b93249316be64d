// Package kfaketest lets tests run the kfakebroker command as a separate
// process (so that it can be stopped and restarted like a real broker) and
// read topics back with kcat, the way an operator would.
package kfaketest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
)

// pkgPath is the kfakebroker command's import path.
const pkgPath = "github.com/fleet-telemetry/fleet-telemetry/test/kfakebroker"

// Build compiles the kfakebroker command into dir and returns its path.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "kfakebroker")
	cmd := exec.Command("go", "build", "-o", bin, pkgPath)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build kfakebroker: %w\n%s", err, out.Bytes())
	}
	return bin, nil
}

// Options start a broker.
type Options struct {
	// Port on 127.0.0.1; 0 picks a free one (a restart reuses it).
	Port int
	// DataDir persists the cluster across restarts ("" keeps it in memory).
	DataDir string
	// Partitions of auto-created topics (default 1).
	Partitions int
	// NoAutoCreate refuses produce requests to topics that do not exist.
	NoAutoCreate bool
	// Topics are created at start.
	Topics []string
	// BrokerConfigs are broker settings, e.g. message.max.bytes.
	BrokerConfigs map[string]string
}

// Broker is one kfakebroker process (restartable).
type Broker struct {
	bin  string
	opts Options
	// Addr is 127.0.0.1:PORT.
	Addr string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	stderr bytes.Buffer
}

// Start runs bin (from Build) and waits for its "listening" line. The
// process is killed (Kill) when the test ends.
func Start(t testing.TB, bin string, o Options) *Broker {
	t.Helper()
	if o.Partitions <= 0 {
		o.Partitions = 1
	}
	b := &Broker{bin: bin, opts: o}
	if err := b.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Kill)
	return b
}

func (b *Broker) start() error {
	// b.mu is not held while waiting for the process: its stderr writer
	// takes b.mu, and cmd.Wait waits for that writer, so a broker that
	// fails at once (say, its port not yet free on Restart) would otherwise
	// only be noticed after the 20s timeout.
	b.mu.Lock()
	args := []string{"-port", strconv.Itoa(b.opts.Port), "-partitions", strconv.Itoa(b.opts.Partitions)}
	if b.opts.DataDir != "" {
		args = append(args, "-data-dir", b.opts.DataDir)
	}
	if b.opts.NoAutoCreate {
		args = append(args, "-no-auto-create")
	}
	if len(b.opts.Topics) > 0 {
		args = append(args, "-topics", strings.Join(b.opts.Topics, ","))
	}
	if len(b.opts.BrokerConfigs) > 0 {
		var kvs []string
		for k, v := range b.opts.BrokerConfigs {
			kvs = append(kvs, k+"="+v)
		}
		sort.Strings(kvs)
		args = append(args, "-broker-config", strings.Join(kvs, ","))
	}
	b.mu.Unlock()
	cmd := exec.Command(b.bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("kfakebroker: %w", err)
	}
	cmd.Stderr = &lockedWriter{mu: &b.mu, w: &b.stderr}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("kfakebroker: start: %w", err)
	}
	exited := make(chan struct{})
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				addrCh <- addr
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	b.mu.Lock()
	b.cmd, b.exited = cmd, exited
	b.mu.Unlock()
	select {
	case addr := <-addrCh:
		_, port, err := splitPort(addr)
		if err != nil {
			return err
		}
		b.mu.Lock()
		b.Addr, b.opts.Port = addr, port
		b.mu.Unlock()
		return nil
	case <-exited:
		return fmt.Errorf("kfakebroker exited before listening:\n%s", b.Stderr())
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		return errors.New("kfakebroker did not listen within 20s")
	}
}

func splitPort(addr string) (string, int, error) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return "", 0, fmt.Errorf("kfakebroker: address %q has no port", addr)
	}
	p, err := strconv.Atoi(addr[i+1:])
	if err != nil {
		return "", 0, fmt.Errorf("kfakebroker: address %q: %w", addr, err)
	}
	return addr[:i], p, nil
}

// Stop sends SIGTERM and waits for the process to persist its state and
// exit.
func (b *Broker) Stop(t testing.TB) {
	t.Helper()
	b.mu.Lock()
	cmd, exited := b.cmd, b.exited
	b.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("kfakebroker did not stop within 20s after SIGTERM:\n%s", b.Stderr())
	}
}

// Restart starts the process again on the same port and data directory.
func (b *Broker) Restart(t testing.TB) {
	t.Helper()
	// The port was just released; a rare bind race gets a few tries.
	var err error
	for range 20 {
		if err = b.start(); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatal(err)
}

// Kill SIGKILLs the process (it gets no chance to persist its state) and
// waits for it to exit; it does nothing if the process already exited.
// Restart starts it again.
func (b *Broker) Kill() {
	b.mu.Lock()
	cmd, exited := b.cmd, b.exited
	b.mu.Unlock()
	select {
	case <-exited:
		return
	default:
	}
	_ = cmd.Process.Kill()
	<-exited
}

// Signal sends sig to the process: SIGSTOP pauses it (a hung broker whose
// sockets stay open), SIGCONT resumes it. It fails once the process has
// exited.
func (b *Broker) Signal(sig os.Signal) error {
	b.mu.Lock()
	cmd := b.cmd
	b.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("kfakebroker: signal %v: %w", sig, err)
	}
	return nil
}

// DataDir is the directory the broker persists its cluster in ("" when it
// keeps it in memory).
func (b *Broker) DataDir() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.opts.DataDir
}

// Stderr is what the process wrote on stderr so far.
func (b *Broker) Stderr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stderr.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Message is one record read back from a topic.
type Message struct {
	Partition int32
	Offset    int64
	Key       string
	// Headers in the order the record carries them.
	Headers []Header
	// Value is the exact value bytes.
	Value []byte
}

// Header is one record header.
type Header struct{ Key, Value string }

// Header returns the first header named k and whether there is one.
func (m *Message) Header(k string) (string, bool) {
	for _, h := range m.Headers {
		if h.Key == k {
			return h.Value, true
		}
	}
	return "", false
}

// KcatPath returns kcat's path, or "" when it is not installed.
func KcatPath() string {
	p, err := exec.LookPath("kcat")
	if err != nil {
		return ""
	}
	return p
}

// RequireKcat returns kcat's path (it reads the topics back). When kcat is
// not installed it skips the test, saying why, except under CI, where a
// missing kcat is a failure: .ci/run installs it.
func RequireKcat(t testing.TB) string {
	t.Helper()
	if p := KcatPath(); p != "" {
		return p
	}
	return e2e.NeedTool(t, "kcat", "kcat")
}

// ReadTopic consumes topic from the beginning to its end with kcat. It runs
// kcat twice: the -J JSON envelope for keys and headers (kcat writes binary
// payloads into JSON strings lossily), then a -f format with each value's
// length for the exact value bytes; the two are joined on partition and
// offset. An unknown topic is an error.
func ReadTopic(addr, topic string) ([]Message, error) {
	kcat := KcatPath()
	if kcat == "" {
		return nil, errors.New("kcat is not installed")
	}
	base := []string{"-C", "-b", addr, "-t", topic, "-o", "beginning", "-e", "-q", "-m", "10", "-X", "fetch.wait.max.ms=20"}
	jsonOut, err := runKcat(kcat, append(base, "-J")...)
	if err != nil {
		return nil, err
	}
	var msgs []Message
	index := map[[2]int64]int{}
	dec := json.NewDecoder(bytes.NewReader(jsonOut))
	for dec.More() {
		var e struct {
			Partition int32    `json:"partition"`
			Offset    int64    `json:"offset"`
			Key       *string  `json:"key"`
			Headers   []string `json:"headers"`
		}
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("kcat -J output: %w", err)
		}
		if len(e.Headers)%2 != 0 {
			return nil, fmt.Errorf("kcat -J: partition %d offset %d: odd header list %q", e.Partition, e.Offset, e.Headers)
		}
		m := Message{Partition: e.Partition, Offset: e.Offset}
		if e.Key != nil {
			m.Key = *e.Key
		}
		for i := 0; i < len(e.Headers); i += 2 {
			m.Headers = append(m.Headers, Header{e.Headers[i], e.Headers[i+1]})
		}
		index[[2]int64{int64(m.Partition), m.Offset}] = len(msgs)
		msgs = append(msgs, m)
	}
	// "%p %o %S\n" then exactly %S value bytes, per message.
	rawOut, err := runKcat(kcat, append(base, "-f", `%p %o %S\n%s`)...)
	if err != nil {
		return nil, err
	}
	rest := rawOut
	seen := 0
	for len(rest) > 0 {
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			return nil, fmt.Errorf("kcat -f output: truncated header %q", rest)
		}
		var p int32
		var off, n int64
		if _, err := fmt.Sscanf(string(rest[:nl]), "%d %d %d", &p, &off, &n); err != nil {
			return nil, fmt.Errorf("kcat -f output: header %q: %w", rest[:nl], err)
		}
		rest = rest[nl+1:]
		if n < 0 {
			n = 0 // a null value
		}
		if int64(len(rest)) < n {
			return nil, fmt.Errorf("kcat -f output: partition %d offset %d: %d value bytes, want %d", p, off, len(rest), n)
		}
		// The second run may see records the first did not (a live topic):
		// only the ones both saw count.
		if i, ok := index[[2]int64{int64(p), off}]; ok {
			msgs[i].Value = append([]byte(nil), rest[:n]...)
			seen++
		}
		rest = rest[n:]
	}
	if seen != len(msgs) {
		return nil, fmt.Errorf("kcat: %d messages in the JSON read, %d of them in the raw read", len(msgs), seen)
	}
	return msgs, nil
}

func runKcat(kcat string, args ...string) ([]byte, error) {
	cmd := exec.Command(kcat, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("kcat: %w", err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return nil, fmt.Errorf("kcat %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return nil, fmt.Errorf("kcat %s: no end within 60s: %s", strings.Join(args, " "), strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// ReadTopicEventually retries ReadTopic until it succeeds (the topic may
// not exist yet) or timeout passes.
func ReadTopicEventually(addr, topic string, timeout time.Duration) ([]Message, error) {
	deadline := time.Now().Add(timeout)
	for {
		msgs, err := ReadTopic(addr, topic)
		if err == nil || time.Now().After(deadline) {
			return msgs, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

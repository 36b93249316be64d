// Package brokertest runs the real brokers the sink tests publish to —
// Debian's mosquitto, redis-server and nats-server — as child processes on
// 127.0.0.1, each on a port of its own, with Stop and Start for outage
// tests. A missing binary skips the test, except under CI (e2e.UnderCI),
// where it fails: .ci/run installs them.
package brokertest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
)

// Require returns the path of a broker binary, skipping the test (or,
// under CI, failing it) when it is not installed.
func Require(t testing.TB, binary, debianPackage string) string {
	t.Helper()
	return e2e.NeedTool(t, binary, debianPackage)
}

// FreePort returns a TCP port that was free a moment ago on 127.0.0.1.
func FreePort(t testing.TB) int {
	t.Helper()
	return e2e.FreePort(t)
}

// Broker is one broker process, restartable on the same port and data
// directory.
type Broker struct {
	// Addr is 127.0.0.1:<port>.
	Addr string
	// Port is the broker's port.
	Port int
	// Dir is the broker's own directory (config, data).
	Dir string

	t    testing.TB
	args []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// start runs the broker with args and waits until its port accepts
// connections.
func start(t testing.TB, dir string, port int, args ...string) *Broker {
	t.Helper()
	b := &Broker{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, Dir: dir, t: t, args: args}
	b.Start()
	t.Cleanup(b.kill)
	return b
}

// Start (re)starts the stopped broker on its port.
func (b *Broker) Start() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd != nil {
		b.t.Fatal("brokertest: Start on a running broker")
	}
	logf, err := os.OpenFile(filepath.Join(b.Dir, "broker.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		b.t.Fatal(err)
	}
	cmd := exec.Command(b.args[0], b.args[1:]...)
	cmd.Dir = b.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		b.t.Fatalf("brokertest: start %s: %v", b.args[0], err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	b.cmd, b.done, b.log = cmd, done, logf
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", b.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			b.cmd = nil
			logf.Close()
			b.t.Fatalf("brokertest: %s exited at start:\n%s", b.args[0], b.Log())
		default:
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("brokertest: %s does not listen on %s after 15s:\n%s", b.args[0], b.Addr, b.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop sends SIGTERM (a clean stop: brokers with persistence save it) and
// waits for the process to exit.
func (b *Broker) Stop() { b.signal(syscall.SIGTERM) }

// Kill sends SIGKILL and waits for the process to exit.
func (b *Broker) Kill() { b.signal(syscall.SIGKILL) }

func (b *Broker) signal(sig syscall.Signal) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(sig)
	select {
	case <-b.done:
	case <-time.After(15 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
	b.cmd = nil
	b.log.Close()
}

func (b *Broker) kill() { b.Kill() }

// Log is what the broker wrote to stdout and stderr so far.
func (b *Broker) Log() string {
	data, _ := os.ReadFile(filepath.Join(b.Dir, "broker.log"))
	return string(data)
}

// Mosquitto starts Debian's mosquitto on a free port of 127.0.0.1,
// anonymous access allowed, with in-memory persistence saved on a clean
// stop (so QoS 1 messages queued for a persistent subscriber survive
// Stop/Start).
func Mosquitto(t testing.TB) *Broker {
	t.Helper()
	bin := Require(t, "mosquitto", "mosquitto")
	dir := t.TempDir()
	port := FreePort(t)
	conf := strings.Join([]string{
		"listener " + strconv.Itoa(port) + " 127.0.0.1",
		"allow_anonymous true",
		"user root", // as root, mosquitto would switch to its own user, which cannot write the test's directory
		"persistence true",
		"persistence_location " + dir + "/",
		"autosave_interval 0",
		"max_queued_messages 0",
		"max_inflight_messages 0",
		"log_dest stdout",
		"log_type error",
		"log_type warning",
		"log_type notice",
		"",
	}, "\n")
	path := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return start(t, dir, port, bin, "-c", path)
}

// Redis starts Debian's redis-server on a free port of 127.0.0.1. With
// durable, every write goes to an append-only file fsync'd before Redis
// answers (appendfsync always), so what Redis acknowledged survives
// Stop/Start; without, Redis keeps nothing across a restart.
func Redis(t testing.TB, durable bool) *Broker {
	t.Helper()
	bin := Require(t, "redis-server", "redis-server")
	dir := t.TempDir()
	port := FreePort(t)
	args := []string{bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--dir", dir, "--protected-mode", "no"}
	if durable {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	return start(t, dir, port, args...)
}

// RedisTLS starts Debian's redis-server on a free port of 127.0.0.1 that
// speaks only TLS, with the server certificate certFile/keyFile, and
// requires client certificates issued by caFile.
func RedisTLS(t testing.TB, certFile, keyFile, caFile string) *Broker {
	t.Helper()
	bin := Require(t, "redis-server", "redis-server")
	dir := t.TempDir()
	port := FreePort(t)
	return start(t, dir, port, bin, "--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile, "--tls-auth-clients", "yes",
		"--save", "", "--appendonly", "no", "--dir", dir, "--protected-mode", "no")
}

// NATS starts Debian's nats-server on a free port of 127.0.0.1; with
// jetStream, JetStream is on and keeps its streams under the broker's
// directory, so they survive Stop/Start.
func NATS(t testing.TB, jetStream bool) *Broker {
	t.Helper()
	bin := Require(t, "nats-server", "nats-server")
	dir := t.TempDir()
	port := FreePort(t)
	args := []string{bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port)}
	if jetStream {
		args = append(args, "-js", "-sd", filepath.Join(dir, "js"))
	}
	return start(t, dir, port, args...)
}

// String names the broker in test logs.
func (b *Broker) String() string { return fmt.Sprintf("%s on %s", filepath.Base(b.args[0]), b.Addr) }

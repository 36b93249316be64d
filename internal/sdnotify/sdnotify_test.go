package sdnotify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeManager is the service manager's end: a unixgram socket the test
// owns, recording every datagram with its arrival time.
type fakeManager struct {
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []received
	done chan struct{}
}

type received struct {
	text string
	at   time.Time
}

func listen(t *testing.T, name string) *fakeManager {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	m := &fakeManager{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			m.mu.Lock()
			m.msgs = append(m.msgs, received{string(buf[:n]), time.Now()})
			m.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-m.done })
	t.Setenv("NOTIFY_SOCKET", name)
	return m
}

func (m *fakeManager) all() []received {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]received(nil), m.msgs...)
}

// waitFor waits until n datagrams arrived.
func (m *fakeManager) waitFor(t *testing.T, n int) []received {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := m.all()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d datagrams, want %d: %v", len(got), n, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNotifyPathSocket(t *testing.T) {
	m := listen(t, filepath.Join(t.TempDir(), "notify.sock"))
	if !Enabled() {
		t.Fatal("Enabled() = false with NOTIFY_SOCKET set")
	}
	if err := Notify(Ready, Status("listening on 127.0.0.1:443")); err != nil {
		t.Fatal(err)
	}
	if err := Notify(Stopping); err != nil {
		t.Fatal(err)
	}
	got := m.waitFor(t, 2)
	if got[0].text != "READY=1\nSTATUS=listening on 127.0.0.1:443" {
		t.Errorf("first datagram %q", got[0].text)
	}
	if got[1].text != "STOPPING=1" {
		t.Errorf("second datagram %q", got[1].text)
	}
}

func TestNotifyAbstractSocket(t *testing.T) {
	m := listen(t, fmt.Sprintf("@fleet-telemetry-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	if err := Notify(Ready); err != nil {
		t.Fatal(err)
	}
	if got := m.waitFor(t, 1); got[0].text != Ready {
		t.Errorf("datagram %q, want %q", got[0].text, Ready)
	}
}

func TestNotifyUnsetIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if Enabled() {
		t.Fatal("Enabled() = true without NOTIFY_SOCKET")
	}
	if err := Notify(Ready); err != nil {
		t.Fatalf("Notify without NOTIFY_SOCKET: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	t.Setenv("WATCHDOG_USEC", "1000")
	start := time.Now()
	RunWatchdog(ctx, nil, nil) // must return at once, not wait for ctx
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("RunWatchdog without NOTIFY_SOCKET ran for %v", d)
	}
}

func TestNotifyErrors(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "relative/path")
	if err := Notify(Ready); err == nil {
		t.Error("relative NOTIFY_SOCKET: no error")
	}
	missing := filepath.Join(t.TempDir(), "nobody-listens")
	t.Setenv("NOTIFY_SOCKET", missing)
	err := Notify(Ready)
	if err == nil {
		t.Fatal("socket nobody listens on: no error")
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		t.Errorf("error %v does not wrap the *net.OpError", err)
	}
}

func TestWatchdogInterval(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	for _, c := range []struct {
		usec, pid string
		want      time.Duration
		err       bool
	}{
		{"", "", 0, false},
		{"30000000", "", 15 * time.Second, false},
		{"30000000", pid, 15 * time.Second, false},
		{"30000000", "1", 0, false}, // meant for another process
		{"200000", "", 100 * time.Millisecond, false},
		{"0", "", 0, true},
		{"-5", "", 0, true},
		{"soon", "", 0, true},
		{"30000000", "me", 0, true},
	} {
		t.Setenv("WATCHDOG_USEC", c.usec)
		t.Setenv("WATCHDOG_PID", c.pid)
		got, err := WatchdogInterval()
		if (err != nil) != c.err || got != c.want {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: got %v, %v; want %v, error %v", c.usec, c.pid, got, err, c.want, c.err)
		}
	}
}

func TestRunWatchdogPingsAtHalfTheInterval(t *testing.T) {
	m := listen(t, filepath.Join(t.TempDir(), "notify.sock"))
	const usec = 400_000 // WatchdogSec=400ms → a ping every 200ms
	t.Setenv("WATCHDOG_USEC", strconv.Itoa(usec))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	start := time.Now()
	go func() { RunWatchdog(ctx, nil, nil); close(stopped) }()
	got := m.waitFor(t, 6)
	cancel()
	<-stopped
	for _, r := range got {
		if r.text != Watchdog {
			t.Fatalf("datagram %q, want %q", r.text, Watchdog)
		}
	}
	if d := got[0].at.Sub(start); d > 50*time.Millisecond {
		t.Errorf("first ping after %v, want at once", d)
	}
	// Ticks are 200ms apart; scheduling may delay one, but none may come
	// much early and none may reach the 400ms deadline.
	for i := 1; i < len(got); i++ {
		gap := got[i].at.Sub(got[i-1].at)
		if gap < 120*time.Millisecond || gap >= 400*time.Millisecond {
			t.Errorf("gap %d→%d is %v, want about 200ms", i-1, i, gap)
		}
	}
	// After ctx ends nothing more is sent.
	n := len(m.all())
	time.Sleep(450 * time.Millisecond)
	if after := len(m.all()); after != n {
		t.Errorf("%d pings after RunWatchdog returned", after-n)
	}
}

func TestRunWatchdogStopsPingingWhileUnhealthy(t *testing.T) {
	m := listen(t, filepath.Join(t.TempDir(), "notify.sock"))
	t.Setenv("WATCHDOG_USEC", "100000") // a ping every 50ms
	t.Setenv("WATCHDOG_PID", "")
	var mu sync.Mutex
	var sick error
	healthy := func() error { mu.Lock(); defer mu.Unlock(); return sick }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go RunWatchdog(ctx, nil, healthy)
	m.waitFor(t, 3)
	mu.Lock()
	sick = errors.New("event loops stopped")
	mu.Unlock()
	time.Sleep(60 * time.Millisecond) // let a tick that already passed the check land
	n := len(m.all())
	time.Sleep(300 * time.Millisecond)
	if after := len(m.all()); after != n {
		t.Fatalf("%d pings while unhealthy", after-n)
	}
	mu.Lock()
	sick = nil
	mu.Unlock()
	m.waitFor(t, n+2)
}

func TestWatchdogForAnotherProcessIsOff(t *testing.T) {
	m := listen(t, filepath.Join(t.TempDir(), "notify.sock"))
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	RunWatchdog(ctx, nil, nil) // returns at once: the watchdog is not ours
	if ctx.Err() != nil {
		t.Fatal("RunWatchdog waited for ctx although WATCHDOG_PID is another process")
	}
	if got := m.all(); len(got) != 0 {
		t.Fatalf("pings for another process's watchdog: %v", got)
	}
}

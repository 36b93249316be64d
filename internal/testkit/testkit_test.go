package testkit

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLockedBufferConcurrentWrites(t *testing.T) {
	var b LockedBuffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				fmt.Fprintf(&b, "%d\n", i)
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if n := strings.Count(b.String(), "\n"); n != 800 {
		t.Fatalf("%d lines, want 800", n)
	}
}

func TestStartProcessEchoesAndIsReaped(t *testing.T) {
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Skip("no cat")
	}
	p := StartProcess(t, exec.Command(cat))
	if _, err := p.Stdin.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); p.Out.String() != "hello\n"; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("output %q", p.Out.String())
		}
	}
	p.Stdin.Close()
	select {
	case <-p.Exited():
	case <-time.After(5 * time.Second):
		t.Fatal("cat did not end when its stdin closed")
	}
}

// fatalRecorder notes a Fatal instead of ending the test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Fatal(args ...any) { r.msg = fmt.Sprint(args...); runtime.Goexit() }
func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// fails runs f with a fatalRecorder and returns the failure it reported.
func fails(t *testing.T, f func(tb testing.TB)) string {
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.msg
}

func TestCheckCPUProfile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "cpu.pprof")
	f, err := os.Create(good)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	pprof.StopCPUProfile()
	f.Close()
	CheckCPUProfile(t, good)

	heap := filepath.Join(dir, "heap.pprof")
	f, err = os.Create(heap)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	raw, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	cut := filepath.Join(dir, "cut.pprof")
	if err := os.WriteFile(cut, raw[:len(raw)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("cpu nanoseconds"), 0o644); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{heap: "not a CPU profile", cut: "cut short", plain: "not gzip", filepath.Join(dir, "none"): "no such file"} {
		if msg := fails(t, func(tb testing.TB) { CheckCPUProfile(tb, path) }); !strings.Contains(msg, want) {
			t.Errorf("%s: failure %q, want %q", filepath.Base(path), msg, want)
		}
	}
}

func TestUDPListenerReadUntil(t *testing.T) {
	l := ListenUDP(t)
	c, err := net.Dial("udp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, d := range []string{"a:1|c", "b:2|g"} {
		if _, err := c.Write([]byte(d)); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	if !l.ReadUntil(time.Now().Add(5*time.Second), func(d []byte) bool {
		got = append(got, string(d))
		return len(got) == 2
	}) {
		t.Fatalf("received %q within 5 s, want two datagrams", got)
	}
	if got[0] != "a:1|c" || got[1] != "b:2|g" {
		t.Fatalf("received %q", got)
	}
	start := time.Now()
	if l.ReadUntil(start.Add(300*time.Millisecond), func([]byte) bool { return true }) {
		t.Fatal("ReadUntil reported a datagram nobody sent")
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 2*time.Second {
		t.Fatalf("ReadUntil with nothing to read returned after %v, want the 300 ms deadline", took)
	}
}

package testkit

import (
	"io"
	"os/exec"
	"testing"
)

// Process is a child process a test drives through its stdin and watches
// through its output (stdout and stderr together, in Out).
type Process struct {
	Cmd    *exec.Cmd
	Stdin  io.WriteCloser
	Out    LockedBuffer
	exited chan struct{}
}

// StartProcess starts cmd with a pipe for its stdin and its stdout and
// stderr written to Out. When the test ends, stdin is closed and the
// process killed and reaped.
func StartProcess(t testing.TB, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{Cmd: cmd, exited: make(chan struct{})}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("%s: stdin: %v", cmd.Path, err)
	}
	p.Stdin = stdin
	cmd.Stdout, cmd.Stderr = &p.Out, &p.Out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.Stdin.Close()
		_ = cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// Exited is closed once the process has ended and its output is all in
// Out.
func (p *Process) Exited() <-chan struct{} { return p.exited }

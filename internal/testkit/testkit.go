// Package testkit holds helpers shared by tests; it is imported only from
// _test.go files. It imports nothing from this module, so the tests of any
// package (netloop and spool included) can use it without an import cycle:
// a buffer a child process or a logger writes while the test reads it, a
// child process driven through its stdin, a UDP socket that receives
// datagrams (StatsD pushes), and a check of a pprof CPU profile.
package testkit

import (
	"bytes"
	"sync"
)

// LockedBuffer is a bytes.Buffer safe for one writer (a child process's
// output, a logger) and readers in other goroutines at once.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p to the buffer.
func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns a copy of everything written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

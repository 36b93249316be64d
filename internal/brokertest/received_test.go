package brokertest

import (
	"fmt"
	"testing"
	"time"
)

// errorsOf is a testing.TB that keeps what Errorf said.
type errorsOf struct {
	testing.TB
	said []string
}

func (e *errorsOf) Errorf(format string, args ...any) {
	e.said = append(e.said, fmt.Sprintf(format, args...))
}

// Check passes once every VIN has a connectivity record, including one
// that arrives while it waits, and fails on a VIN without one or on a
// stray message.
func TestReceivedCheck(t *testing.T) {
	r := NewReceived()
	r.Connectivity("A")
	go func() {
		time.Sleep(50 * time.Millisecond)
		r.Connectivity("B")
	}()
	ok := &errorsOf{TB: t}
	r.Check(ok, []string{"A", "B"}, 5*time.Second)
	if len(ok.said) > 0 {
		t.Errorf("both VINs connected: %q", ok.said)
	}

	missing := &errorsOf{TB: t}
	start := time.Now()
	r.Check(missing, []string{"A", "C"}, 100*time.Millisecond)
	if len(missing.said) != 1 || time.Since(start) < 100*time.Millisecond {
		t.Errorf("C never connected: said %q after %s", missing.said, time.Since(start))
	}

	r.Stray("subject x.y")
	stray := &errorsOf{TB: t}
	r.Check(stray, []string{"A"}, time.Second)
	if len(stray.said) != 1 {
		t.Errorf("a stray message: said %q", stray.said)
	}
}

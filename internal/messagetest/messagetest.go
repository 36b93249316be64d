// Package messagetest holds test helpers for the lists of messages for
// people that checks return (problems, warnings): a test names a part of
// each message it expects, and how many there are.
package messagetest

import (
	"strings"
	"testing"
)

// Contains reports whether one of msgs contains sub.
func Contains(msgs []string, sub string) bool {
	for _, m := range msgs {
		if strings.Contains(m, sub) {
			return true
		}
	}
	return false
}

// Match fails t unless got holds exactly len(want) messages and each of
// want is part of one of them. kind names a message in the failures
// ("problem", "warning").
func Match(t testing.TB, kind string, got, want []string) {
	t.Helper()
	for _, w := range want {
		if !Contains(got, w) {
			t.Errorf("no %s says %q:\n%s", kind, w, strings.Join(got, "\n"))
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d %ss, want %d:\n%s", len(got), kind, len(want), strings.Join(got, "\n"))
	}
}

package messagetest

import (
	"strings"
	"testing"
)

func TestContains(t *testing.T) {
	msgs := []string{"ca is missing", "port 0 is out of range"}
	if !Contains(msgs, "out of range") || !Contains(msgs, "ca is missing") {
		t.Error("Contains misses a part of a message")
	}
	if Contains(msgs, "hostname") || Contains(nil, "") {
		t.Error("Contains finds what no message holds")
	}
}

// recorder is a testing.TB that keeps the failures it is told.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper()                           {}
func (r *recorder) Errorf(format string, args ...any) { r.errs = append(r.errs, format) }

func TestMatch(t *testing.T) {
	got := []string{"ca is missing", "port 0 is out of range"}
	for _, tc := range []struct {
		name string
		want []string
		errs []string
	}{
		{"all found", []string{"ca is", "port 0"}, nil},
		{"one not found", []string{"ca is", "hostname"}, []string{"no %s says %q:\n%s"}},
		{"one more message than wanted", []string{"port 0"}, []string{"%d %ss, want %d:\n%s"}},
		{"none wanted", nil, []string{"%d %ss, want %d:\n%s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{TB: t}
			Match(r, "problem", got, tc.want)
			if strings.Join(r.errs, "|") != strings.Join(tc.errs, "|") {
				t.Errorf("failures %q, want %q", r.errs, tc.errs)
			}
		})
	}
}

package timefmt

import (
	"testing"
	"time"
)

func TestStamp(t *testing.T) {
	at := time.Date(2026, 6, 11, 14, 0, 0, 0, time.FixedZone("CEST", 2*3600))
	if got, want := Stamp(at), "2026-06-11 12:00:00 UTC"; got != want {
		t.Errorf("Stamp = %q, want %q", got, want)
	}
}

func TestSpan(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0 seconds"},
		{119 * time.Second, "119 seconds"},
		{2 * time.Minute, "2 minutes"},
		{119 * time.Minute, "119 minutes"},
		{2 * time.Hour, "2 hours"},
		{47*time.Hour + 59*time.Minute, "47 hours"},
		{48 * time.Hour, "2 days"},
		{10*24*time.Hour + 5*time.Hour, "10 days"},
		{-10 * time.Minute, "10 minutes"},
	} {
		if got := Span(tc.d); got != tc.want {
			t.Errorf("Span(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

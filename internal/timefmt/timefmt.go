// Package timefmt says times and durations for people: the wording the
// certificate and configuration checks use in their messages.
package timefmt

import (
	"fmt"
	"time"
)

// Stamp is t in UTC to the second, as "2026-06-11 12:00:00 UTC".
func Stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

// Span says the length of d (its sign dropped) in the largest whole unit
// that fits: days from 48 hours, hours from 2 hours, minutes from 2
// minutes, seconds below that.
func Span(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%d hours", d/time.Hour)
	case d >= 2*time.Minute:
		return fmt.Sprintf("%d minutes", d/time.Minute)
	}
	return fmt.Sprintf("%d seconds", d/time.Second)
}

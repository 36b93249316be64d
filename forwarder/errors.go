package forwarder

import (
	"errors"
	"fmt"
)

// BatchError is what a Sink returns for a batch it confirmed only in part:
// Failed lists the records it did not confirm, by their index in the
// batch, each with its error. Every record not listed was confirmed, and
// the forwarder never sends it again.
type BatchError struct {
	Failed []RecordError
}

// RecordError is one record of a batch a sink did not confirm.
type RecordError struct {
	Index int
	Err   error
}

func (e *BatchError) Error() string {
	if len(e.Failed) == 0 {
		return "forwarder: batch error without failures"
	}
	return fmt.Sprintf("%d records not confirmed; first (index %d): %v", len(e.Failed), e.Failed[0].Index, e.Failed[0].Err)
}

// PermanentError marks a record the sink refuses for good (over the
// broker's size limit, say): sending it again cannot succeed until the
// sink's configuration changes. The forwarder moves such a record to the
// spool's quarantine instead of retrying it, once it failed alone.
//
// A sink marks an error permanent only when it is sure the record itself
// is at fault; anything else (a network error, a broker down, throttling,
// a missing topic, an error it does not know) is retried.
type PermanentError struct {
	// Reason is a short class for metrics and logs, e.g.
	// "message_too_large".
	Reason string
	Err    error
}

func (e *PermanentError) Error() string { return e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as a permanent refusal of a record, for reason.
func Permanent(reason string, err error) error {
	return &PermanentError{Reason: reason, Err: err}
}

// IsPermanent reports whether err marks a permanent refusal, and its
// reason.
func IsPermanent(err error) (reason string, ok bool) {
	var pe *PermanentError
	if errors.As(err, &pe) {
		return pe.Reason, true
	}
	return "", false
}

// recordErrors spreads a Send's result over the n records sent: nil for
// a confirmed record, its error otherwise.
func recordErrors(err error, n int, dst []error) []error {
	dst = append(dst[:0], make([]error, n)...)
	if err == nil {
		return dst
	}
	var be *BatchError
	if errors.As(err, &be) {
		for _, f := range be.Failed {
			if f.Index >= 0 && f.Index < n {
				dst[f.Index] = f.Err
			}
		}
		return dst
	}
	for i := range dst {
		dst[i] = err
	}
	return dst
}

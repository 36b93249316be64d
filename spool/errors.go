package spool

import "fmt"

// CorruptRecordError is returned by Read for a stored record that cannot be
// read back or decoded. Read returns the records before it alongside, so a
// reader can deliver those and then decide about the damaged one (skip it,
// after saying so loudly) instead of stopping at it for ever.
type CorruptRecordError struct {
	// Seq is the damaged record's sequence number.
	Seq uint64
	// Err is what went wrong.
	Err error
}

func (e *CorruptRecordError) Error() string {
	return fmt.Sprintf("spool: record %d is damaged: %v", e.Seq, e.Err)
}

func (e *CorruptRecordError) Unwrap() error { return e.Err }

package netloop

import "github.com/fleet-telemetry/fleet-telemetry/spool"

// Spool is what the server needs of the write-ahead spool. *spool.Spool is
// the one the daemon passes; its methods are safe for concurrent use.
type Spool interface {
	// Append copies r into the spool without waiting for the disk and sets
	// r.Seq. w (nil for records nobody acks) is told, with token, once the
	// record is durable or its commit failed; not when Append returns an
	// error (spool.ErrFull, spool.ErrBusy, ...), which means nothing was
	// kept.
	Append(r *spool.Record, w spool.Waiter, token uint64) error
	// LastSeq is the sequence number of the last record committed.
	LastSeq() uint64
}

var _ Spool = (*spool.Spool)(nil)

package netloop

import (
	"crypto/tls"
	"fmt"
	"sync"
	"testing"

	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// refusingSpool is the real spool with one refusal put in front of it: the
// refusal a struggling disk causes (the spool busy recovering from a
// failed commit), on a chosen record.
type refusingSpool struct {
	*spool.Spool
	refuseAt int // 1-based Append call to refuse
	err      error

	mu      sync.Mutex
	appends int
}

func (s *refusingSpool) Append(r *spool.Record, w spool.Waiter, token uint64) error {
	s.mu.Lock()
	s.appends++
	n := s.appends
	s.mu.Unlock()
	if n == s.refuseAt {
		return s.err
	}
	return s.Spool.Append(r, w, token)
}

// TestRefusedRecordIsNeverAcked: acked on receipt, a record the spool
// refuses takes its ack back: the records before it are acked, it is not,
// and the vehicle is shed with 1013 to resend it.
func TestRefusedRecordIsNeverAcked(t *testing.T) {
	e := newTestEnv(t, allTopics, func(o *Options) {
		o.AckMode = AckOnReceipt
		o.Spool = &refusingSpool{Spool: o.Spool.(*spool.Spool), refuseAt: 3, err: spool.ErrBusy}
	})
	before := refusedSpoolBusy.Get()
	c := e.dial(t, vinA)
	c.SendMany(numberedRecords("busy", "V", "V", "V", "V"))
	expectAck(t, c, "busy-0", "V")
	expectAck(t, c, "busy-1", "V")
	expectShed(t, c) // and no ack for busy-2
	if got := refusedSpoolBusy.Get() - before; got != 1 {
		t.Fatalf("spool_busy counted %d, want 1", got)
	}
	waitFor(t, func() bool { return len(spooled(t, e.sp)) == 2 })
	for i, rec := range spooled(t, e.sp) {
		if want := fmt.Sprintf("busy-%d", i); string(rec.TxID) != want {
			t.Fatalf("spool record %d is %q, want %q", i, rec.TxID, want)
		}
	}
}

// TestRecordTooLargeForSpoolIsRefusedNotShed: a record larger than the
// spool takes in one commit (spool.ErrTooLarge) gets an error reply, counted
// as record_too_big; the connection stays up and the records after it are
// kept and acked. Shedding would only have the vehicle resend it forever.
func TestRecordTooLargeForSpoolIsRefusedNotShed(t *testing.T) {
	e := newTestEnv(t, allTopics, func(o *Options) {
		o.Spool = &refusingSpool{Spool: o.Spool.(*spool.Spool), refuseAt: 2, err: spool.ErrTooLarge}
	})
	before, closedBefore := recTooBig.Get(), refusedSpoolClosed.Get()
	c := e.dial(t, vinA)
	c.SendMany(numberedRecords("big", "V", "V", "V"))
	expectAck(t, c, "big-0", "V")
	if r := mustReply(t, c); r.Ack || r.TxID != "big-1" {
		t.Fatalf("got %+v, want an error reply for big-1", r)
	}
	expectAck(t, c, "big-2", "V")
	if got := recTooBig.Get() - before; got != 1 {
		t.Fatalf("record_too_big counted %d, want 1", got)
	}
	if got := refusedSpoolClosed.Get() - closedBefore; got != 0 {
		t.Fatalf("spool_closed counted %d, want 0", got)
	}
	var txids []string
	for _, rec := range spooled(t, e.sp) {
		txids = append(txids, string(rec.TxID))
	}
	if fmt.Sprint(txids) != "[big-0 big-2]" {
		t.Fatalf("spooled %v, want [big-0 big-2]", txids)
	}
}

// TestNewRefusesNilSpool: no spool, or a nil *spool.Spool, is an error.
func TestNewRefusesNilSpool(t *testing.T) {
	cfg := &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}
	for _, sp := range []Spool{nil, (*spool.Spool)(nil)} {
		if _, err := New(Options{TLS: cfg, Spool: sp}); err == nil {
			t.Fatalf("New with Spool %#v: no error", sp)
		}
	}
}

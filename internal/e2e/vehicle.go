package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
)

// TryDial connects vin (its certificate from the devca directory certs)
// to the daemon at addr within 5 s, with the Version header a car sends.
func TryDial(addr, certs, vin string) (*vehicle.Client, error) {
	return dial(addr, certs, vin, 5*time.Second)
}

// Dial is TryDial within 10 s that fails the test on an error and closes
// the connection when the test ends.
func Dial(t TB, addr, certs, vin string) *vehicle.Client {
	t.Helper()
	c, err := dial(addr, certs, vin, 10*time.Second)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dial(addr, certs, vin string, timeout time.Duration) (*vehicle.Client, error) {
	tlsCfg, err := vehicle.TLSFromDir(certs, vin)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return vehicle.Dial(ctx, vehicle.Config{Addr: addr, TLS: tlsCfg, Header: http.Header{"Version": []string{"e2e"}}})
}

// SendAndAck pipelines records on one connection and checks that every
// reply is the ack of its record (txid and topic), in order.
func SendAndAck(t TB, c *vehicle.Client, ms []*envelope.StreamMessage) {
	t.Helper()
	if err := c.SendMany(ms); err != nil {
		t.Fatalf("send: %v", err)
	}
	for i, m := range ms {
		r, err := c.ReadReply(10 * time.Second)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if !r.Ack || r.TxID != string(m.TxID) || r.Topic != string(m.Topic) {
			t.Fatalf("record %d: got %+v, want ack txid=%s topic=%s", i, r, m.TxID, m.Topic)
		}
	}
}

// SendAcked connects each of vins in turn, sends it the n records
// record(vin, 0..n-1) on one connection with SendAndAck, and returns the
// txids acked.
func SendAcked(t TB, addr, certs string, vins []string, n int, record func(vin string, i int) *envelope.StreamMessage) map[string]bool {
	t.Helper()
	acked := map[string]bool{}
	for _, vin := range vins {
		c := Dial(t, addr, certs, vin)
		ms := make([]*envelope.StreamMessage, n)
		for i := range ms {
			ms[i] = record(vin, i)
		}
		SendAndAck(t, c, ms)
		for _, m := range ms {
			acked[string(m.TxID)] = true
		}
	}
	return acked
}

// LoadOptions shape a Load.
type LoadOptions struct {
	// Interval is the time between two sends of one vehicle (a ticker: a
	// late ack delays the next send, no more).
	Interval time.Duration
	// ReplyTimeout bounds the wait for each ack (default 10 s).
	ReplyTimeout time.Duration
	// Record builds the i-th record a vehicle sends; its TxID names it.
	Record func(vin string, i int) *envelope.StreamMessage
}

// Load keeps vehicles sending, each one record at a time and waiting for
// its ack, and records what was acked and when. The first failure of a
// vehicle (a send, a reply, a reply that is not the ack) stops that
// vehicle and is kept.
type Load struct {
	o       LoadOptions
	mu      sync.Mutex
	acked   map[string]time.Time
	maxWait time.Duration
	errs    []error
	stop    chan struct{}
	halt    sync.Once
	stopped sync.WaitGroup
}

// StartLoad dials vins (failing the test if one cannot connect) and
// starts their loops; Halt stops them.
func StartLoad(t TB, addr, certs string, vins []string, o LoadOptions) *Load {
	t.Helper()
	if o.ReplyTimeout <= 0 {
		o.ReplyTimeout = 10 * time.Second
	}
	l := &Load{o: o, acked: map[string]time.Time{}, stop: make(chan struct{})}
	for _, vin := range vins {
		c := Dial(t, addr, certs, vin)
		l.stopped.Add(1)
		go l.run(c, vin)
	}
	t.Cleanup(l.Halt)
	return l
}

func (l *Load) run(c *vehicle.Client, vin string) {
	defer l.stopped.Done()
	tick := time.NewTicker(l.o.Interval)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		m := l.o.Record(vin, i)
		tx := string(m.TxID)
		start := time.Now()
		if err := c.Send(m); err != nil {
			l.fail(fmt.Errorf("%s: send %s: %w", vin, tx, err))
			return
		}
		r, err := c.ReadReply(l.o.ReplyTimeout)
		if err != nil {
			l.fail(fmt.Errorf("%s: reply for %s: %w", vin, tx, err))
			return
		}
		if !r.Ack || r.TxID != tx {
			l.fail(fmt.Errorf("%s: got %+v, want the ack of %s", vin, r, tx))
			return
		}
		now := time.Now()
		l.mu.Lock()
		l.acked[tx] = now
		l.maxWait = max(l.maxWait, now.Sub(start))
		l.mu.Unlock()
	}
}

func (l *Load) fail(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, err)
	l.mu.Unlock()
}

// Halt stops every vehicle and waits for their loops to end; it may be
// called more than once.
func (l *Load) Halt() {
	l.halt.Do(func() { close(l.stop) })
	l.stopped.Wait()
}

// Halted reports whether Halt was called.
func (l *Load) Halted() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

// Snapshot returns the acked txids, how many were acked in [from, to),
// and the failures so far.
func (l *Load) Snapshot(from, to time.Time) (all map[string]bool, inWindow int, errs []error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	all = make(map[string]bool, len(l.acked))
	for tx, at := range l.acked {
		all[tx] = true
		if !at.Before(from) && at.Before(to) {
			inWindow++
		}
	}
	return all, inWindow, append([]error(nil), l.errs...)
}

// Count is how many records were acked so far.
func (l *Load) Count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// MaxWait is the longest a record waited for its ack so far.
func (l *Load) MaxWait() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.maxWait
}

// Stop halts the load and returns what it saw: the acked txids, the
// longest wait for an ack and the failures.
func (l *Load) Stop() (acked map[string]bool, maxWait time.Duration, errs []error) {
	l.Halt()
	acked, _, errs = l.Snapshot(time.Time{}, time.Now())
	return acked, l.MaxWait(), errs
}

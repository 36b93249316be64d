package forwarder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func openSpool(t *testing.T, dir string, consumers ...string) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(spool.Options{Dir: dir, Consumers: consumers, Logger: quiet})
	if err != nil {
		t.Fatalf("spool.Open: %v", err)
	}
	t.Cleanup(func() { _ = sp.Close() })
	return sp
}

// openVLane opens a spool in a temporary directory whose one cursor is the
// V lane of the forwarder name, and returns it with the lane's name.
func openVLane(t *testing.T, name string) (*spool.Spool, string) {
	t.Helper()
	lane := LaneName(name, "V")
	return openSpool(t, t.TempDir(), lane), lane
}

// commitWaiter collects commit results; buffered so Committed never blocks.
type commitWaiter chan error

func (w commitWaiter) Committed(_, _ uint64, err error) { w <- err }

const testVIN = "5YJ3E1EA1KF000001"

// appendRecs appends one record per topic (VIN testVIN) and waits until
// all are durable. It returns their seqs.
func appendRecs(t testing.TB, sp *spool.Spool, topics ...string) []uint64 {
	t.Helper()
	vins := make([]string, len(topics))
	for i := range vins {
		vins[i] = testVIN
	}
	return appendFor(t, sp, vins, topics)
}

// appendFor appends one record per (vin, topic) and waits until all are
// durable. It returns their seqs.
func appendFor(t testing.TB, sp *spool.Spool, vins, topics []string) []uint64 {
	t.Helper()
	w := make(commitWaiter, len(topics))
	seqs := make([]uint64, 0, len(topics))
	for i, topic := range topics {
		r := spool.Record{
			ReceivedAtMs: 1_700_000_000_000 + int64(i),
			CreatedAtSec: 1_700_000_000,
			VIN:          vins[i],
			Topic:        []byte(topic),
			TxID:         []byte(fmt.Sprintf("tx-%d", i)),
			Payload:      bytes.Repeat([]byte{byte(i)}, 100),
		}
		if err := sp.Append(&r, w, 0); err != nil {
			t.Fatalf("Append: %v", err)
		}
		seqs = append(seqs, r.Seq)
	}
	for range topics {
		if err := <-w; err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	return seqs
}

func repeat(topic string, n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = topic
	}
	return s
}

// testSink confirms records and records what it got. result, when set,
// decides each record's outcome per call (nil: confirmed); hook runs first
// on every call. It is safe for the concurrent Sends of several lanes.
type testSink struct {
	mu        sync.Mutex
	calls     int
	sends     [][]uint64 // every call's seqs
	confirmed []uint64   // confirmed seqs, in order
	topics    []string   // topics of confirmed records, in order
	result    func(call int, batch []spool.Record) []error
	hook      func(call int, batch []spool.Record)
}

// failAll is a result that fails every record of every call with err.
func failAll(err error) func(int, []spool.Record) []error {
	return func(_ int, batch []spool.Record) []error {
		errs := make([]error, len(batch))
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
}

func (s *testSink) Send(_ context.Context, batch []spool.Record) error {
	s.mu.Lock()
	call := s.calls
	s.calls++
	seqs := make([]uint64, len(batch))
	for i, r := range batch {
		seqs[i] = r.Seq
	}
	s.sends = append(s.sends, seqs)
	hook, result := s.hook, s.result
	s.mu.Unlock()
	if hook != nil {
		hook(call, batch)
	}
	errs := make([]error, len(batch))
	if result != nil {
		errs = result(call, batch)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var be BatchError
	for i, r := range batch {
		if errs[i] != nil {
			be.Failed = append(be.Failed, RecordError{Index: i, Err: errs[i]})
			continue
		}
		s.confirmed = append(s.confirmed, r.Seq)
		s.topics = append(s.topics, string(r.Topic))
	}
	switch {
	case len(be.Failed) == 0:
		return nil
	case len(be.Failed) == len(batch):
		return errs[0] // a plain error: nothing confirmed
	}
	return &be
}

func (s *testSink) delivered() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.confirmed)
}

func (s *testSink) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func (s *testSink) sent() [][]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sends)
}

func counter(kind, name string) *metrics.Counter {
	return metrics.GetOrCreateCounter(`fleet_forwarder_` + kind + `_total{forwarder="` + name + `"}`)
}

func newForwarder(t *testing.T, sp *spool.Spool, sink Sink, o Options) *Forwarder {
	t.Helper()
	if o.MinBackoff == 0 {
		o.MinBackoff = time.Millisecond
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 5 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = quiet
	}
	if len(o.Topics) == 0 {
		o.Topics = []string{"V"}
	}
	f, err := New(sp, sink, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return f
}

func drain(t *testing.T, f *Forwarder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
}

func cursor(t *testing.T, sp *spool.Spool, name string) uint64 {
	t.Helper()
	c, err := sp.Cursor(name)
	if err != nil {
		t.Fatalf("Cursor(%q): %v", name, err)
	}
	return c
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// run starts f.Run and returns a stop function that cancels it and checks
// it returned nil.
func run(t *testing.T, f *Forwarder) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	return func() {
		t.Helper()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	}
}

func TestNewRequiresNameAndTypes(t *testing.T) {
	sp := openSpool(t, t.TempDir())
	if _, err := New(sp, &testSink{}, Options{Topics: []string{"V"}}); err == nil {
		t.Fatal("New with no Name: want error")
	}
	if _, err := New(sp, &testSink{}, Options{Name: "x"}); err == nil {
		t.Fatal("New with no record types: want error")
	}
	if _, err := New(sp, &testSink{}, Options{Name: "x", Topics: []string{"V", "V"}}); err == nil {
		t.Fatal("New with a record type twice: want error")
	}
}

// A lane reads its record type only; its cursor passes the others,
// including when the last records are all of other types.
func TestLaneTakesItsTypeAndPassesTheRest(t *testing.T) {
	const name = "skip"
	sp, lane := openVLane(t, name)
	seqs := appendRecs(t, sp, "V", "alerts", "V", "errors", "connectivity", "V", "alerts", "alerts")
	sink := &testSink{}
	f := newForwarder(t, sp, sink, Options{Name: name, Topics: []string{"V"}, BatchRecords: 3})
	drain(t, f)

	want := []uint64{seqs[0], seqs[2], seqs[5]}
	if got := sink.delivered(); !slices.Equal(got, want) {
		t.Fatalf("delivered seqs %v, want %v", got, want)
	}
	for _, topic := range sink.topics {
		if topic != "V" {
			t.Fatalf("sink got a %q record", topic)
		}
	}
	if c, last := cursor(t, sp, lane), sp.LastSeq(); c != last {
		t.Fatalf("lane cursor %d, want LastSeq %d", c, last)
	}
	for _, b := range sink.sent() {
		if len(b) == 0 {
			t.Fatal("empty batch sent")
		}
	}
}

// Every lane of a forwarder delivers its own type; one whose records the
// sink cannot take (a missing topic) waits and retries on its own while
// the others keep flowing, and catches up once the sink takes its records.
func TestStuckLaneDoesNotHoldBackTheOthers(t *testing.T) {
	const name = "lanes"
	types := []string{"V", "alerts", "connectivity"}
	sp := openSpool(t, t.TempDir(), LaneNames(name, types)...)
	var mu sync.Mutex
	topicMissing := true
	sink := &testSink{result: func(_ int, batch []spool.Record) []error {
		mu.Lock()
		defer mu.Unlock()
		errs := make([]error, len(batch))
		for i, r := range batch {
			if topicMissing && string(r.Topic) == "connectivity" {
				errs[i] = errors.New("UNKNOWN_TOPIC_OR_PARTITION")
			}
		}
		return errs
	}}
	f := newForwarder(t, sp, sink, Options{Name: name, Topics: types, BatchRecords: 4})
	stop := run(t, f)
	defer stop()
	var seqs []uint64
	for range 5 {
		seqs = append(seqs, appendRecs(t, sp, "connectivity", "V", "alerts", "V")...)
	}
	waitFor(t, "every V and alerts record", func() bool { return len(sink.delivered()) == 15 })
	for _, st := range f.Lanes() {
		switch st.RecordType {
		case "connectivity":
			if st.Lag == 0 || st.OldestWaitingMs == 0 || st.LastError == "" {
				t.Fatalf("stuck lane status %+v: want lag, oldest waiting and last error", st)
			}
		default:
			if st.OldestWaitingMs != 0 {
				t.Fatalf("lane %s has records waiting: %+v", st.RecordType, st)
			}
		}
	}
	mu.Lock()
	topicMissing = false
	mu.Unlock()
	waitFor(t, "the connectivity records", func() bool { return len(sink.delivered()) == len(seqs) })
	got := slices.Sorted(slices.Values(sink.delivered()))
	if !slices.Equal(got, seqs) {
		t.Fatalf("delivered %v, want each of %v once", got, seqs)
	}
}

// A sink that confirms part of a batch gets only the rest again: no record
// it took is ever sent twice.
func TestOnlyUnconfirmedRecordsAreSentAgain(t *testing.T) {
	const name = "partial"
	sp, _ := openVLane(t, name)
	seqs := appendRecs(t, sp, repeat("V", 10)...)
	sent0 := counter("sent", name).Get()
	// The first call fails every third record; later calls take all.
	sink := &testSink{result: func(call int, batch []spool.Record) []error {
		errs := make([]error, len(batch))
		if call == 0 {
			for i := range errs {
				if i%3 == 1 {
					errs[i] = errors.New("throttled")
				}
			}
		}
		return errs
	}}
	drain(t, newForwarder(t, sp, sink, Options{Name: name}))
	sends := sink.sent()
	if len(sends) != 2 {
		t.Fatalf("sends %v, want 2", sends)
	}
	if want := []uint64{seqs[1], seqs[4], seqs[7]}; !slices.Equal(sends[1], want) {
		t.Fatalf("second send %v, want only the records not confirmed, %v", sends[1], want)
	}
	got := sink.delivered()
	if !slices.Equal(slices.Sorted(slices.Values(got)), seqs) || len(got) != len(seqs) {
		t.Fatalf("delivered %v, want each of %v once", got, seqs)
	}
	if d := counter("sent", name).Get() - sent0; d != 10 {
		t.Fatalf("sent counter grew by %d, want 10", d)
	}
}

// A record the sink refuses for good is judged alone before it is
// quarantined: its batch-mates are delivered, it moves to the spool's
// quarantine (counted, with its reason) in the commit that passes it, and
// the lane goes on. Replay sends it again once the sink takes it.
func TestRefusedRecordIsQuarantinedAlone(t *testing.T) {
	const name = "poison"
	sp, lane := openVLane(t, name)
	seqs := appendRecs(t, sp, repeat("V", 6)...)
	poison := seqs[2]
	var mu sync.Mutex
	limitRaised := false
	tooLarge := Permanent("message_too_large", errors.New("MESSAGE_TOO_LARGE"))
	// Like a broker refusing a whole request for one record: any send
	// that holds the poison record fails whole.
	sink := &testSink{result: func(_ int, batch []spool.Record) []error {
		mu.Lock()
		defer mu.Unlock()
		errs := make([]error, len(batch))
		for _, r := range batch {
			if r.Seq == poison && !limitRaised {
				for i := range errs {
					errs[i] = tooLarge
				}
			}
		}
		return errs
	}}
	quarantined := metrics.GetOrCreateCounter(`fleet_forwarder_quarantined_total{dispatcher="poison",record_type="V",reason="message_too_large"}`)
	before := quarantined.Get()
	f := newForwarder(t, sp, sink, Options{Name: name, BatchRecords: 10})
	drain(t, f)
	want := slices.Delete(slices.Clone(seqs), 2, 3)
	got := sink.delivered()
	if !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v (all but the poison record %d, each once)", got, want, poison)
	}
	if n := quarantined.Get() - before; n != 1 {
		t.Fatalf("quarantined counter moved by %d, want 1", n)
	}
	var q []spool.Quarantined
	if err := sp.Quarantine(lane, func(e *spool.Quarantined) bool { q = append(q, *e); return true }); err != nil {
		t.Fatal(err)
	}
	if len(q) != 1 || q[0].Record.Seq != poison || q[0].Reason != "message_too_large" || q[0].Sink != name ||
		string(q[0].Record.TxID) != "tx-2" || q[0].Error == "" {
		t.Fatalf("quarantine holds %+v, want the poison record with its reason", q)
	}
	if c := cursor(t, sp, lane); c != sp.LastSeq() {
		t.Fatalf("lane cursor %d, want %d", c, sp.LastSeq())
	}
	// Still refused: it stays.
	if err := f.Replay(context.Background(), "V", poison); err == nil {
		t.Fatal("replay of a record still refused succeeded")
	}
	if _, err := sp.QuarantinedRecord(lane, poison); err != nil {
		t.Fatalf("after a failed replay: %v", err)
	}
	mu.Lock()
	limitRaised = true
	mu.Unlock()
	if err := f.Replay(context.Background(), "V", poison); err != nil {
		t.Fatalf("replay: %v", err)
	}
	if _, err := sp.QuarantinedRecord(lane, poison); !errors.Is(err, spool.ErrNotQuarantined) {
		t.Fatalf("replayed record still quarantined: %v", err)
	}
	if got := sink.delivered(); got[len(got)-1] != poison {
		t.Fatalf("replay did not deliver %d: %v", poison, got)
	}
}

// A sink that confirms a record after an earlier one of the same VIN
// failed breaks the order contract: counted.
func TestOutOfOrderConfirmationIsCounted(t *testing.T) {
	const name = "order"
	sp, _ := openVLane(t, name)
	appendFor(t, sp, []string{"A", "A", "B"}, repeat("V", 3))
	before := counter("out_of_order", name).Get()
	sink := &testSink{result: func(call int, batch []spool.Record) []error {
		errs := make([]error, len(batch))
		if call == 0 {
			errs[0] = errors.New("throttled") // A's first fails, A's second is taken
		}
		return errs
	}}
	drain(t, newForwarder(t, sp, sink, Options{Name: name}))
	if n := counter("out_of_order", name).Get() - before; n != 1 {
		t.Fatalf("out_of_order counter moved by %d, want 1", n)
	}
}

// While the sink keeps failing the cursor does not move; Run still returns
// nil on cancellation, both while retrying quickly and while waiting out a
// long backoff.
func TestRunReturnsNilOnCancelWhileFailing(t *testing.T) {
	for _, tc := range []struct {
		name string
		min  time.Duration
		max  time.Duration
		hits int
	}{
		{"fast-retries", time.Millisecond, 2 * time.Millisecond, 5},
		{"long-backoff", time.Hour, time.Hour, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "cancel-" + tc.name
			sp, lane := openVLane(t, name)
			appendRecs(t, sp, "V", "V")
			sink := &testSink{result: failAll(errors.New("down"))}
			f := newForwarder(t, sp, sink, Options{Name: name, MinBackoff: tc.min, MaxBackoff: tc.max})
			stop := run(t, f)
			waitFor(t, "failed sends", func() bool { return sink.callCount() >= tc.hits })
			stop()
			if c := cursor(t, sp, lane); c != 0 {
				t.Fatalf("cursor %d after cancel, want 0", c)
			}
			if got := sink.delivered(); len(got) != 0 {
				t.Fatalf("delivered %v, want nothing", got)
			}
		})
	}
}

// With a backlog and a healthy sink, Run stops at the next batch boundary
// after ctx ends instead of draining the whole spool first, and the lane's
// last move is committed on the way out.
func TestRunStopsOnCancelWithBacklog(t *testing.T) {
	const name = "backlog"
	sp, lane := openVLane(t, name)
	seqs := appendRecs(t, sp, repeat("V", 50)...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sink := &testSink{hook: func(call int, _ []spool.Record) {
		if call == 0 {
			cancel()
		}
	}}
	f := newForwarder(t, sp, sink, Options{Name: name, BatchRecords: 1})
	if err := f.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := sink.callCount(); n != 1 {
		t.Fatalf("%d Send calls after cancel in the first, want 1", n)
	}
	if c := cursor(t, sp, lane); c != seqs[0] {
		t.Fatalf("cursor %d, want %d", c, seqs[0])
	}
}

// Run delivers records appended while it is running.
func TestRunFollowsAppends(t *testing.T) {
	const name = "follow"
	sp, lane := openVLane(t, name)
	sink := &testSink{}
	f := newForwarder(t, sp, sink, Options{Name: name})
	stop := run(t, f)
	var want []uint64
	for range 3 {
		seqs := appendRecs(t, sp, "V", "alerts", "V")
		want = append(want, seqs[0], seqs[2])
		waitFor(t, "the lane to pass LastSeq", func() bool { return cursor(t, sp, lane) == sp.LastSeq() })
	}
	stop()
	if got := sink.delivered(); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
}

// A lane whose type does not arrive is not woken by the commits of other
// types; it still passes them (on its poll), reports no lag, lets the
// spool trim, and wakes for its own type's commit.
func TestIdleLanePassesOtherTypesUnread(t *testing.T) {
	const name = "idle"
	vLane, aLane := LaneName(name, "V"), LaneName(name, "alerts")
	sp := openSpool(t, t.TempDir(), vLane, aLane)
	sink := &testSink{}
	f := newForwarder(t, sp, sink, Options{Name: name, Topics: []string{"V", "alerts"}})
	stop := run(t, f)
	defer stop()
	for range 20 {
		appendRecs(t, sp, "V", "V")
		for _, st := range f.Lanes() {
			if st.RecordType == "alerts" && st.Lag != 0 {
				t.Fatalf("alerts lane reports lag %d with no alerts record waiting", st.Lag)
			}
		}
	}
	waitFor(t, "the idle lane to pass the V records", func() bool { return cursor(t, sp, aLane) == sp.LastSeq() })
	waitFor(t, "the spool to trim what both lanes passed", func() bool { return sp.Stats().Records == 0 })
	seqs := appendRecs(t, sp, "alerts")
	waitFor(t, "the alerts record to be delivered", func() bool { return slices.Contains(sink.delivered(), seqs[0]) })
}

// Run on a spool that is closed under it returns an error instead of
// spinning on the closed commit channel.
func TestRunReturnsErrorWhenSpoolClosed(t *testing.T) {
	const name = "closed"
	sp, _ := openVLane(t, name)
	appendRecs(t, sp, "V")
	sink := &testSink{}
	f := newForwarder(t, sp, sink, Options{Name: name, Topics: []string{"V", "alerts"}})
	done := make(chan error, 1)
	go func() { done <- f.Run(context.Background()) }()
	waitFor(t, "first record", func() bool { return len(sink.delivered()) == 1 })
	if err := sp.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, spool.ErrClosed) {
			t.Fatalf("Run on a closed spool: %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run kept running on a closed spool")
	}
}

// After a clean run, a forwarder on the reopened spool resumes from the
// lanes' cursors: nothing is delivered twice, later appends are delivered,
// and what every lane passed is trimmed.
func TestResumeAfterReopen(t *testing.T) {
	const name = "resume"
	types := []string{"V", "errors"}
	lanes := LaneNames(name, types)
	dir := t.TempDir()
	sp := openSpool(t, dir, lanes...)
	first := appendRecs(t, sp, "V", "alerts", "V", "V")
	sink1 := &testSink{}
	drain(t, newForwarder(t, sp, sink1, Options{Name: name, Topics: types, BatchRecords: 2}))
	if got, want := sink1.delivered(), []uint64{first[0], first[2], first[3]}; !slices.Equal(got, want) {
		t.Fatalf("first run delivered %v, want %v", got, want)
	}
	if err := sp.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	sp = openSpool(t, dir, lanes...)
	for _, l := range lanes {
		if c := cursor(t, sp, l); c != first[3] {
			t.Fatalf("lane %s after reopen at %d, want %d", l, c, first[3])
		}
	}
	sink2 := &testSink{}
	f := newForwarder(t, sp, sink2, Options{Name: name, Topics: types, BatchRecords: 2})
	drain(t, f)
	if got := sink2.delivered(); len(got) != 0 {
		t.Fatalf("second run redelivered %v", got)
	}
	later := appendRecs(t, sp, "V", "errors", "V")
	drain(t, f)
	if got, want := slices.Sorted(slices.Values(sink2.delivered())), later; !slices.Equal(got, want) {
		t.Fatalf("second run delivered %v, want %v", got, want)
	}
	if err := sp.SetCursor(lanes[0], later[2]); err != nil { // a synchronous trim
		t.Fatal(err)
	}
	if st := sp.Stats(); st.Records != 0 {
		t.Fatalf("stats %+v: every record is passed by every lane and should be trimmed", st)
	}
}

// A run interrupted while a batch was failing leaves the lane before that
// batch; the next forwarder (after a reopen) delivers it (at-least-once).
func TestResumeAfterInterruptedRun(t *testing.T) {
	const name = "interrupted"
	lane := LaneName(name, "V")
	dir := t.TempDir()
	sp := openSpool(t, dir, lane)
	seqs := appendRecs(t, sp, repeat("V", 4)...)
	sink1 := &testSink{result: func(call int, batch []spool.Record) []error {
		if call >= 1 {
			return failAll(errors.New("down"))(call, batch)
		}
		return make([]error, len(batch))
	}}
	f := newForwarder(t, sp, sink1, Options{Name: name, BatchRecords: 2, Linger: -1})
	stop := run(t, f)
	waitFor(t, "failing retries", func() bool { return sink1.callCount() >= 3 })
	stop()
	if err := sp.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	sp = openSpool(t, dir, lane)
	if c := cursor(t, sp, lane); c != seqs[1] {
		t.Fatalf("cursor after reopen %d, want %d", c, seqs[1])
	}
	sink2 := &testSink{}
	drain(t, newForwarder(t, sp, sink2, Options{Name: name, BatchRecords: 2}))
	if got := sink2.delivered(); !slices.Equal(got, seqs[2:]) {
		t.Fatalf("resumed run delivered %v, want %v", got, seqs[2:])
	}
}

// A spool written before lanes has one cursor per forwarder: its lanes
// start there, and the old cursor is replaced by theirs.
func TestForwarderCursorSplitIntoLanes(t *testing.T) {
	const name = "legacy"
	types := []string{"V", "alerts"}
	lanes := LaneNames(name, types)
	sp := openSpool(t, t.TempDir(), lanes...)
	seqs := appendRecs(t, sp, "V", "alerts", "V", "alerts")
	if err := sp.SetCursor(name, seqs[1]); err != nil {
		t.Fatal(err)
	}
	sink := &testSink{}
	drain(t, newForwarder(t, sp, sink, Options{Name: name, Topics: types}))
	if got := slices.Sorted(slices.Values(sink.delivered())); !slices.Equal(got, seqs[2:]) {
		t.Fatalf("delivered %v, want only those after the old cursor, %v", got, seqs[2:])
	}
	st := sp.Stats()
	if _, ok := st.Cursors[name]; ok {
		t.Fatalf("the old cursor is still there: %v", st.Cursors)
	}
	for _, l := range lanes {
		if st.Cursors[l] != seqs[3] {
			t.Fatalf("cursors %v, want every lane at %d", st.Cursors, seqs[3])
		}
	}
}

// Drain stops once every lane passed the LastSeq of the moment it was
// called: records appended during the drain are not waited for (beyond
// the batch that happens to include them).
func TestDrainStopsAtLastSeqOfCall(t *testing.T) {
	const name = "drain"
	sp, lane := openVLane(t, name)
	seqs := appendRecs(t, sp, repeat("V", 5)...)
	target := seqs[4]
	var more []uint64
	sink := &testSink{hook: func(call int, _ []spool.Record) {
		if call == 0 { // keep the spool growing during the drain
			more = appendRecs(t, sp, repeat("V", 20)...)
		}
	}}
	f := newForwarder(t, sp, sink, Options{Name: name, BatchRecords: 2})
	drain(t, f)
	got := sink.delivered()
	if !slices.Equal(got[:5], seqs) {
		t.Fatalf("delivered %v, want it to start with %v", got, seqs)
	}
	// Batches of 2 from seq 1: the batch holding the target ends at 6.
	if c := cursor(t, sp, lane); c != target+1 || len(got) != 6 || c >= more[len(more)-1] {
		t.Fatalf("cursor %d after %d records, want %d after 6", c, len(got), target+1)
	}
}

func TestDrainEmptyAndCaughtUp(t *testing.T) {
	const name = "drain-empty"
	sp, _ := openVLane(t, name)
	sink := &testSink{}
	f := newForwarder(t, sp, sink, Options{Name: name})
	drain(t, f) // empty spool
	appendRecs(t, sp, "V")
	drain(t, f)
	drain(t, f) // caught up
	if got := sink.delivered(); len(got) != 1 {
		t.Fatalf("delivered %v, want one record", got)
	}
	// A caught-up Drain returns nil even with an ended ctx.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.Drain(ctx); err != nil {
		t.Fatalf("caught-up Drain with ended ctx: %v", err)
	}
}

// Drain returns ctx's error when it cannot finish, and leaves the cursor.
func TestDrainTimesOutWhileFailing(t *testing.T) {
	const name = "drain-timeout"
	sp, lane := openVLane(t, name)
	appendRecs(t, sp, "V", "V")
	sink := &testSink{result: failAll(errors.New("down"))}
	f := newForwarder(t, sp, sink, Options{Name: name})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := f.Drain(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain: %v, want DeadlineExceeded", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Drain took %v", el)
	}
	if c := cursor(t, sp, lane); c != 0 {
		t.Fatalf("cursor %d, want 0", c)
	}
}

func TestBatchesRespectBatchRecords(t *testing.T) {
	const name = "batch-records"
	sp, _ := openVLane(t, name)
	seqs := appendRecs(t, sp, repeat("V", 23)...)
	sink := &testSink{}
	drain(t, newForwarder(t, sp, sink, Options{Name: name, BatchRecords: 5}))
	var sizes []int
	for _, b := range sink.sent() {
		sizes = append(sizes, len(b))
	}
	if want := []int{5, 5, 5, 5, 3}; !slices.Equal(sizes, want) {
		t.Fatalf("batch sizes %v, want %v", sizes, want)
	}
	if got := sink.delivered(); !slices.Equal(got, seqs) {
		t.Fatalf("delivered %v, want %v", got, seqs)
	}
}

func TestBatchesRespectBatchBytes(t *testing.T) {
	const name = "batch-bytes"
	sp, _ := openVLane(t, name)
	seqs := appendRecs(t, sp, repeat("V", 10)...)
	// Each encoded record is a little over 100 bytes (100-byte payload).
	sink := &testSink{}
	drain(t, newForwarder(t, sp, sink, Options{Name: name, BatchBytes: 350}))
	for _, b := range sink.sent() {
		if len(b) == 0 || len(b) > 3 {
			t.Fatalf("batch of %d records with BatchBytes 350 (batches %v)", len(b), sink.sent())
		}
	}
	if got := sink.delivered(); !slices.Equal(got, seqs) {
		t.Fatalf("delivered %v, want %v", got, seqs)
	}
	// A record larger than BatchBytes still goes out, alone.
	const name2 = "batch-bytes-tiny"
	sp2 := openSpool(t, t.TempDir(), LaneName(name2, "V"))
	appendRecs(t, sp2, "V", "V")
	sink2 := &testSink{}
	drain(t, newForwarder(t, sp2, sink2, Options{Name: name2, BatchBytes: 10}))
	if b := sink2.sent(); len(b) != 2 || len(b[0]) != 1 {
		t.Fatalf("batches %v, want two single-record batches", b)
	}
}

// Retry waits stay within [MinBackoff, MaxBackoff]; doubling never
// overflows; MaxBackoff below MinBackoff is raised to it.
func TestRetryWaitBounds(t *testing.T) {
	sp := openSpool(t, t.TempDir())
	f := newForwarder(t, sp, &testSink{}, Options{Name: "waits", MinBackoff: 10 * time.Millisecond, MaxBackoff: 80 * time.Millisecond})
	b := f.opts.MinBackoff
	var seq []time.Duration
	for range 8 {
		seq = append(seq, b)
		for range 200 {
			if w := f.retryWait(b); w < f.opts.MinBackoff || w > f.opts.MaxBackoff || w > b || w < b/2 {
				t.Fatalf("retryWait(%v) = %v, want within [max(%v, %v), %v]", b, w, f.opts.MinBackoff, b/2, b)
			}
		}
		b = f.nextBackoff(b)
	}
	want := []time.Duration{10, 20, 40, 80, 80, 80, 80, 80}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if !slices.Equal(seq, want) {
		t.Fatalf("backoffs %v, want %v", seq, want)
	}

	huge := newForwarder(t, sp, &testSink{}, Options{Name: "waits-huge", MinBackoff: time.Second, MaxBackoff: math.MaxInt64})
	b = huge.opts.MinBackoff
	for range 80 {
		b = huge.nextBackoff(b)
		if b <= 0 {
			t.Fatalf("backoff overflowed to %v", b)
		}
		_ = huge.retryWait(b) // must not panic
	}
	if b != math.MaxInt64 {
		t.Fatalf("backoff %v, want capped at MaxBackoff", b)
	}

	inv := newForwarder(t, sp, &testSink{}, Options{Name: "waits-inverted", MinBackoff: time.Second, MaxBackoff: time.Millisecond})
	if inv.opts.MaxBackoff != time.Second {
		t.Fatalf("MaxBackoff %v below MinBackoff not raised", inv.opts.MaxBackoff)
	}
	if w := inv.retryWait(time.Second); w != time.Second {
		t.Fatalf("retryWait = %v, want 1s", w)
	}
}

// A lane's moves ride the spool's commits: with records flowing they are
// committed along with the appends, alone within CursorCommitDelay, and
// never ahead of what the sink confirmed.
func TestLaneMovesRideTheCommits(t *testing.T) {
	const name = "ride"
	sp, lane := openVLane(t, name)
	var mu sync.Mutex
	var ahead []string
	sink := &testSink{hook: func(call int, batch []spool.Record) {
		if c := cursor(t, sp, lane); c >= batch[0].Seq {
			mu.Lock()
			ahead = append(ahead, fmt.Sprintf("call %d: cursor %d, batch starts at %d", call, c, batch[0].Seq))
			mu.Unlock()
		}
	}}
	f := newForwarder(t, sp, sink, Options{Name: name, BatchRecords: 4})
	stop := run(t, f)
	defer stop()
	seqs := appendRecs(t, sp, repeat("V", 40)...)
	waitFor(t, "all records sent", func() bool { return len(sink.delivered()) == len(seqs) })
	// Nothing else is appended: the last move is committed on its own.
	start := time.Now()
	waitFor(t, "the lane's last move committed", func() bool { return cursor(t, sp, lane) == seqs[len(seqs)-1] })
	if el := time.Since(start); el > spool.CursorCommitDelay+time.Second {
		t.Fatalf("last move committed after %s", el)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ahead) > 0 {
		t.Fatalf("cursor ahead of unconfirmed records: %v", ahead)
	}
}

// After a send, fewer than BatchRecords waiting records wait for Linger;
// a full batch goes at once; Drain does not linger.
func TestLingerWaitsForAFullBatch(t *testing.T) {
	const name = "linger"
	sp, _ := openVLane(t, name)
	sink := &testSink{}
	f := newForwarder(t, sp, sink, Options{Name: name, BatchRecords: 10, Linger: time.Hour})
	stop := run(t, f)

	// The first record after a quiet spell goes at once.
	appendRecs(t, sp, "V")
	waitFor(t, "the first send", func() bool { return sink.callCount() == 1 })
	// Then a trickle waits for the rest of a batch...
	appendRecs(t, sp, repeat("V", 5)...)
	time.Sleep(300 * time.Millisecond)
	if n := sink.callCount(); n != 1 {
		t.Fatalf("%d sends: 5 waiting records (batch 10) went out within the hour's linger", n)
	}
	// ...and a full batch does not.
	appendRecs(t, sp, repeat("V", 5)...)
	waitFor(t, "the full batch", func() bool { return len(sink.delivered()) == 11 })
	stop()

	// A trickle is drained without lingering.
	appendRecs(t, sp, repeat("V", 3)...)
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	if err := f.Drain(dctx); err != nil {
		t.Fatalf("Drain lingered: %v", err)
	}
	if n := len(sink.delivered()); n != 14 {
		t.Fatalf("delivered %d records after the drain, want 14", n)
	}
}

// Delivered hears of every record the sink confirmed or refused for good,
// once, also when a batch is taken in part.
func TestDeliveredHearsOfEveryRecordOnce(t *testing.T) {
	const name = "delivered"
	sp, _ := openVLane(t, name)
	seqs := appendRecs(t, sp, repeat("V", 8)...)
	var mu sync.Mutex
	heard := map[uint64]int{}
	sink := &testSink{result: func(call int, batch []spool.Record) []error {
		errs := make([]error, len(batch))
		for i, r := range batch {
			switch {
			case r.Seq == seqs[5]:
				errs[i] = Permanent("invalid_record", errors.New("INVALID_RECORD"))
			case call == 0 && i%2 == 0:
				errs[i] = errors.New("throttled")
			}
		}
		return errs
	}}
	drain(t, newForwarder(t, sp, sink, Options{Name: name, Delivered: func(b []spool.Record) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range b {
			heard[r.Seq]++
		}
	}}))
	for _, s := range seqs {
		if heard[s] != 1 {
			t.Fatalf("Delivered heard of %d %d times (all: %v)", s, heard[s], heard)
		}
	}
}

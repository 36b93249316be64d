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

// commitWaiter collects commit results; buffered so Committed never blocks.
type commitWaiter chan error

func (w commitWaiter) Committed(_, _ uint64, err error) { w <- err }

// appendRecs appends one record per topic and waits until all are durable.
// It returns their seqs.
func appendRecs(t testing.TB, sp *spool.Spool, topics ...string) []uint64 {
	t.Helper()
	w := make(commitWaiter, len(topics))
	seqs := make([]uint64, 0, len(topics))
	for i, topic := range topics {
		r := spool.Record{
			ReceivedAtMs: 1_700_000_000_000 + int64(i),
			CreatedAtSec: 1_700_000_000,
			VIN:          "5YJ3E1EA1KF000001",
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

// testSink records the batches it confirmed. fail decides, per call (0-based),
// whether Send fails; hook runs first on every call.
type testSink struct {
	mu      sync.Mutex
	calls   int
	batches [][]uint64 // seqs of confirmed batches
	topics  []string   // topics of confirmed records, in order
	fail    func(call int, batch []spool.Record) error
	hook    func(call int, batch []spool.Record)
}

func (s *testSink) Send(_ context.Context, batch []spool.Record) error {
	s.mu.Lock()
	call := s.calls
	s.calls++
	hook, fail := s.hook, s.fail
	s.mu.Unlock()
	if hook != nil {
		hook(call, batch)
	}
	if fail != nil {
		if err := fail(call, batch); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	seqs := make([]uint64, len(batch))
	for i, r := range batch {
		seqs[i] = r.Seq
		s.topics = append(s.topics, string(r.Topic))
	}
	s.batches = append(s.batches, seqs)
	return nil
}

func (s *testSink) delivered() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []uint64
	for _, b := range s.batches {
		all = append(all, b...)
	}
	return all
}

func (s *testSink) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
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

func TestNewRequiresName(t *testing.T) {
	sp := openSpool(t, t.TempDir())
	if _, err := New(sp, &testSink{}, Options{}); err == nil {
		t.Fatal("New with no Name: want error")
	}
}

// Records of topics not routed to the forwarder never reach the sink, but the
// cursor passes them, including when the last records are all unrouted.
func TestUnroutedTopicsSkippedCursorPasses(t *testing.T) {
	const name = "skip"
	sp := openSpool(t, t.TempDir(), name)
	seqs := appendRecs(t, sp, "V", "alerts", "V", "errors", "connectivity", "V", "alerts", "alerts")
	skipped0 := counter("skipped", name).Get()
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
	if c, last := cursor(t, sp, name), sp.LastSeq(); c != last || c != seqs[len(seqs)-1] {
		t.Fatalf("cursor %d, want LastSeq %d (= %d)", c, last, seqs[len(seqs)-1])
	}
	if d := counter("skipped", name).Get() - skipped0; d != 5 {
		t.Fatalf("skipped counter grew by %d, want 5", d)
	}
	// A batch made only of unrouted records is not sent at all.
	for _, b := range sink.batches {
		if len(b) == 0 {
			t.Fatal("empty batch sent")
		}
	}
}

// The cursor moves only after Send returned nil: while the sink fails the
// cursor stays at (with CursorInterval < 0) the end of the previous batch, and every record is still
// delivered exactly once (failed calls confirm nothing).
func TestCursorAdvancesOnlyAfterSuccessfulSend(t *testing.T) {
	const name = "retry"
	sp := openSpool(t, t.TempDir(), name)
	seqs := appendRecs(t, sp, repeat("V", 5)...)
	retries0, failed0, sent0 := counter("retries", name).Get(), counter("failed_batches", name).Get(), counter("sent", name).Get()

	var mu sync.Mutex
	var cursorsSeen []string
	sink := &testSink{}
	sink.hook = func(call int, batch []spool.Record) {
		c, err := sp.Cursor(name)
		if err != nil {
			t.Errorf("Cursor in Send: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		// The cursor must be exactly before the batch being sent.
		if c != batch[0].Seq-1 {
			cursorsSeen = append(cursorsSeen, fmt.Sprintf("call %d: cursor %d, batch starts at %d", call, c, batch[0].Seq))
		}
	}
	// Batches: [1 2] [3 4] [5]. The first batch fails 3 times, the second
	// twice, the third once.
	failures := map[uint64]int{seqs[0]: 3, seqs[2]: 2, seqs[4]: 1}
	sink.fail = func(call int, batch []spool.Record) error {
		mu.Lock()
		defer mu.Unlock()
		if failures[batch[0].Seq] > 0 {
			failures[batch[0].Seq]--
			return errors.New("sink down")
		}
		return nil
	}
	// CursorInterval < 0: the cursor is written after every batch, so it
	// must sit exactly before each batch sent.
	f := newForwarder(t, sp, sink, Options{Name: name, Topics: []string{"V"}, BatchRecords: 2, CursorInterval: -1})
	drain(t, f)

	if len(cursorsSeen) > 0 {
		t.Fatalf("cursor not at the batch start while sending:\n%v", cursorsSeen)
	}
	if got := sink.delivered(); !slices.Equal(got, seqs) {
		t.Fatalf("delivered %v, want %v", got, seqs)
	}
	if n := sink.callCount(); n != 3+6 {
		t.Fatalf("%d Send calls, want 9 (3 batches + 6 failures)", n)
	}
	if d := counter("retries", name).Get() - retries0; d != 6 {
		t.Fatalf("retries counter grew by %d, want 6", d)
	}
	if d := counter("failed_batches", name).Get() - failed0; d != 6 {
		t.Fatalf("failed_batches counter grew by %d, want 6", d)
	}
	if d := counter("sent", name).Get() - sent0; d != 5 {
		t.Fatalf("sent counter grew by %d, want 5", d)
	}
	if c := cursor(t, sp, name); c != seqs[4] {
		t.Fatalf("cursor %d, want %d", c, seqs[4])
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
			sp := openSpool(t, t.TempDir(), name)
			appendRecs(t, sp, "V", "V")
			sink := &testSink{fail: func(int, []spool.Record) error { return errors.New("down") }}
			f := newForwarder(t, sp, sink, Options{Name: name, Topics: []string{"V"}, MinBackoff: tc.min, MaxBackoff: tc.max})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- f.Run(ctx) }()
			waitFor(t, "failed sends", func() bool { return sink.callCount() >= tc.hits })
			if c := cursor(t, sp, name); c != 0 {
				t.Fatalf("cursor %d while the sink fails, want 0", c)
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run after cancel: %v, want nil", err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Run did not return after cancel")
			}
			if c := cursor(t, sp, name); c != 0 {
				t.Fatalf("cursor %d after cancel, want 0", c)
			}
			if got := sink.delivered(); len(got) != 0 {
				t.Fatalf("delivered %v, want nothing", got)
			}
		})
	}
}

// With a backlog and a healthy sink, Run stops at the next batch boundary
// after ctx ends instead of draining the whole spool first.
func TestRunStopsOnCancelWithBacklog(t *testing.T) {
	const name = "backlog"
	sp := openSpool(t, t.TempDir(), name)
	seqs := appendRecs(t, sp, repeat("V", 50)...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sink := &testSink{hook: func(call int, _ []spool.Record) {
		if call == 0 {
			cancel()
		}
	}}
	f := newForwarder(t, sp, sink, Options{Name: name, Topics: []string{"V"}, BatchRecords: 1})
	if err := f.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := sink.callCount(); n != 1 {
		t.Fatalf("%d Send calls after cancel in the first, want 1", n)
	}
	// The confirmed batch still moved the cursor.
	if c := cursor(t, sp, name); c != seqs[0] {
		t.Fatalf("cursor %d, want %d", c, seqs[0])
	}
}

// Run delivers records appended while it is running.
func TestRunFollowsAppends(t *testing.T) {
	const name = "follow"
	sp := openSpool(t, t.TempDir(), name)
	sink := &testSink{}
	f := newForwarder(t, sp, sink, Options{Name: name, Topics: []string{"V"}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var want []uint64
	for range 3 {
		seqs := appendRecs(t, sp, "V", "alerts", "V")
		want = append(want, seqs[0], seqs[2])
		waitFor(t, "cursor to reach LastSeq", func() bool { return cursor(t, sp, name) == sp.LastSeq() })
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := sink.delivered(); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
}

// Run on a spool that is closed under it returns an error instead of
// spinning on the closed commit channel.
func TestRunReturnsErrorWhenSpoolClosed(t *testing.T) {
	const name = "closed"
	sp := openSpool(t, t.TempDir(), name)
	appendRecs(t, sp, "V")
	sink := &testSink{}
	f := newForwarder(t, sp, sink, Options{Name: name, Topics: []string{"V"}})
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
// persisted cursor: nothing is delivered twice and later appends are
// delivered.
func TestResumeAfterReopen(t *testing.T) {
	const name = "resume"
	dir := t.TempDir()
	sp := openSpool(t, dir, name)
	first := appendRecs(t, sp, "V", "alerts", "V", "V")
	sink1 := &testSink{}
	drain(t, newForwarder(t, sp, sink1, Options{Name: name, Topics: []string{"V"}, BatchRecords: 2}))
	if got, want := sink1.delivered(), []uint64{first[0], first[2], first[3]}; !slices.Equal(got, want) {
		t.Fatalf("first run delivered %v, want %v", got, want)
	}
	if err := sp.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	sp = openSpool(t, dir, name)
	if c := cursor(t, sp, name); c != first[3] {
		t.Fatalf("cursor after reopen %d, want %d", c, first[3])
	}
	sink2 := &testSink{}
	f := newForwarder(t, sp, sink2, Options{Name: name, Topics: []string{"V"}, BatchRecords: 2})
	drain(t, f) // nothing new: delivers nothing
	if got := sink2.delivered(); len(got) != 0 {
		t.Fatalf("second run redelivered %v", got)
	}
	later := appendRecs(t, sp, "V", "errors", "V")
	if later[0] <= first[3] {
		t.Fatalf("seq %d after reopen does not follow %d", later[0], first[3])
	}
	drain(t, f)
	if got, want := sink2.delivered(), []uint64{later[0], later[2]}; !slices.Equal(got, want) {
		t.Fatalf("second run delivered %v, want %v", got, want)
	}
	st := sp.Stats()
	if st.Cursors[name] != later[2] || st.LastSeq != later[2] {
		t.Fatalf("stats %+v: want cursor and LastSeq %d", st, later[2])
	}
	if st.Records != 0 {
		t.Fatalf("stats %+v: every record is delivered and should be trimmed", st)
	}
}

// A run interrupted while a batch was failing leaves the cursor before that
// batch; the next forwarder (after a reopen) delivers it (at-least-once).
func TestResumeAfterInterruptedRun(t *testing.T) {
	const name = "interrupted"
	dir := t.TempDir()
	sp := openSpool(t, dir, name)
	seqs := appendRecs(t, sp, repeat("V", 4)...)
	sink1 := &testSink{fail: func(call int, _ []spool.Record) error {
		if call >= 1 {
			return errors.New("down")
		}
		return nil
	}}
	f := newForwarder(t, sp, sink1, Options{Name: name, Topics: []string{"V"}, BatchRecords: 2})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	waitFor(t, "failing retries", func() bool { return sink1.callCount() >= 3 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := sp.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	sp = openSpool(t, dir, name)
	if c := cursor(t, sp, name); c != seqs[1] {
		t.Fatalf("cursor after reopen %d, want %d", c, seqs[1])
	}
	sink2 := &testSink{}
	drain(t, newForwarder(t, sp, sink2, Options{Name: name, Topics: []string{"V"}, BatchRecords: 2}))
	if got := sink2.delivered(); !slices.Equal(got, seqs[2:]) {
		t.Fatalf("resumed run delivered %v, want %v", got, seqs[2:])
	}
}

// Drain stops once the cursor reaches the LastSeq of the moment it was
// called: records appended during the drain are not waited for (beyond the
// batch that happens to include them).
func TestDrainStopsAtLastSeqOfCall(t *testing.T) {
	const name = "drain"
	sp := openSpool(t, t.TempDir(), name)
	seqs := appendRecs(t, sp, repeat("V", 5)...)
	target := seqs[4]
	var more []uint64
	sink := &testSink{hook: func(call int, _ []spool.Record) {
		if call == 0 { // keep the spool growing during the drain
			more = appendRecs(t, sp, repeat("V", 20)...)
		}
	}}
	f := newForwarder(t, sp, sink, Options{Name: name, Topics: []string{"V"}, BatchRecords: 2})
	drain(t, f)
	got := sink.delivered()
	if !slices.Equal(got[:5], seqs) {
		t.Fatalf("delivered %v, want it to start with %v", got, seqs)
	}
	c := cursor(t, sp, name)
	if c < target || c >= more[len(more)-1] {
		t.Fatalf("cursor %d: want >= %d (LastSeq at the call) and short of %d", c, target, more[len(more)-1])
	}
	// Batches of 2 from seq 1: the batch holding the target ends at 6.
	if c != target+1 || len(got) != 6 {
		t.Fatalf("cursor %d after %d records, want %d after 6", c, len(got), target+1)
	}
}

func TestDrainEmptyAndCaughtUp(t *testing.T) {
	const name = "drain-empty"
	sp := openSpool(t, t.TempDir(), name)
	sink := &testSink{}
	f := newForwarder(t, sp, sink, Options{Name: name, Topics: []string{"V"}})
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
	sp := openSpool(t, t.TempDir(), name)
	appendRecs(t, sp, "V", "V")
	sink := &testSink{fail: func(int, []spool.Record) error { return errors.New("down") }}
	f := newForwarder(t, sp, sink, Options{Name: name, Topics: []string{"V"}})
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
	if c := cursor(t, sp, name); c != 0 {
		t.Fatalf("cursor %d, want 0", c)
	}
}

func TestBatchesRespectBatchRecords(t *testing.T) {
	const name = "batch-records"
	sp := openSpool(t, t.TempDir(), name)
	seqs := appendRecs(t, sp, repeat("V", 23)...)
	sink := &testSink{}
	drain(t, newForwarder(t, sp, sink, Options{Name: name, Topics: []string{"V"}, BatchRecords: 5}))
	var sizes []int
	for _, b := range sink.batches {
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
	sp := openSpool(t, t.TempDir(), name)
	seqs := appendRecs(t, sp, repeat("V", 10)...)
	// Each encoded record is a little over 100 bytes (100-byte payload).
	sink := &testSink{}
	drain(t, newForwarder(t, sp, sink, Options{Name: name, Topics: []string{"V"}, BatchBytes: 350}))
	for _, b := range sink.batches {
		if len(b) == 0 || len(b) > 3 {
			t.Fatalf("batch of %d records with BatchBytes 350 (batches %v)", len(b), sink.batches)
		}
	}
	if got := sink.delivered(); !slices.Equal(got, seqs) {
		t.Fatalf("delivered %v, want %v", got, seqs)
	}
	// A record larger than BatchBytes still goes out, alone.
	const name2 = "batch-bytes-tiny"
	sp2 := openSpool(t, t.TempDir(), name2)
	appendRecs(t, sp2, "V", "V")
	sink2 := &testSink{}
	drain(t, newForwarder(t, sp2, sink2, Options{Name: name2, Topics: []string{"V"}, BatchBytes: 10}))
	if len(sink2.batches) != 2 || len(sink2.batches[0]) != 1 {
		t.Fatalf("batches %v, want two single-record batches", sink2.batches)
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

// With CursorInterval the cursor is written at most that often while
// records flow, never ahead of what the sink confirmed, and once more when
// the forwarder goes idle or stops, so a clean stop sends nothing again.
func TestCursorIsWrittenEveryIntervalAndAtStop(t *testing.T) {
	const name = "interval"
	sp := openSpool(t, t.TempDir(), name)
	var mu sync.Mutex
	var ahead []string
	sink := &testSink{hook: func(call int, batch []spool.Record) {
		if c := cursor(t, sp, name); c >= batch[0].Seq {
			mu.Lock()
			ahead = append(ahead, fmt.Sprintf("call %d: cursor %d, batch starts at %d", call, c, batch[0].Seq))
			mu.Unlock()
		}
	}}
	seqs := appendRecs(t, sp, repeat("V", 40)...)
	// An interval far longer than the test: only the stop writes it.
	f := newForwarder(t, sp, sink, Options{Name: name, Topics: []string{"V"}, BatchRecords: 4, CursorInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	waitFor(t, "all records sent", func() bool { return len(sink.delivered()) == len(seqs) })
	if c := cursor(t, sp, name); c != 0 {
		t.Fatalf("cursor written during a 1h interval: %d", c)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if c := cursor(t, sp, name); c != seqs[len(seqs)-1] {
		t.Fatalf("cursor after stop = %d, want %d", c, seqs[len(seqs)-1])
	}
	if len(ahead) > 0 {
		t.Fatalf("cursor ahead of unconfirmed records: %v", ahead)
	}

	// A short interval: an idle forwarder writes the cursor once it is due,
	// without a stop.
	more := appendRecs(t, sp, repeat("V", 10)...)
	f = newForwarder(t, sp, sink, Options{Name: name, Topics: []string{"V"}, BatchRecords: 4, CursorInterval: 20 * time.Millisecond})
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- f.Run(ctx) }()
	waitFor(t, "cursor written while idle", func() bool { return cursor(t, sp, name) == more[len(more)-1] })
	if got := sink.delivered(); len(got) != len(seqs)+len(more) {
		t.Fatalf("delivered %d records, want %d (nothing twice)", len(got), len(seqs)+len(more))
	}
	cancel()
	<-done
}

// After a send, fewer than BatchRecords waiting records wait for Linger;
// a full batch goes at once; Drain does not linger.
func TestLingerWaitsForAFullBatch(t *testing.T) {
	const name = "linger"
	sp := openSpool(t, t.TempDir(), name)
	sink := &testSink{}
	f := newForwarder(t, sp, sink, Options{Name: name, Topics: []string{"V"}, BatchRecords: 10, Linger: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()

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
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}

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

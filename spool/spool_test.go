package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"
)

// quietLogger discards logs unless SPOOL_TEST_LOG is set.
func quietLogger() *slog.Logger {
	if os.Getenv("SPOOL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func openT(t testing.TB, o Options) *Spool {
	t.Helper()
	if o.Logger == nil {
		o.Logger = quietLogger()
	}
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type report struct {
	token, seq uint64
	err        error
}

// chWaiter collects reports; its buffer must hold every report of a test.
type chWaiter chan report

func (c chWaiter) Committed(token, seq uint64, err error) { c <- report{token, seq, err} }

func testRecord(i uint64) *Record {
	return &Record{
		ReceivedAtMs:  1_700_000_000_000 + int64(i),
		CreatedAtSec:  uint32(i),
		VIN:           fmt.Sprintf("VIN%014d", i%7),
		ClientVersion: "v1.2.3",
		Topic:         []byte("V"),
		TxID:          []byte(fmt.Sprintf("tx-%d", i)),
		Payload:       bytes.Repeat([]byte{byte(i)}, int(i%300)),
	}
}

func sameRecord(a, b *Record) bool {
	return a.ReceivedAtMs == b.ReceivedAtMs && a.CreatedAtSec == b.CreatedAtSec && a.VIN == b.VIN &&
		a.ClientVersion == b.ClientVersion && bytes.Equal(a.Topic, b.Topic) &&
		bytes.Equal(a.TxID, b.TxID) && bytes.Equal(a.Payload, b.Payload)
}

// waitFor waits until the spool has committed seq.
func waitFor(t testing.TB, s *Spool, seq uint64) {
	t.Helper()
	waitForTimeout(t, s, seq, 10*time.Second)
}

func waitForTimeout(t testing.TB, s *Spool, seq uint64, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		ch := s.Committed()
		if s.LastSeq() >= seq {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timeout waiting for seq %d (last %d)", seq, s.LastSeq())
		}
	}
}

func readAll(t testing.TB, s *Spool, from uint64) []Record {
	t.Helper()
	var out []Record
	for {
		got, err := s.Read(from, 100, 1<<16, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			return out
		}
		out = append(out, got...)
		from = got[len(got)-1].Seq + 1
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for i := uint64(0); i < 50; i++ {
		r := testRecord(i)
		r.ReceivedAtMs -= 1_700_000_000_020 // also negative values
		b := EncodeRecord([]byte("prefix"), r)
		if len(b)-6 != encodedLen(r) {
			t.Fatalf("encodedLen %d, encoded %d", encodedLen(r), len(b)-6)
		}
		var got Record
		if err := DecodeRecord(b[6:], 42, &got); err != nil {
			t.Fatal(err)
		}
		if got.Seq != 42 || !sameRecord(r, &got) {
			t.Fatalf("round trip: got %+v want %+v", got, r)
		}
		// Every strict prefix and every extension must be rejected.
		for n := 0; n < len(b)-6; n++ {
			if err := DecodeRecord(b[6:6+n], 7, &got); err == nil {
				t.Fatalf("prefix of %d bytes decoded", n)
			}
		}
		if err := DecodeRecord(append(b[6:], 0), 7, &got); err == nil {
			t.Fatal("trailing byte accepted")
		}
	}
}

func TestConcurrentAppend(t *testing.T) {
	s := openT(t, Options{Dir: t.TempDir()})
	defer s.Close()
	const G, N = 16, 300
	want := make(map[uint64]*Record) // by seq
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < G; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := make(chWaiter, N)
			for i := 0; i < N; i++ {
				tok := uint64(g*N + i)
				r := testRecord(tok)
				for {
					err := s.Append(r, w, tok)
					if err == nil {
						break
					}
					if !errors.Is(err, ErrBusy) {
						t.Error(err)
						return
					}
					time.Sleep(time.Millisecond)
				}
				mu.Lock()
				want[r.Seq] = testRecord(tok)
				mu.Unlock()
			}
			var last uint64
			for i := 0; i < N; i++ {
				rep := <-w
				if rep.err != nil {
					t.Error(rep.err)
				}
				if rep.token != uint64(g*N+i) {
					t.Errorf("goroutine %d: got token %d, want %d", g, rep.token, g*N+i)
				}
				if rep.seq <= last {
					t.Errorf("goroutine %d: seq %d after %d", g, rep.seq, last)
				}
				last = rep.seq
				if s.LastSeq() < rep.seq {
					t.Errorf("reported seq %d above LastSeq %d", rep.seq, s.LastSeq())
				}
			}
		}()
	}
	wg.Wait()
	got := readAll(t, s, 0)
	if len(got) != G*N {
		t.Fatalf("read %d records, want %d", len(got), G*N)
	}
	for i, r := range got {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d", i, r.Seq)
		}
		if !sameRecord(&r, want[r.Seq]) {
			t.Fatalf("seq %d content mismatch", r.Seq)
		}
	}
	st := s.Stats()
	if st.Records != G*N || st.FirstSeq != 1 || st.LastSeq != G*N {
		t.Fatalf("stats %+v", st)
	}
}

func TestSeqContinuityAfterFullTrimAndReopen(t *testing.T) {
	dir := t.TempDir()
	o := Options{Dir: dir, Consumers: []string{"a"}}
	s := openT(t, o)
	for i := uint64(1); i <= 10; i++ {
		if err := s.Append(testRecord(i), nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, s, 10)
	if err := s.SetCursor("a", 10); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Records != 0 || st.Bytes != 0 || st.FirstSeq != 0 {
		t.Fatalf("after full trim: %+v", st)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, o)
	defer s.Close()
	if s.LastSeq() != 10 {
		t.Fatalf("LastSeq after reopen %d", s.LastSeq())
	}
	r := testRecord(11)
	if err := s.Append(r, nil, 0); err != nil {
		t.Fatal(err)
	}
	if r.Seq != 11 {
		t.Fatalf("seq after full trim and reopen: %d, want 11", r.Seq)
	}
	waitFor(t, s, 11)
	if got := readAll(t, s, 0); len(got) != 1 || got[0].Seq != 11 {
		t.Fatalf("read %+v", got)
	}
}

func TestCursorsPersistAndTrimAtMinimum(t *testing.T) {
	dir := t.TempDir()
	o := Options{Dir: dir, Consumers: []string{"kafka", "stdout"}}
	s := openT(t, o)
	for i := uint64(1); i <= 20; i++ {
		if err := s.Append(testRecord(i), nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, s, 20)
	if err := s.SetCursor("kafka", 15); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, 0); len(got) != 20 {
		t.Fatalf("trimmed before every consumer passed: %d records left", len(got))
	}
	if err := s.SetCursor("stdout", 5); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, s, 0)
	if len(got) != 15 || got[0].Seq != 6 {
		t.Fatalf("after trim to 5: %d records, first %d", len(got), got[0].Seq)
	}
	if err := s.SetCursor("other", 20); err != nil { // unknown consumers do not trim
		t.Fatal(err)
	}
	if err := s.SetCursor("kafka", 21); err == nil {
		t.Fatal("cursor beyond LastSeq accepted")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, o)
	defer s.Close()
	for name, want := range map[string]uint64{"kafka": 15, "stdout": 5, "other": 20, "none": 0} {
		if c, err := s.Cursor(name); err != nil || c != want {
			t.Fatalf("cursor %s = %d, %v; want %d", name, c, err, want)
		}
	}
	st := s.Stats()
	if st.Records != 15 || st.FirstSeq != 6 || st.LastSeq != 20 || st.OldestReceivedAtMs != testRecord(6).ReceivedAtMs {
		t.Fatalf("stats after reopen %+v", st)
	}
	if err := s.SetCursor("stdout", 18); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, 0); len(got) != 5 || got[0].Seq != 16 {
		t.Fatalf("after trim to 15: %d records", len(got))
	}
}

func TestErrFullThenRecovery(t *testing.T) {
	r := testRecord(1)
	size := int64(recKeyLen + encodedLen(r))
	s := openT(t, Options{Dir: t.TempDir(), MaxBytes: 5 * size, Consumers: []string{"a"}})
	defer s.Close()
	for i := 0; i < 5; i++ {
		if err := s.Append(testRecord(1), nil, 0); err != nil {
			t.Fatal(i, err)
		}
	}
	if err := s.Append(testRecord(1), nil, 0); !errors.Is(err, ErrFull) {
		t.Fatalf("got %v, want ErrFull", err)
	}
	waitFor(t, s, 5)
	if err := s.Append(testRecord(1), nil, 0); !errors.Is(err, ErrFull) {
		t.Fatalf("after commit: got %v, want ErrFull", err)
	}
	if err := s.SetCursor("a", 2); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := s.Append(testRecord(1), nil, 0); err != nil {
			t.Fatalf("after trim: %v", err)
		}
	}
	if err := s.Append(testRecord(1), nil, 0); !errors.Is(err, ErrFull) {
		t.Fatalf("got %v, want ErrFull", err)
	}
}

// blocker is a Waiter that holds the committer until released, so that a
// test can fill the pending batch deterministically.
type blocker struct {
	called  chan struct{}
	release chan struct{}
}

func newBlocker() *blocker {
	return &blocker{called: make(chan struct{}), release: make(chan struct{})}
}

func (b *blocker) Committed(_, _ uint64, _ error) {
	close(b.called)
	<-b.release
}

func TestErrBusyAndCloseCommitsPending(t *testing.T) {
	dir := t.TempDir()
	r := testRecord(100)
	size := recKeyLen + encodedLen(r)
	s := openT(t, Options{Dir: dir, MaxPendingBytes: 3 * size})
	bl := newBlocker()
	if err := s.Append(testRecord(100), bl, 0); err != nil {
		t.Fatal(err)
	}
	<-bl.called // committer is now stuck in the waiter
	w := make(chWaiter, 10)
	for i := uint64(0); i < 3; i++ {
		if err := s.Append(testRecord(100), w, i); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Append(testRecord(100), w, 3); !errors.Is(err, ErrBusy) {
		t.Fatalf("got %v, want ErrBusy", err)
	}
	if err := s.Append(&Record{Payload: make([]byte, 4*size)}, w, 3); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	time.Sleep(10 * time.Millisecond)
	close(bl.release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < 3; i++ {
		rep := <-w
		if rep.err != nil || rep.token != i || rep.seq != i+2 {
			t.Fatalf("report %d: %+v", i, rep)
		}
	}
	if err := s.Append(testRecord(1), w, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case <-s.Committed():
	default:
		t.Fatal("Committed channel not closed after Close")
	}
	s = openT(t, Options{Dir: dir})
	defer s.Close()
	if got := readAll(t, s, 0); len(got) != 4 {
		t.Fatalf("after reopen: %d records, want 4", len(got))
	}
}

func TestReadLimits(t *testing.T) {
	s := openT(t, Options{Dir: t.TempDir()})
	defer s.Close()
	big := &Record{Payload: make([]byte, 1000)}
	for i := 0; i < 5; i++ {
		if err := s.Append(big, nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, s, 5)
	got, err := s.Read(2, 10, 10, nil)
	if err != nil || len(got) != 1 || got[0].Seq != 2 {
		t.Fatalf("maxBytes below one record: %d records, %v", len(got), err)
	}
	got, err = s.Read(2, 2, 0, got[:0])
	if err != nil || len(got) != 2 || got[1].Seq != 3 {
		t.Fatalf("maxRecords 2: %d records, %v", len(got), err)
	}
	got, err = s.Read(6, 2, 0, nil)
	if err != nil || len(got) != 0 {
		t.Fatalf("read past end: %d records, %v", len(got), err)
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	for _, o := range []Options{
		{},
		{Dir: t.TempDir(), MaxBytes: -1},
		{Dir: t.TempDir(), MaxPendingBytes: -1},
		{Dir: t.TempDir(), MaxPendingBytes: 2 << 30},
		{Dir: t.TempDir(), Consumers: []string{""}},
	} {
		if s, err := Open(o); err == nil {
			s.Close()
			t.Fatalf("Open(%+v) succeeded", o)
		}
	}
}

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		return
	}
	os.Exit(m.Run())
}

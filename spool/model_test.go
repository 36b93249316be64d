package spool

import (
	"bytes"
	"errors"
	"flag"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fleet-telemetry/fleet-telemetry/internal/testseed"
)

var modelSeed = flag.Uint64("spool.seed", 0, "run TestModel with this seed only (also SPOOL_SEED)")

type modelRec struct {
	seq     uint64
	payload []byte
}

// TestModel runs random operations against a spool and a plain in-memory
// model and compares them after every step. A failure prints the seed;
// rerun it with -spool.seed=N or SPOOL_SEED=N.
func TestModel(t *testing.T) {
	for _, seed := range testseed.Seeds(t, *modelSeed, "SPOOL_SEED", 1, 2, 3) {
		runModel(t, seed)
	}
}

func runModel(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	dir := t.TempDir()
	consumers := []string{"a", "b", "c"}[:1+rng.IntN(3)]
	const maxBytes = 20_000
	o := Options{Dir: dir, MaxBytes: maxBytes, Consumers: consumers, Logger: quietLogger()}
	s, err := Open(o)
	if err != nil {
		t.Fatalf("seed %d: %v", seed, err)
	}
	defer func() { s.Close() }()

	var (
		committed []modelRec // live, committed, by seq
		pending   []modelRec
		next      = uint64(1)
		live      int64
		cursors   = map[string]uint64{}
		trimmedTo uint64
		w         = make(chWaiter, 1<<16)
		step      int
	)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d step %d (rerun with -spool.seed=%d): "+format, append([]any{seed, step, seed}, args...)...)
	}
	commitAll := func() {
		for _, p := range pending {
			rep := <-w
			if rep.err != nil || rep.seq != p.seq || rep.token != p.seq {
				fail("report %+v for seq %d", rep, p.seq)
			}
		}
		committed = append(committed, pending...)
		pending = nil
	}
	for step = 0; step < 400; step++ {
		switch op := rng.IntN(100); {
		case op < 45: // append
			p := make([]byte, rng.IntN(600))
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			r := &Record{ReceivedAtMs: int64(next), Payload: p}
			size := int64(recKeyLen + encodedLen(r))
			err := s.Append(r, w, next)
			if live+size > maxBytes {
				if !errors.Is(err, ErrFull) {
					fail("append over budget (%d+%d): %v", live, size, err)
				}
				continue
			}
			if err != nil {
				fail("append: %v", err)
			}
			if r.Seq != next {
				fail("append got seq %d, want %d", r.Seq, next)
			}
			pending = append(pending, modelRec{next, p})
			live += size
			next++
		case op < 60: // wait for the commit
			waitFor(t, s, next-1)
			commitAll()
		case op < 75: // a consumer advances (to a committed seq)
			waitFor(t, s, next-1)
			commitAll()
			c := consumers[rng.IntN(len(consumers))]
			to := uint64(rng.Int64N(int64(next)))
			if err := s.SetCursor(c, to); err != nil {
				fail("SetCursor(%s, %d): %v", c, to, err)
			}
			cursors[c] = to
			cut := uint64(1<<64 - 1)
			for _, c := range consumers {
				cut = min(cut, cursors[c])
			}
			trimmedTo = max(trimmedTo, cut)
			for len(committed) > 0 && committed[0].seq <= trimmedTo {
				live -= int64(recKeyLen + encodedLen(&Record{ReceivedAtMs: int64(committed[0].seq), Payload: committed[0].payload}))
				committed = committed[1:]
			}
		case op < 90: // read from a random point
			from := uint64(rng.Int64N(int64(next) + 1))
			maxRec := 1 + rng.IntN(20)
			got, err := s.Read(from, maxRec, 0, nil)
			if err != nil {
				fail("read: %v", err)
			}
			// Pending records may already be committed by the spool: Read
			// returns at least what the model knows is committed, and a
			// prefix of everything appended.
			all := append(slices.Clip(committed), pending...)
			cmp := func(m modelRec, f uint64) int { return int(m.seq) - int(f) }
			i, _ := slices.BinarySearchFunc(all, from, cmp)
			want := all[i:min(len(all), i+maxRec)]
			j, _ := slices.BinarySearchFunc(committed, from, cmp)
			minLen := min(maxRec, len(committed)-j)
			if len(got) < minLen || len(got) > len(want) {
				fail("Read(%d, %d): %d records, want %d..%d", from, maxRec, len(got), minLen, len(want))
			}
			for j := range got {
				if got[j].Seq != want[j].seq || !bytes.Equal(got[j].Payload, want[j].payload) || got[j].ReceivedAtMs != int64(want[j].seq) {
					fail("Read(%d): record %d is seq %d, want %d", from, j, got[j].Seq, want[j].seq)
				}
			}
		default: // close and reopen; Close commits what is pending
			if err := s.Close(); err != nil {
				fail("close: %v", err)
			}
			commitAll()
			if s, err = Open(o); err != nil {
				fail("reopen: %v", err)
			}
		}
		if len(pending) == 0 {
			st := s.Stats()
			var first uint64
			if len(committed) > 0 {
				first = committed[0].seq
			}
			if st.Records != int64(len(committed)) || st.Bytes != live || st.FirstSeq != first || st.LastSeq != next-1 {
				fail("stats %+v, model records %d bytes %d first %d last %d", st, len(committed), live, first, next-1)
			}
			for _, c := range consumers {
				if st.Cursors[c] != cursors[c] {
					fail("cursor %s = %d, want %d", c, st.Cursors[c], cursors[c])
				}
			}
		}
	}
}

package forwarder

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fleet-telemetry/fleet-telemetry/internal/testseed"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

var modelSeed = flag.Uint64("forwarder.seed", 0, "run TestLaneModel with this seed only (also FORWARDER_SEED)")

// modelSink delivers records to an imaginary service that takes each
// record, refuses it for a while (a transient error), or refuses it for
// good (a "poison" txid), decided at random per call; it remembers what it
// took, per lane, over crashes of the daemon.
type modelSink struct {
	mu        sync.Mutex
	rng       *rand.Rand
	transient float64
	delivered map[string]map[string]int // record type -> txid -> copies
	order     map[string][]string       // VIN -> txids in delivery order (V only)
}

// roundSink is the sink one daemon run sees: after a crash nothing that
// run does reaches the world any more.
type roundSink struct {
	m    *modelSink
	dead bool // under m.mu
}

func (r *roundSink) Send(ctx context.Context, batch []spool.Record) error {
	r.m.mu.Lock()
	defer r.m.mu.Unlock()
	if r.dead {
		return errors.New("the power is off")
	}
	return r.m.send(batch)
}

func (s *modelSink) send(batch []spool.Record) error {
	errs := make([]error, len(batch))
	for i, r := range batch {
		tx := string(r.TxID)
		switch {
		case len(tx) > 6 && tx[:6] == "poison":
			errs[i] = Permanent("poison", errors.New("refused for good"))
		case s.rng.Float64() < s.transient:
			errs[i] = errors.New("try again")
		}
	}
	// Like a service handling records one by one, in order: per VIN,
	// nothing after a refused record is taken.
	out := Results(batch, errs)
	var be *BatchError
	failed := map[int]bool{}
	if errors.As(out, &be) {
		for _, f := range be.Failed {
			failed[f.Index] = true
		}
	} else if out != nil {
		return out
	}
	for i, r := range batch {
		if failed[i] {
			continue
		}
		t := string(r.Topic)
		if s.delivered[t] == nil {
			s.delivered[t] = map[string]int{}
		}
		s.delivered[t][string(r.TxID)]++
		if t == "V" {
			s.order[r.VIN] = append(s.order[r.VIN], string(r.TxID))
		}
	}
	return out
}

// TestLaneModel runs a forwarder of two lanes over a spool on a file
// system that can show what a crash leaves behind, with records appended
// all the while, transient and permanent refusals at random, clean stops
// and crashes (power cuts: only what was synced survives). After a final
// drain every acked record of each lane was delivered or quarantined —
// never both, never lost — exactly once when no crash happened, and each
// VIN's V records were delivered in order, apart from copies a crash
// sends again. A failure prints the seed.
func TestLaneModel(t *testing.T) {
	for _, seed := range testseed.Seeds(t, *modelSeed, "FORWARDER_SEED", 1, 2) {
		for _, crashes := range []bool{false, true} {
			t.Run(fmt.Sprintf("seed=%d/crashes=%v", seed, crashes), func(t *testing.T) {
				runLaneModel(t, seed, crashes)
			})
		}
	}
}

func runLaneModel(t *testing.T, seed uint64, crashes bool) {
	rng := rand.New(rand.NewPCG(seed, seed^0xfeed))
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d (rerun with -forwarder.seed=%d): "+format, append([]any{seed, seed}, args...)...)
	}
	const name = "model"
	types := []string{"V", "alerts"}
	lanes := LaneNames(name, types)
	fs := vfs.NewCrashableMem()
	sink := &modelSink{rng: rand.New(rand.NewPCG(seed, 7)), transient: 0.15,
		delivered: map[string]map[string]int{}, order: map[string][]string{}}
	var ackMu sync.Mutex
	acked := map[string]string{} // txid -> record type
	appended := 0
	crashed := 0
	for round := range 6 {
		sp, err := spool.Open(spool.Options{Dir: "/spool", FS: fs, Consumers: lanes, Logger: quiet})
		if err != nil {
			fail("round %d: open: %v", round, err)
		}
		rs := &roundSink{m: sink}
		dead := false // this run crashed: its later acks never happened
		f, err := New(sp, rs, Options{Name: name, Topics: types, BatchRecords: 1 + rng.IntN(16),
			MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, Linger: -1, Logger: quiet})
		if err != nil {
			fail("%v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- f.Run(ctx) }()
		// Appends, acked once their commit reports.
		n := 20 + rng.IntN(60)
		for i := range n {
			typ := types[rng.IntN(len(types))]
			tx := fmt.Sprintf("r%d-%d", round, i)
			if rng.IntN(25) == 0 {
				tx = "poison-" + tx
			}
			r := spool.Record{ReceivedAtMs: int64(appended), VIN: fmt.Sprintf("VIN%d", rng.IntN(3)), Topic: []byte(typ),
				TxID: []byte(tx), Payload: []byte{byte(i)}}
			appended++
			w := ackFunc(func(err error) {
				ackMu.Lock()
				if err == nil && !dead {
					acked[tx] = typ
				}
				ackMu.Unlock()
			})
			if err := sp.Append(&r, w, 0); err != nil {
				fail("append: %v", err)
			}
			if rng.IntN(8) == 0 {
				time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
			}
		}
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
		if crashes && round < 5 && rng.IntN(2) == 0 {
			// A power cut now: what was acked is synced and must survive.
			sink.mu.Lock()
			ackMu.Lock()
			fs = fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(seed, uint64(round)))})
			dead, rs.dead = true, true
			ackMu.Unlock()
			sink.mu.Unlock()
			crashed++
			cancel()
			<-done
			_ = sp.Close() // on the old file system, which is gone
			continue
		}
		cancel()
		if err := <-done; err != nil {
			fail("round %d: Run: %v", round, err)
		}
		if err := sp.Close(); err != nil {
			fail("round %d: close: %v", round, err)
		}
	}
	// A final drain, with every refusal transient no more.
	sp, err := spool.Open(spool.Options{Dir: "/spool", FS: fs, Consumers: lanes, Logger: quiet})
	if err != nil {
		fail("final open: %v", err)
	}
	defer sp.Close()
	sink.mu.Lock()
	sink.transient = 0
	sink.mu.Unlock()
	f, err := New(sp, &roundSink{m: sink}, Options{Name: name, Topics: types, Linger: -1, Logger: quiet})
	if err != nil {
		fail("%v", err)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer dcancel()
	if err := f.Drain(dctx); err != nil {
		fail("final drain: %v", err)
	}
	quarantined := map[string]int{}
	if err := sp.Quarantine("", func(q *spool.Quarantined) bool {
		quarantined[string(q.Record.TxID)]++
		return true
	}); err != nil {
		fail("quarantine: %v", err)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	dups := 0
	for tx, typ := range acked {
		d, q := sink.delivered[typ][tx], quarantined[tx]
		switch {
		case d == 0 && q == 0:
			fail("acked record %s (%s) neither delivered nor quarantined", tx, typ)
		case d > 0 && q > 0:
			fail("record %s both delivered (%d) and quarantined", tx, d)
		case q > 1:
			fail("record %s quarantined %d times", tx, q)
		case len(tx) > 6 && tx[:6] == "poison" && q == 0:
			fail("poison record %s delivered", tx)
		case d > 1:
			dups += d - 1
		}
	}
	if crashed == 0 && dups > 0 {
		fail("%d copies without a crash", dups)
	}
	// Per VIN, V records are first delivered in append order (copies a
	// crash sends again repeat records already delivered).
	for vin, txs := range sink.order {
		seen := map[string]bool{}
		last := -1
		for _, tx := range txs {
			if seen[tx] {
				continue
			}
			seen[tx] = true
			var round, i int
			if _, err := fmt.Sscanf(trimPoison(tx), "r%d-%d", &round, &i); err != nil {
				fail("txid %q: %v", tx, err)
			}
			pos := round*1000 + i
			if pos < last {
				fail("VIN %s: %s delivered after a later record", vin, tx)
			}
			last = max(last, pos)
		}
	}
	t.Logf("%d appended, %d acked, %d quarantined, %d crashes, %d copies sent again", appended, len(acked), len(quarantined), crashed, dups)
}

func trimPoison(tx string) string {
	if len(tx) > 7 && tx[:7] == "poison-" {
		return tx[7:]
	}
	return tx
}

// ackFunc adapts a function to spool.Waiter.
type ackFunc func(err error)

func (f ackFunc) Committed(_, _ uint64, err error) { f(err) }

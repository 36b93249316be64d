package test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/test/kfakebroker/kfaketest"
)

// TestReliabilityCrashConsistency runs load from several connections,
// SIGKILLs the daemon at a random moment of each round and restarts it on
// the same spool. At the end every acked txid must be on stdout (the
// logger) and in Kafka (the kfake broker process, read back with kcat):
// lost must be 0; duplicates are allowed (at least once) and logged.
//
// FT_RELIABILITY_ROUNDS sets the rounds (default 5; make reliability: 20).
// FT_RELIABILITY_SEED replays a run's decisions (kill moments, batch
// sizes, which rounds kill during recovery); the schedule of the
// goroutines themselves is not deterministic.
func TestReliabilityCrashConsistency(t *testing.T) {
	kfaketest.RequireKcat(t)
	rounds := relRounds(5)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("FT_RELIABILITY_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("FT_RELIABILITY_SEED=%q: %v", v, err)
		}
		seed = s
	}
	t.Logf("seed %d (replay: FT_RELIABILITY_SEED=%d FT_RELIABILITY_ROUNDS=%d go test -run 'TestReliabilityCrashConsistency$' ./test/)", seed, seed, rounds)
	rng := rand.New(rand.NewPCG(seed, 0xc0ffee))

	broker := startRelBroker(t, "")
	dir := t.TempDir()
	setup := relWriteConfig(t, dir, relConfig{
		Records: map[string][]string{"V": {"kafka", "logger"}, "alerts": {"kafka", "logger"}},
		Kafka:   broker.Addr,
	})
	conns := 4

	var (
		mu      sync.Mutex
		acked   = map[string]bool{}
		sent    int
		daemons []*daemon
	)
	for round := range rounds {
		d := startDaemon(t, setup.ConfigPath)
		daemons = append(daemons, d)
		// One round in four dies while it is still recovering (forwarders
		// replaying the previous rounds' backlog, vehicles reconnecting).
		var killAfter time.Duration
		if rng.IntN(4) == 0 {
			killAfter = time.Duration(rng.IntN(150)) * time.Millisecond
		} else {
			killAfter = time.Duration(150+rng.IntN(1350)) * time.Millisecond
		}
		batchSizes := make([]int, conns)
		for i := range batchSizes {
			batchSizes[i] = 1 + rng.IntN(64)
		}

		var wg sync.WaitGroup
		for k := range conns {
			vin := relVINs[k]
			c := dialNoFail(d.addr, setup.Certs, vin)
			if c == nil {
				continue // the daemon may already be gone in a short round
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				for b := 0; ; b++ {
					batch := make([]*envelope.StreamMessage, batchSizes[k])
					for j := range batch {
						topic := "V"
						if j%7 == 6 {
							topic = "alerts"
						}
						batch[j] = newRecord(vin, topic, fmt.Sprintf("crash-r%02d-c%d-b%05d-%02d", round, k, b, j))
					}
					if c.SendMany(batch) != nil {
						return
					}
					mu.Lock()
					sent += len(batch)
					mu.Unlock()
					for _, m := range batch {
						r, err := c.ReadReply(10 * time.Second)
						if err != nil {
							return // killed: the rest of the batch is unacked
						}
						if !r.Ack || r.TxID != string(m.TxID) {
							t.Errorf("round %d conn %d: got %+v, want the ack of %s", round, k, r, m.TxID)
							return
						}
						mu.Lock()
						acked[r.TxID] = true
						mu.Unlock()
					}
				}
			}()
		}
		time.Sleep(killAfter)
		d.kill()
		wg.Wait()
		mu.Lock()
		t.Logf("round %2d: SIGKILL after %4dms (batches %v): %6d acked so far, %6d sent", round, killAfter.Milliseconds(), batchSizes, len(acked), sent)
		mu.Unlock()
	}

	// A last, undisturbed run delivers what the killed ones had not.
	final := startDaemon(t, setup.ConfigPath)
	daemons = append(daemons, final)
	if len(acked) == 0 {
		t.Fatal("no record was acked in any round")
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if lost, _ := lostAndDup(acked, printedCounts(daemons...)); len(lost) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	stdoutCounts := printedCounts(daemons...)
	lostOut, dupOut := lostAndDup(acked, stdoutCounts)
	kafkaGot, _, err := waitKafka(broker.Addr, acked, 60*time.Second, "V", "alerts")
	if err != nil {
		t.Fatalf("read Kafka: %v", err)
	}
	lostKafka, dupKafka := lostAndDup(acked, kafkaGot)
	t.Logf("seed %d, %d rounds, %d connections: %d records sent, %d acked; stdout: lost %d, duplicated %d; kafka: lost %d, duplicated %d",
		seed, rounds, conns, sent, len(acked), len(lostOut), dupOut, len(lostKafka), dupKafka)
	if len(lostOut) > 0 {
		t.Errorf("seed %d: %d acked records never reached stdout, e.g. %q", seed, len(lostOut), lostOut[:min(5, len(lostOut))])
	}
	if len(lostKafka) > 0 {
		t.Errorf("seed %d: %d acked records never reached Kafka, e.g. %q", seed, len(lostKafka), lostKafka[:min(5, len(lostKafka))])
	}
	// Every record on stdout carries its certificate's VIN.
	for _, d := range daemons {
		for _, l := range d.printed() {
			if len(l.TxID) > 14 && l.TxID[:6] == "crash-" {
				k := int(l.TxID[len("crash-r00-c")] - '0')
				if l.VIN != relVINs[k] {
					t.Fatalf("%s printed with vin %s, want %s", l.TxID, l.VIN, relVINs[k])
				}
			}
		}
	}
	final.stop(t)
	if t.Failed() {
		t.Logf("spool dir %s; last daemon logs:\n%s", filepath.Join(dir, "spool"), final.logText())
	}
}

// dialNoFail dials like e2e.Dial but returns nil instead of failing the
// test (the daemon may have been killed already).
func dialNoFail(addr, certs, vin string) *vehicle.Client {
	c, _ := e2e.TryDial(addr, certs, vin)
	return c
}

package forwarder

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// TestDamagedRecordIsSkippedNotBlocking: a record the disk damaged cannot
// be delivered; the forwarder delivers everything around it, counts and
// logs it, and passes it — rather than stopping (and stopping again after
// every restart).
func TestDamagedRecordIsSkippedNotBlocking(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	sp, err := spool.Open(spool.Options{Dir: dir, Consumers: []string{"x/V"}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	seqs := appendRecs(t, sp, repeat("V", 10)...)
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	// Damage record 4 behind the spool's back.
	db, err := pebble.Open(dir, &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 10)
	key[0], key[1] = 'r', '/'
	binary.BigEndian.PutUint64(key[2:], seqs[3])
	if err := db.Set(key, []byte{0xff, 0x01}, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	db.Close()

	sp = openSpool(t, dir, "x/V")
	sink := &testSink{}
	f := newForwarder(t, sp, sink, Options{Name: "x", Topics: []string{"V"}, BatchRecords: 3})
	before := counter("damaged_records", "x").Get()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	want := slices.Delete(slices.Clone(seqs), 3, 4)
	if got := sink.delivered(); !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v (all but the damaged %d)", got, want, seqs[3])
	}
	if n := counter("damaged_records", "x").Get() - before; n != 1 {
		t.Fatalf("damaged counter moved by %d, want 1", n)
	}
	if c, _ := sp.Cursor("x/V"); c != seqs[9] {
		t.Fatalf("cursor %d, want %d", c, seqs[9])
	}
}

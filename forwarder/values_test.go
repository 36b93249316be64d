package forwarder

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"

	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/record"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// Values yields every record it can encode with its index, each value as
// AppendValue makes it and kept intact by the later ones; a record it
// cannot encode is left out, counted and logged once; a loop that stops
// early stops the encoding.
func TestEncoderValues(t *testing.T) {
	const vin = "5YJ3E1EA1KF000001"
	batch := make([]spool.Record, 4)
	for i := range batch {
		batch[i] = spool.Record{Seq: uint64(i + 1), VIN: vin, Topic: []byte(record.TopicV),
			Payload: vehicle.PayloadWithString(vin, strings.Repeat("x", 10*(i+1)))}
	}
	batch[1].Payload = []byte{0xff, 0xff, 0xff}
	undecodable := metrics.NewSet().NewCounter("test_undecodable_total")
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	enc := Encoder{Namespace: "tesla_telemetry"}

	var at []int
	var values [][]byte
	for i, v := range enc.Values(batch, undecodable, log) {
		at = append(at, i)
		values = append(values, v)
	}
	if len(at) != 3 || at[0] != 0 || at[1] != 2 || at[2] != 3 {
		t.Fatalf("yielded records %v, want [0 2 3]", at)
	}
	for k, i := range at {
		want, _, err := enc.AppendValue(nil, &batch[i])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(values[k], want) {
			t.Errorf("record %d: value differs from AppendValue's", i)
		}
	}
	if undecodable.Get() != 1 {
		t.Errorf("undecodable counter %d, want 1", undecodable.Get())
	}
	if n := strings.Count(logged.String(), "record cannot be encoded"); n != 1 || !strings.Contains(logged.String(), "seq=2") {
		t.Errorf("log %q, want one line for seq 2", logged.String())
	}

	n := 0
	for range enc.Values(batch, undecodable, log) {
		n++
		break
	}
	if n != 1 || undecodable.Get() != 1 {
		t.Errorf("after a break at the first value: %d values, undecodable %d; want 1 and no more encoding", n, undecodable.Get())
	}
}

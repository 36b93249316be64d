package kafka

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/internal/sinktest"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// generatedV returns n V records of one vehicle, one a second, with
// datums(i) datums each: what the fast path takes.
func generatedV(seed uint64, n int, datums func(i int) int) []spool.Record {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	vin := "5YJ3E1EA1KF000001"
	recs := make([]spool.Record, n)
	for i := range recs {
		at := time.Unix(1795000000+int64(i), 0)
		recs[i] = spool.Record{Seq: uint64(1000 + i), ReceivedAtMs: at.UnixMilli() + 7, CreatedAtSec: uint32(at.Unix()),
			VIN: vin, ClientVersion: fmt.Sprintf("fw-%d", i%3), Topic: []byte("V"), TxID: []byte(fmt.Sprintf("tx-%04d", i)),
			Payload: vehicle.PayloadV(rng, vin, datums(i), at)}
	}
	return recs
}

// encodeTestBatch is every acked reference vector (all record types, and
// payloads the fast path declines), 200 generated V records (the fast
// path) and one record that cannot be decoded, in the middle.
func encodeTestBatch(t testing.TB) []spool.Record {
	recs := sinktest.Records(t, sinktest.Acked(t, sinktest.Vectors(t)), 1795000000123, "test-1.0")
	recs = append(recs, generatedV(3, 200, func(i int) int { return 10 + i%31 })...)
	vin := recs[len(recs)-1].VIN
	bad := spool.Record{Seq: 999, VIN: vin, Topic: []byte("V"), TxID: []byte("bad"), Payload: []byte{0xff, 0xff, 0xff}}
	mid := len(recs) / 2
	return slices.Concat(recs[:mid], []spool.Record{bad}, recs[mid:])
}

// The batch encoding is forwarder.Encoder.Encode, record for record: the
// same topics, keys, values and headers in the same order, the undecodable
// record skipped and counted. The second and third rounds encode into the
// memory the round before kept (the batch reversed, then the first half:
// other sizes at every offset).
func TestEncodeBatchMatchesEncode(t *testing.T) {
	first := encodeTestBatch(t)
	reversed := slices.Clone(first)
	slices.Reverse(reversed)
	for _, json := range []bool{false, true} {
		enc := forwarder.Encoder{Namespace: "tesla_telemetry", JSON: json}
		s := &Sink{enc: enc, log: slog.New(slog.DiscardHandler)}
		var kept *byte
		for round, batch := range [][]spool.Record{first, reversed, first[:len(first)/2+1]} {
			m := checkEncodeBatch(t, s, enc, json, batch)
			if round > 0 && unsafe.SliceData(m.buf) != kept {
				t.Fatalf("json=%v round %d: the kept memory was not reused", json, round)
			}
			s.keepSpare(m)
			kept = unsafe.SliceData(m.buf)
		}
	}
}

// checkEncodeBatch encodes batch (one undecodable record in it) and checks
// the records against Encode's.
func checkEncodeBatch(t *testing.T, s *Sink, enc forwarder.Encoder, json bool, batch []spool.Record) batchMemory {
	t.Helper()
	before := undecodableTotal.Get()
	m := s.encodeBatch(batch)
	got := m.recs
	if n := undecodableTotal.Get() - before; n != 1 {
		t.Fatalf("json=%v: %d records counted undecodable, want 1", json, n)
	}
	var want []forwarder.Message
	for i := range batch {
		if m, err := enc.Encode(&batch[i]); err == nil {
			want = append(want, m)
		}
	}
	if len(got) != len(want) || len(want) != len(batch)-1 {
		t.Fatalf("json=%v: %d records, Encode gives %d of %d", json, len(got), len(want), len(batch))
	}
	for i, w := range want {
		g := got[i]
		if g.Topic != w.Topic || string(g.Key) != w.Key || !sameValue(t, w.RecordType, json, g.Value, w.Value) {
			t.Fatalf("json=%v record %d (%s): topic %q key %q value %d bytes; Encode: %q %q %d bytes",
				json, i, w.RecordType, g.Topic, g.Key, len(g.Value), w.Topic, w.Key, len(w.Value))
		}
		if len(g.Headers) != len(w.Headers) {
			t.Fatalf("json=%v record %d: %d headers, Encode %d", json, i, len(g.Headers), len(w.Headers))
		}
		for j, h := range w.Headers {
			if g.Headers[j].Key != h.Key || string(g.Headers[j].Value) != h.Value {
				t.Fatalf("json=%v record %d header %d: %s=%q, Encode %s=%q", json, i, j, g.Headers[j].Key, g.Headers[j].Value, h.Key, h.Value)
			}
		}
	}
	return m
}

// sameValue compares two encodings of one record: byte for byte, or, since
// proto.Marshal orders map entries at random and protojson varies its
// spacing on purpose (two encodings of one message may differ), as decoded
// messages.
func sameValue(t *testing.T, recordType string, json bool, a, b []byte) bool {
	t.Helper()
	if bytes.Equal(a, b) {
		return true
	}
	ma, mb := sinktest.NewMessage(t, recordType), sinktest.NewMessage(t, recordType)
	unmarshal := proto.Unmarshal
	if json {
		unmarshal = protojson.Unmarshal
	}
	if err := unmarshal(a, ma); err != nil {
		t.Fatalf("%s: batch value does not decode: %v", recordType, err)
	}
	if err := unmarshal(b, mb); err != nil {
		t.Fatalf("%s: Encode value does not decode: %v", recordType, err)
	}
	return proto.Equal(ma, mb)
}

// BenchmarkEncodeBatch is the Kafka sink's per-batch encoding of 256
// generated V records: /fresh in new memory (3 allocations per batch),
// /reused in the memory of the batch before, as Send does once a batch is
// confirmed (no allocation).
func BenchmarkEncodeBatch(b *testing.B) {
	batch := generatedV(5, 256, func(int) int { return 20 })
	for _, reuse := range []bool{false, true} {
		b.Run(map[bool]string{false: "fresh", true: "reused"}[reuse], func(b *testing.B) {
			s := &Sink{enc: forwarder.Encoder{Namespace: "tesla_telemetry"}, log: slog.New(slog.DiscardHandler)}
			b.ReportAllocs()
			for b.Loop() {
				m := s.encodeBatch(batch)
				if len(m.recs) != len(batch) {
					b.Fatal(len(m.recs))
				}
				if reuse {
					s.keepSpare(m)
				}
			}
		})
	}
}

// BenchmarkEncodePerRecord is what encodeBatch replaced, for comparison:
// Encode per record, then its strings converted to a kgo.Record.
func BenchmarkEncodePerRecord(b *testing.B) {
	batch := generatedV(5, 256, func(int) int { return 20 })
	enc := forwarder.Encoder{Namespace: "tesla_telemetry"}
	b.ReportAllocs()
	for b.Loop() {
		recs := make([]kgo.Record, 0, len(batch))
		for i := range batch {
			m, err := enc.Encode(&batch[i])
			if err != nil {
				b.Fatal(err)
			}
			headers := make([]kgo.RecordHeader, len(m.Headers))
			for j, h := range m.Headers {
				headers[j] = kgo.RecordHeader{Key: h.Key, Value: []byte(h.Value)}
			}
			recs = append(recs, kgo.Record{Topic: m.Topic, Key: []byte(m.Key), Value: m.Value, Headers: headers})
		}
	}
}

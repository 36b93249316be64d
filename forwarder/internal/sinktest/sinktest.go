// Package sinktest holds the helpers the sink tests (kafka, kinesis, mqtt,
// nats, pubsub, redis, stdout, zmq) share: a quiet logger, the reference
// vectors of proto/testdata, spool records made from them the way ingest
// makes them, a spool in a temporary directory, and a forwarder drained
// through a sink.
package sinktest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"google.golang.org/protobuf/proto"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
	"github.com/fleet-telemetry/fleet-telemetry/proto/record"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// Quiet is the logger of sink tests: it discards everything.
var Quiet = slog.New(slog.DiscardHandler)

// Namespace is the namespace sink tests encode with (the reference
// server's default).
const Namespace = "tesla_telemetry"

// allTopics are the four record types; Drain routes them all by default.
var allTopics = []string{record.TopicV, record.TopicAlerts, record.TopicErrors, record.TopicConnectivity}

// Vector is one case of proto/testdata/reference-vectors.json.
type Vector struct {
	Name               string            `json:"name"`
	CertVIN            string            `json:"cert_vin"`
	FrameB64           string            `json:"frame_b64"`
	Topic              string            `json:"topic"`
	TxID               string            `json:"txid"`
	Outcome            string            `json:"outcome"`
	DispatchedProtoB64 string            `json:"dispatched_proto_b64"`
	DispatchedJSON     json.RawMessage   `json:"dispatched_json"`
	HeadersStatic      map[string]string `json:"headers_static"`
}

// Vectors returns every case of proto/testdata/reference-vectors.json, found
// relative to this file so that any package's test can call it.
func Vectors(t testing.TB) []Vector {
	t.Helper()
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("sinktest: cannot locate its own source file")
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(self), "..", "..", "..", "proto", "testdata", "reference-vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vs []Vector
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatalf("reference-vectors.json: %v", err)
	}
	return vs
}

// Acked returns the vectors of vs the reference acknowledged (Outcome
// "ack"), in order, and fails the test when there is none.
func Acked(t testing.TB, vs []Vector) []Vector {
	t.Helper()
	var acked []Vector
	for _, v := range vs {
		if v.Outcome == "ack" {
			acked = append(acked, v)
		}
	}
	if len(acked) == 0 {
		t.Fatal("no acked vectors")
	}
	return acked
}

// Envelope decodes v's frame, failing the test when it is not base64 or
// not an envelope. The envelope's byte slices alias a buffer of its own.
func Envelope(t testing.TB, v Vector) *envelope.Envelope {
	t.Helper()
	frame, err := base64.StdEncoding.DecodeString(v.FrameB64)
	if err != nil {
		t.Fatalf("%s: frame_b64: %v", v.Name, err)
	}
	var env envelope.Envelope
	if err := envelope.Decode(frame, &env); err != nil {
		t.Fatalf("%s: envelope.Decode: %v", v.Name, err)
	}
	return &env
}

// Record returns the spool record ingest stores for env, v's decoded frame,
// received at receivedAtMs from a vehicle with v's certificate VIN and
// clientVersion.
func Record(v Vector, env *envelope.Envelope, receivedAtMs int64, clientVersion string) spool.Record {
	return spool.Record{
		ReceivedAtMs: receivedAtMs, CreatedAtSec: env.Stream.CreatedAt, VIN: v.CertVIN, ClientVersion: clientVersion,
		Topic: env.Topic, TxID: env.TxID, Payload: env.Stream.Payload,
	}
}

// Records decodes every vector of vs and returns their spool records, one a
// vector in the same order, all received at receivedAtMs with clientVersion.
func Records(t testing.TB, vs []Vector, receivedAtMs int64, clientVersion string) []spool.Record {
	t.Helper()
	recs := make([]spool.Record, len(vs))
	for i, v := range vs {
		recs[i] = Record(v, Envelope(t, v), receivedAtMs, clientVersion)
	}
	return recs
}

// AckedRecords returns the spool records of every acked reference vector,
// in order, received at 1700000000000 (ms) from vehicles of client version
// "v1".
func AckedRecords(t testing.TB) []spool.Record {
	t.Helper()
	return Records(t, Acked(t, Vectors(t)), 1700000000000, "v1")
}

// NewMessage returns an empty protobuf message of the type a record of topic
// carries, failing the test for a topic that is not a record type.
func NewMessage(t testing.TB, topic string) proto.Message {
	t.Helper()
	switch topic {
	case record.TopicV:
		return &pb.Payload{}
	case record.TopicAlerts:
		return &pb.VehicleAlerts{}
	case record.TopicErrors:
		return &pb.VehicleErrors{}
	case record.TopicConnectivity:
		return &pb.VehicleConnectivity{}
	}
	t.Fatalf("no message type for topic %q", topic)
	return nil
}

// commitWaiter collects commit results (buffered: Committed never blocks).
type commitWaiter chan error

func (w commitWaiter) Committed(_, _ uint64, err error) { w <- err }

// OpenSpool opens a spool in a temporary directory with the one cursor
// consumer, logging to log, and closes it when the test ends.
func OpenSpool(t testing.TB, consumer string, log *slog.Logger) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(spool.Options{Dir: t.TempDir(), Consumers: forwarder.LaneNames(consumer, allTopics), Logger: log})
	if err != nil {
		t.Fatalf("spool.Open: %v", err)
	}
	t.Cleanup(func() { _ = sp.Close() })
	return sp
}

// Append appends recs to sp and waits until every one is durable, failing
// the test when an append or a commit fails.
func Append(t testing.TB, sp *spool.Spool, recs []spool.Record) {
	t.Helper()
	w := make(commitWaiter, len(recs))
	for i := range recs {
		if err := sp.Append(&recs[i], w, 0); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	for range recs {
		if err := <-w; err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
}

// Forward runs a forwarder with options o (o.Topics, when empty, are the
// four record types) from sp into sink until it has passed every committed
// record, failing the test when that fails or takes longer than timeout.
func Forward(t testing.TB, sp *spool.Spool, sink forwarder.Sink, o forwarder.Options, timeout time.Duration) {
	t.Helper()
	if len(o.Topics) == 0 {
		o.Topics = allTopics
	}
	f, err := forwarder.New(sp, sink, o)
	if err != nil {
		t.Fatalf("forwarder.New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := f.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
}

// Drain is Forward, then checks that every lane's cursor reached
// sp.LastSeq.
func Drain(t testing.TB, sp *spool.Spool, sink forwarder.Sink, o forwarder.Options, timeout time.Duration) {
	t.Helper()
	Forward(t, sp, sink, o, timeout)
	if len(o.Topics) == 0 {
		o.Topics = allTopics
	}
	for _, lane := range forwarder.LaneNames(o.Name, o.Topics) {
		if c, _ := sp.Cursor(lane); c != sp.LastSeq() {
			t.Fatalf("lane %s at %d after Drain, want %d", lane, c, sp.LastSeq())
		}
	}
}

// ByType groups items by their record type, keeping their order: a
// forwarder delivers each record type in its own lane, so records keep
// their spool order within a type but not across types.
func ByType[T any](items []T, typeOf func(T) string) map[string][]T {
	out := map[string][]T{}
	for _, it := range items {
		out[typeOf(it)] = append(out[typeOf(it)], it)
	}
	return out
}

// RefusedAlone checks that err, what a Send returned, is a
// *forwarder.BatchError naming record i of the batch alone, refused for
// good (forwarder.Permanent) with reason.
func RefusedAlone(t testing.TB, err error, i int, reason string) {
	t.Helper()
	var be *forwarder.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 1 || be.Failed[0].Index != i {
		t.Fatalf("Send = %v, want record %d alone refused", err, i)
	}
	if r, ok := forwarder.IsPermanent(be.Failed[0].Err); !ok || r != reason {
		t.Fatalf("record %d's error %v is not a permanent %s", i, be.Failed[0].Err, reason)
	}
}

// SendFailsUncounted checks that sink's Send of recs fails, its broker
// being down, and leaves the counter published where it was.
func SendFailsUncounted(t testing.TB, sink forwarder.Sink, recs []spool.Record, published *metrics.Counter) {
	t.Helper()
	before := published.Get()
	if err := sink.Send(context.Background(), recs); err == nil {
		t.Fatal("Send returned nil while the broker was down")
	}
	if d := published.Get() - before; d != 0 {
		t.Fatalf("%d records counted as published while the broker was down", d)
	}
}

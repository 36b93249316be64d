package kafka_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"google.golang.org/protobuf/proto"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/internal/sinktest"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/kafka"
	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
	"github.com/fleet-telemetry/fleet-telemetry/test/kfakebroker/kfaketest"
)

// brokerBin is the kfakebroker command, built once.
var brokerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kafka-sink-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	brokerBin, err = kfaketest.Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

func newSink(t *testing.T, addr string, json bool, extra map[string]any) *kafka.Sink {
	t.Helper()
	m := map[string]any{"bootstrap.servers": addr, "queue.buffering.max.ms": 5.0, "compression.type": "gzip"}
	for k, v := range extra {
		m[k] = v
	}
	cfg, err := kafka.ParseConfig(m)
	if err != nil {
		t.Fatal(err)
	}
	s, err := kafka.New(cfg, forwarder.Encoder{Namespace: "tesla_telemetry", JSON: json}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var wantHeaderOrder = []string{"vin", "receivedat", "timestamp", "txid", "txtype", "version", "device_client_version"}

// TestReferenceVectorsThroughKafka sends every acked reference vector
// through a real spool, the generic forwarder and the sink to a broker
// process, reads the topics back with kcat and compares with what the
// reference dispatched.
func TestReferenceVectorsThroughKafka(t *testing.T) {
	kfaketest.RequireKcat(t)
	vectors := sinktest.Acked(t, sinktest.Vectors(t))
	for _, asJSON := range []bool{false, true} {
		name := "protobuf"
		if asJSON {
			name = "transmit_decoded_records"
		}
		t.Run(name, func(t *testing.T) {
			broker := kfaketest.Start(t, brokerBin, kfaketest.Options{Partitions: 3})
			sp := sinktest.OpenSpool(t, "kafka", quietLog())
			const clientVersion = "2024.44.25"
			receivedAt := time.Now().UnixMilli()
			var recs []spool.Record
			for _, v := range vectors {
				env := sinktest.Envelope(t, v)
				if string(env.Topic) != v.Topic || string(env.TxID) != v.TxID {
					t.Fatalf("%s: envelope has topic %q txid %q, the vector says %q %q", v.Name, env.Topic, env.TxID, v.Topic, v.TxID)
				}
				recs = append(recs, sinktest.Record(v, env, receivedAt, clientVersion))
			}
			sinktest.Append(t, sp, recs)

			sink := newSink(t, broker.Addr, asJSON, nil)
			sinktest.Forward(t, sp, sink, forwarder.Options{
				Name: "kafka", Topics: []string{"V", "alerts", "errors", "connectivity"}, Logger: quietLog(),
			}, 30*time.Second)
			if err := sink.Close(); err != nil {
				t.Fatal(err)
			}

			// Read every topic back; index by txid.
			got := map[string]kfaketest.Message{}
			for _, topic := range []string{"V", "alerts", "errors", "connectivity"} {
				msgs, err := kfaketest.ReadTopicEventually(broker.Addr, "tesla_telemetry_"+topic, 10*time.Second)
				if err != nil {
					t.Fatalf("read tesla_telemetry_%s: %v", topic, err)
				}
				for _, m := range msgs {
					tx, _ := m.Header("txid")
					if _, dup := got[tx]; dup {
						t.Errorf("txid %s read twice (the batch was confirmed once)", tx)
					}
					got[tx] = m
				}
			}
			if len(got) != len(vectors) {
				t.Errorf("read %d records, want %d", len(got), len(vectors))
			}
			for _, v := range vectors {
				m, ok := got[v.TxID]
				if !ok {
					t.Errorf("%s: txid %s not in Kafka", v.Name, v.TxID)
					continue
				}
				checkMessage(t, v, m, asJSON, receivedAt, clientVersion)
			}
		})
	}
}

func checkMessage(t *testing.T, v sinktest.Vector, m kfaketest.Message, asJSON bool, receivedAt int64, clientVersion string) {
	t.Helper()
	if m.Key != v.CertVIN {
		t.Errorf("%s: key %q, want %q", v.Name, m.Key, v.CertVIN)
	}
	var order []string
	for _, h := range m.Headers {
		order = append(order, h.Key)
	}
	if !reflect.DeepEqual(order, wantHeaderOrder) {
		t.Errorf("%s: headers %q, want %q in this order", v.Name, order, wantHeaderOrder)
	}
	for k, want := range v.HeadersStatic {
		if got, _ := m.Header(k); got != want {
			t.Errorf("%s: header %s = %q, want %q", v.Name, k, got, want)
		}
	}
	if got, _ := m.Header("receivedat"); got != strconv.FormatInt(receivedAt, 10) {
		t.Errorf("%s: receivedat %q, want %d", v.Name, got, receivedAt)
	}
	if ts, _ := m.Header("timestamp"); ts == "" {
		t.Errorf("%s: no timestamp header", v.Name)
	} else if n, err := strconv.ParseInt(ts, 10, 64); err != nil || n <= 0 {
		t.Errorf("%s: timestamp %q is not epoch ms", v.Name, ts)
	}
	if got, _ := m.Header("device_client_version"); got != clientVersion {
		t.Errorf("%s: device_client_version %q, want %q", v.Name, got, clientVersion)
	}
	if asJSON {
		var got, want any
		if err := json.Unmarshal(m.Value, &got); err != nil {
			t.Errorf("%s: value is not JSON: %v: %q", v.Name, err, m.Value)
			return
		}
		if err := json.Unmarshal(v.DispatchedJSON, &want); err != nil {
			t.Fatalf("%s: dispatched_json: %v", v.Name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: JSON value\n got %s\nwant %s", v.Name, m.Value, v.DispatchedJSON)
		}
		return
	}
	wantBytes, err := base64.StdEncoding.DecodeString(v.DispatchedProtoB64)
	if err != nil {
		t.Fatalf("%s: dispatched_proto_b64: %v", v.Name, err)
	}
	got, want := sinktest.NewMessage(t, v.Topic), sinktest.NewMessage(t, v.Topic)
	if err := proto.Unmarshal(m.Value, got); err != nil {
		t.Errorf("%s: value is not a %T: %v", v.Name, got, err)
		return
	}
	if err := proto.Unmarshal(wantBytes, want); err != nil {
		t.Fatalf("%s: dispatched proto: %v", v.Name, err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("%s: value\n got %v\nwant %v", v.Name, got, want)
	}
}

// vRecord is a spool record of type V for vin.
func vRecord(vin, txid string, created time.Time) spool.Record {
	p := &pb.Payload{Vin: vin, Data: []*pb.Datum{{Key: pb.Field_Soc, Value: &pb.Value{Value: &pb.Value_DoubleValue{DoubleValue: 50}}}}}
	b, err := proto.Marshal(p)
	if err != nil {
		panic(err)
	}
	return spool.Record{ReceivedAtMs: created.UnixMilli(), CreatedAtSec: uint32(created.Unix()), VIN: vin, Topic: []byte("V"), TxID: []byte(txid), Payload: b}
}

// TestBrokerOutageAndGoroutines produces, loses the broker, fails a Send
// by its context, gets the broker back and produces again; every record
// arrives, and after Close the goroutine count is back to its baseline.
func TestBrokerOutageAndGoroutines(t *testing.T) {
	kfaketest.RequireKcat(t)
	broker := kfaketest.Start(t, brokerBin, kfaketest.Options{DataDir: t.TempDir()})
	baseline := runtime.NumGoroutine()

	sink := newSink(t, broker.Addr, false, nil)
	batch := func(prefix string, n int) []spool.Record {
		var rs []spool.Record
		for i := range n {
			rs = append(rs, vRecord("5YJ3E1EA1KF00000"+strconv.Itoa(i%3+1), fmt.Sprintf("%s-%d", prefix, i), time.Now()))
			rs[i].Seq = uint64(i + 1)
		}
		return rs
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := sink.Send(ctx, batch("before", 50)); err != nil {
		t.Fatalf("Send before the outage: %v", err)
	}

	broker.Stop(t)
	short, cancelShort := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	err := sink.Send(short, batch("during", 50))
	cancelShort()
	if err == nil {
		t.Fatal("Send succeeded with the broker down")
	}
	t.Logf("Send during the outage: %v", err)

	broker.Restart(t)
	if err := sink.Send(ctx, batch("after", 50)); err != nil {
		t.Fatalf("Send after the outage: %v", err)
	}
	// The forwarder would send "during" again; do the same.
	if err := sink.Send(ctx, batch("during", 50)); err != nil {
		t.Fatalf("Send again after the outage: %v", err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}

	msgs, err := kfaketest.ReadTopicEventually(broker.Addr, "tesla_telemetry_V", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, m := range msgs {
		tx, _ := m.Header("txid")
		vin, _ := m.Header("vin")
		if prefix, _, _ := strings.Cut(tx, "-"); (prefix != "before" && prefix != "during" && prefix != "after") || vin != m.Key {
			t.Errorf("message with txid %q, vin %q, key %q: not as sent (its memory reused while the client held it?)", tx, vin, m.Key)
		}
		seen[tx]++
	}
	for _, prefix := range []string{"before", "during", "after"} {
		for i := range 50 {
			if tx := fmt.Sprintf("%s-%d", prefix, i); seen[tx] == 0 {
				t.Errorf("%s never reached Kafka", tx)
			}
		}
	}
	t.Logf("%d messages read for 150 records (duplicates allowed)", len(msgs))

	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= baseline {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines after Close, baseline %d:\n%s", n, baseline, buf)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSendReportsFailure checks that a record the broker refuses for its
// size is reported alone, as a permanent refusal with a description, and
// counted; the other record of the batch is confirmed.
func TestSendReportsFailure(t *testing.T) {
	broker := kfaketest.Start(t, brokerBin, kfaketest.Options{})
	sink := newSink(t, broker.Addr, false, map[string]any{"message.max.bytes": 1000.0})
	defer sink.Close()
	errorsBefore := metrics.GetOrCreateCounter("fleet_kafka_produce_errors_total").Get()
	big := vRecord("5YJ3E1EA1KF000001", "big", time.Now())
	p := &pb.Payload{Vin: "x", Data: []*pb.Datum{{Key: pb.Field_VehicleName, Value: &pb.Value{Value: &pb.Value_StringValue{StringValue: strings.Repeat("x", 5000)}}}}}
	big.Payload, _ = proto.Marshal(p)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := sink.Send(ctx, []spool.Record{vRecord("5YJ3E1EA1KF000001", "small", time.Now()), big})
	if err == nil {
		t.Fatal("Send succeeded with a record larger than message.max.bytes")
	}
	var be *forwarder.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 1 || be.Failed[0].Index != 1 {
		t.Fatalf("error %v: want the big record (index 1) alone reported", err)
	}
	if reason, ok := forwarder.IsPermanent(be.Failed[0].Err); !ok || reason != "message_too_large" ||
		!strings.Contains(err.Error(), "tesla_telemetry_V") || !strings.Contains(err.Error(), "MESSAGE_TOO_LARGE") {
		t.Fatalf("error %q: want a permanent message_too_large naming the topic", err)
	}
	if d := metrics.GetOrCreateCounter("fleet_kafka_produce_errors_total").Get() - errorsBefore; d != 1 {
		t.Fatalf("fleet_kafka_produce_errors_total grew by %d, want 1", d)
	}
}

// BenchmarkSendSmallBatch is one forwarder batch of 5 records through the
// sink to a kfake broker, with the client's default linger: ns/op is the
// time a forwarder waits per batch at low load.
func BenchmarkSendSmallBatch(b *testing.B) {
	broker := kfaketest.Start(b, brokerBin, kfaketest.Options{})
	cfg, err := kafka.ParseConfig(map[string]any{"bootstrap.servers": broker.Addr})
	if err != nil {
		b.Fatal(err)
	}
	sink, err := kafka.New(cfg, forwarder.Encoder{Namespace: "tesla_telemetry"}, quietLog())
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	batch := make([]spool.Record, 5)
	for i := range batch {
		batch[i] = vRecord("5YJ3E1EA1KF000001", fmt.Sprintf("tx-%d", i), time.Now())
	}
	ctx := context.Background()
	if err := sink.Send(ctx, batch); err != nil { // topic creation, metadata
		b.Fatal(err)
	}
	for b.Loop() {
		if err := sink.Send(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
}

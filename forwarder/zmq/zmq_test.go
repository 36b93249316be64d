package zmq

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/internal/sinktest"
	"github.com/fleet-telemetry/fleet-telemetry/internal/brokertest"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

func newSink(t *testing.T, enc forwarder.Encoder) *Sink {
	t.Helper()
	s, err := New(Options{Addr: "tcp://127.0.0.1:0", Encoder: enc, Logger: sinktest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Every reference vector reaches an independent subscriber (pyzmq on
// libzmq) as two frames: <namespace>_<type> and the Encoder's bytes
// (protobuf, and JSON with transmit_decoded_records), in order within each
// record type.
func TestFramesToLibzmqSubscriber(t *testing.T) {
	for _, js := range []bool{false, true} {
		t.Run(map[bool]string{false: "protobuf", true: "json"}[js], func(t *testing.T) {
			enc := forwarder.Encoder{Namespace: sinktest.Namespace, JSON: js}
			s := newSink(t, enc)
			sub := brokertest.StartZMQSubscriber(t, "tcp://"+s.Addr())
			recs := sinktest.AckedRecords(t)
			skip, ok := sub.Join(15*time.Second, func(int) {
				if err := s.Send(context.Background(), recs[:1]); err != nil {
					t.Fatal(err)
				}
			})
			if !ok {
				t.Fatal("the subscriber never received a probe")
			}
			before := counters.Of("V").Published.Get()
			sp := sinktest.OpenSpool(t, "zmq", sinktest.Quiet)
			sinktest.Append(t, sp, recs)
			sinktest.Drain(t, sp, s, forwarder.Options{Name: "zmq", Logger: sinktest.Quiet}, 30*time.Second)
			var got [][][]byte
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if got = sub.Messages()[skip:]; len(got) >= len(recs) {
					break
				}
			}
			if len(got) != len(recs) {
				t.Fatalf("subscriber got %d messages, want %d", len(got), len(recs))
			}
			// In order within each record type (the forwarder's lanes).
			byTopic := sinktest.ByType(got, func(m [][]byte) string { return string(m[0]) })
			next := map[string]int{}
			nV := 0
			for i := range recs {
				typ := string(recs[i].Topic)
				if typ == "V" {
					nV++
				}
				want, _, _ := enc.AppendValue(nil, &recs[i])
				topic := sinktest.Namespace + "_" + typ
				k := next[topic]
				next[topic]++
				if k >= len(byTopic[topic]) {
					t.Fatalf("record %d: no message on %s left", i, topic)
				}
				got := byTopic[topic]
				i := k
				if len(got[i]) != 2 || string(got[i][0]) != topic {
					t.Fatalf("message %d: %d frames, topic %q", i, len(got[i]), got[i][0])
				}
				if js || typ == "V" {
					if string(got[i][1]) != string(want) {
						t.Errorf("message %d: payload differs from the Encoder's", i)
					}
					continue
				}
				// A map field's entries may be marshalled in another order.
				a, b := sinktest.NewMessage(t, typ), sinktest.NewMessage(t, typ)
				if proto.Unmarshal(got[i][1], a) != nil || proto.Unmarshal(want, b) != nil || !proto.Equal(a, b) {
					t.Errorf("message %d: payload differs from the Encoder's", i)
				}
			}
			if d := counters.Of("V").Published.Get() - before; d != uint64(nV) {
				t.Errorf("zmq_publish_total{V} +%d, want +%d", d, nV)
			}
		})
	}
}

// Without a subscriber PUB drops: Send does not block, and the forwarder
// passes the records (best effort).
func TestNoSubscriberDoesNotBlock(t *testing.T) {
	s := newSink(t, forwarder.Encoder{Namespace: sinktest.Namespace})
	recs := sinktest.AckedRecords(t)
	many := make([]spool.Record, 0, 20*len(recs))
	for range 20 {
		many = append(many, recs...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Send(ctx, many); err != nil {
		t.Fatal(err)
	}
}

// A bind error stops the start; it names the address.
func TestBindError(t *testing.T) {
	addr := "tcp://" + e2e.PortInUse(t)
	if _, err := New(Options{Addr: addr, Logger: sinktest.Quiet}); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("binding a port in use: %v", err)
	}
	if _, err := New(Options{Addr: "nonsense", Logger: sinktest.Quiet}); err == nil {
		t.Fatal("a bad endpoint bound")
	}
	if _, err := New(Options{}); err == nil {
		t.Fatal("no addr accepted")
	}
}

// Close ends the socket's goroutine; a Send afterwards fails instead of
// hanging.
func TestSendAfterClose(t *testing.T) {
	s, err := New(Options{Addr: "tcp://127.0.0.1:0", Encoder: forwarder.Encoder{Namespace: sinktest.Namespace}, Logger: sinktest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s.Close()
	if err := s.Send(context.Background(), sinktest.AckedRecords(t)); err == nil {
		t.Fatal("Send after Close returned nil")
	}
}

func TestCurveError(t *testing.T) {
	err := CurveNotSupported("zmq.server_key_json_path")
	if !strings.Contains(err.Error(), "zmq.server_key_json_path") || !strings.Contains(err.Error(), "CURVE") {
		t.Fatal(err)
	}
}

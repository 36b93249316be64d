package mqtt

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/internal/sinktest"
	"github.com/fleet-telemetry/fleet-telemetry/internal/brokertest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// subscriber is a paho client of the test's own, subscribed to topic with
// QoS 1, collecting every message.
type subscriber struct {
	client paho.Client
	mu     sync.Mutex
	got    []Message
}

func subscribe(t *testing.T, addr, topic string) *subscriber {
	t.Helper()
	s := &subscriber{}
	o := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("test-sub-" + t.Name()).SetOrderMatters(true)
	s.client = paho.NewClient(o)
	if tok := s.client.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	tok := s.client.Subscribe(topic, 1, func(_ paho.Client, m paho.Message) {
		s.mu.Lock()
		s.got = append(s.got, Message{Topic: m.Topic(), Payload: append([]byte(nil), m.Payload()...)})
		s.mu.Unlock()
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { s.client.Disconnect(100) })
	return s
}

// waitFor waits until n messages arrived and returns them.
func (s *subscriber) waitFor(t *testing.T, n int, timeout time.Duration) []Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		got := append([]Message(nil), s.got...)
		s.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newSink(t *testing.T, addr string, qos byte) *Sink {
	t.Helper()
	s, err := New(Options{Broker: addr, ClientID: "sink-" + t.Name(), TopicBase: "telemetry", QoS: qos,
		ConnectRetryInterval: 200 * time.Millisecond, PublishTimeout: 2 * time.Second, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for !s.client.IsConnectionOpen() {
		if time.Now().After(deadline) {
			t.Fatal("sink did not connect within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

// Every reference vector the reference acked goes through a forwarder to a
// real mosquitto and arrives at a subscriber as Encode's messages, in
// order within each record type; mqtt_publish_total counts them.
func TestSendReferenceVectors(t *testing.T) {
	for _, qos := range []byte{0, 1, 2} {
		t.Run("qos"+string(rune('0'+qos)), func(t *testing.T) {
			b := brokertest.Mosquitto(t)
			sub := subscribe(t, b.Addr, "telemetry/#")
			sink := newSink(t, b.Addr, qos)
			recs := sinktest.Records(t, sinktest.Acked(t, sinktest.Vectors(t)), 1700000000000, "v1")
			var want []Message
			for i := range recs {
				msgs, _, err := Encode(string(recs[i].Topic), recs[i].VIN, "telemetry", recs[i].Payload)
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, msgs...)
			}
			if len(want) < 10 {
				t.Fatalf("only %d messages from the vectors", len(want))
			}
			before := counterSum("mqtt_publish_total")
			sp := sinktest.OpenSpool(t, "mqtt", quiet)
			sinktest.Append(t, sp, recs)
			sinktest.Drain(t, sp, sink, forwarder.Options{Name: "mqtt", Logger: quiet}, 30*time.Second)
			got := sub.waitFor(t, len(want), 10*time.Second)
			if len(got) != len(want) {
				t.Fatalf("subscriber got %d messages, want %d", len(got), len(want))
			}
			// In order within each record type (the forwarder's lanes).
			kind := func(m Message) string { return strings.Split(m.Topic, "/")[2] }
			gotBy, wantBy := sinktest.ByType(got, kind), sinktest.ByType(want, kind)
			for k, want := range wantBy {
				got := gotBy[k]
				for i := range want {
					if i >= len(got) || got[i].Topic != want[i].Topic || string(got[i].Payload) != string(want[i].Payload) {
						t.Errorf("%s message %d: got %v, want %s %s", k, i, got, want[i].Topic, want[i].Payload)
						break
					}
				}
			}
			if d := counterSum("mqtt_publish_total") - before; d != float64(len(want)) {
				t.Errorf("mqtt_publish_total +%v, want +%d", d, len(want))
			}
		})
	}
}

// counterSum adds up a metric family's samples.
func counterSum(name string) float64 {
	var sum float64
	for _, n := range metrics.ListMetricNames() {
		if len(n) > len(name) && n[:len(name)+1] == name+"{" {
			sum += float64(metrics.GetOrCreateCounter(n).Get())
		}
	}
	return sum
}

// While the broker is down Send fails, for QoS 0 as for QoS 1, and nothing
// is counted as published: paho completes a QoS 0 publish made while it
// reconnects without sending it, so the sink must not publish then. Once
// the broker is back, the same batch goes through.
func TestSendFailsWhileBrokerDown(t *testing.T) {
	for _, qos := range []byte{0, 1} {
		t.Run("qos"+string(rune('0'+qos)), func(t *testing.T) {
			b := brokertest.Mosquitto(t)
			sink := newSink(t, b.Addr, qos)
			recs := sinktest.Records(t, sinktest.Acked(t, sinktest.Vectors(t)), 1700000000000, "v1")
			b.Stop()
			deadline := time.Now().Add(10 * time.Second)
			for sink.client.IsConnectionOpen() && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			before := counterSum("mqtt_publish_total")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := sink.Send(ctx, recs); err == nil {
				t.Fatal("Send returned nil while the broker was down")
			}
			if d := counterSum("mqtt_publish_total") - before; d != 0 {
				t.Fatalf("mqtt_publish_total +%v while the broker was down", d)
			}
			b.Start()
			sub := subscribe(t, b.Addr, "telemetry/#")
			var err error
			for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				if err = sink.Send(ctx, recs); err == nil {
					break
				}
			}
			if err != nil {
				t.Fatalf("Send after the broker returned: %v", err)
			}
			if got := sub.waitFor(t, 1, 5*time.Second); len(got) == 0 {
				t.Fatal("nothing arrived after the broker returned")
			}
		})
	}
}

func TestNewRefuses(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("no broker accepted")
	}
	if _, err := New(Options{Broker: "b", QoS: 3}); err == nil {
		t.Error("qos 3 accepted")
	}
	if got := BrokerURL("mqtt:1883"); got != "tcp://mqtt:1883" {
		t.Errorf("BrokerURL: %s", got)
	}
	if got := BrokerURL("ssl://mqtt:8883"); got != "ssl://mqtt:8883" {
		t.Errorf("BrokerURL: %s", got)
	}
}

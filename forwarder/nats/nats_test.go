package nats

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/internal/sinktest"
	"github.com/fleet-telemetry/fleet-telemetry/internal/brokertest"
)

func conn(t *testing.T, addr string) *natsgo.Conn {
	t.Helper()
	nc, err := natsgo.Connect("nats://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// subscribeAll subscribes a connection of the test's own to every subject
// of the namespace, <namespace>.>, and returns the channel (of capacity
// size) its messages arrive on. The server has the subscription when it
// returns.
func subscribeAll(t *testing.T, addr string, size int) <-chan *natsgo.Msg {
	t.Helper()
	sub := conn(t, addr)
	ch := make(chan *natsgo.Msg, size)
	if _, err := sub.ChanSubscribe(sinktest.Namespace+".>", ch); err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}
	return ch
}

func newSink(t *testing.T, addr string, js bool) *Sink {
	t.Helper()
	s, err := New(Options{URL: "nats://" + addr, Name: "test", JetStream: js, PublishTimeout: time.Second,
		ReconnectWait: 100 * time.Millisecond, Encoder: forwarder.Encoder{Namespace: sinktest.Namespace}, Logger: sinktest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// equalPayload compares two dispatched payloads as messages (a map field's
// entries may be marshalled in another order each time).
func equalPayload(t *testing.T, topic string, a, b []byte) bool {
	ma, mb := sinktest.NewMessage(t, topic), sinktest.NewMessage(t, topic)
	return proto.Unmarshal(a, ma) == nil && proto.Unmarshal(b, mb) == nil && proto.Equal(ma, mb)
}

// Core NATS: every reference vector goes through a forwarder to a real
// nats-server and reaches a subscriber on <ns>.<VIN>.data (V) or
// <ns>.<VIN>.<type>, as the Encoder's bytes, in order within each record
// type.
func TestCoreSubjectsAndPayloads(t *testing.T) {
	b := brokertest.NATS(t, false)
	ch := subscribeAll(t, b.Addr, 1000)
	s := newSink(t, b.Addr, false)
	recs := sinktest.AckedRecords(t)
	before := counters.Of("V").Published.Get()
	sp := sinktest.OpenSpool(t, "nats", sinktest.Quiet)
	sinktest.Append(t, sp, recs)
	sinktest.Drain(t, sp, s, forwarder.Options{Name: "nats", Logger: sinktest.Quiet}, 30*time.Second)
	enc := forwarder.Encoder{Namespace: sinktest.Namespace}
	var msgs []*natsgo.Msg
	for i := range recs {
		select {
		case m := <-ch:
			msgs = append(msgs, m)
		case <-time.After(5 * time.Second):
			t.Fatalf("record %d never arrived", i)
		}
	}
	// In order within each record type (the forwarder's lanes).
	typeOf := func(m *natsgo.Msg) string {
		parts := strings.Split(m.Subject, ".")
		if last := parts[len(parts)-1]; last != "data" {
			return last
		}
		return "V"
	}
	byType := sinktest.ByType(msgs, typeOf)
	next := map[string]int{}
	nV := 0
	for i := range recs {
		typ := string(recs[i].Topic)
		if next[typ] >= len(byType[typ]) {
			t.Fatalf("record %d: no %s message left", i, typ)
		}
		m := byType[typ][next[typ]]
		next[typ]++
		want := sinktest.Namespace + "." + recs[i].VIN + "." + typ
		if typ == "V" {
			want = sinktest.Namespace + "." + recs[i].VIN + ".data"
			nV++
		}
		if m.Subject != want {
			t.Errorf("record %d: subject %s, want %s", i, m.Subject, want)
		}
		v, _, _ := enc.AppendValue(nil, &recs[i])
		if !equalPayload(t, typ, m.Data, v) {
			t.Errorf("record %d: payload differs from the Encoder's", i)
		}
	}
	if d := counters.Of("V").Published.Get() - before; d != uint64(nV) {
		t.Errorf("nats_produce_total{V} +%d, want +%d", d, nV)
	}
}

// JetStream: Send passes only what a stream stored. Without a stream for
// the subjects the publishes get no PubAck and Send fails; once the stream
// exists, every record is in it.
func TestJetStreamPubAck(t *testing.T) {
	b := brokertest.NATS(t, true)
	s := newSink(t, b.Addr, true)
	recs := sinktest.AckedRecords(t)
	errsBefore := errorsTotal.Get()
	if err := s.Send(context.Background(), recs); err == nil {
		t.Fatal("Send returned nil with no stream to store the records")
	}
	if errorsTotal.Get() == errsBefore {
		t.Error("nats_err did not move")
	}
	js, err := jetstream.New(conn(t, b.Addr))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TELEMETRY", Subjects: []string{sinktest.Namespace + ".>"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(ctx, recs); err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(len(recs)) {
		t.Fatalf("stream holds %d messages, want %d", info.State.Msgs, len(recs))
	}
	for i := range recs {
		m, err := st.GetMsg(ctx, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		if want := Subject(sinktest.Namespace, recs[i].VIN, string(recs[i].Topic)); m.Subject != want {
			t.Errorf("message %d: subject %s, want %s", i+1, m.Subject, want)
		}
	}
}

// While the server is down Send fails (core and JetStream) and nothing is
// counted; once it is back (the client reconnects), Send goes through.
func TestSendFailsWhileServerDown(t *testing.T) {
	for _, js := range []bool{false, true} {
		t.Run("jetstream="+strconv.FormatBool(js), func(t *testing.T) {
			b := brokertest.NATS(t, js)
			s := newSink(t, b.Addr, js)
			if js {
				j, _ := jetstream.New(conn(t, b.Addr))
				if _, err := j.CreateStream(context.Background(), jetstream.StreamConfig{Name: "T", Subjects: []string{sinktest.Namespace + ".>"}}); err != nil {
					t.Fatal(err)
				}
			}
			recs := sinktest.AckedRecords(t)
			b.Stop()
			for deadline := time.Now().Add(5 * time.Second); s.nc.IsConnected() && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			sinktest.SendFailsUncounted(t, s, recs, counters.Of("V").Published)
			b.Start()
			var err error
			for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				if err = s.Send(context.Background(), recs); err == nil {
					break
				}
			}
			if err != nil {
				t.Fatalf("Send after the server returned: %v", err)
			}
		})
	}
}

// A VIN that cannot be a subject token is refused and counted; the rest of
// the batch goes out.
func TestVINTokenRefused(t *testing.T) {
	b := brokertest.NATS(t, false)
	ch := subscribeAll(t, b.Addr, 10)
	s := newSink(t, b.Addr, false)
	recs := sinktest.AckedRecords(t)[:2]
	recs[0].VIN = "BAD.VIN"
	before := errorsTotal.Get()
	if err := s.Send(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	if errorsTotal.Get() != before+1 {
		t.Errorf("nats_err +%d, want +1", errorsTotal.Get()-before)
	}
	select {
	case m := <-ch:
		if strings.Contains(m.Subject, "BAD") {
			t.Errorf("published %s", m.Subject)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the good record never arrived")
	}
}

func TestNewRefuses(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("no url accepted")
	}
	_, err := New(Options{URL: "nats://user:secret@127.0.0.1:" + strconv.Itoa(brokertest.FreePort(t)), Logger: sinktest.Quiet})
	if err == nil || strings.Contains(err.Error(), "secret") || !strings.Contains(err.Error(), "[redacted]@127.0.0.1") {
		t.Errorf("unreachable server: %v", err)
	}
}

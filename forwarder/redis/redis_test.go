package redis

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/internal/sinktest"
	"github.com/fleet-telemetry/fleet-telemetry/internal/brokertest"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// subscriber is a client that subscribes: *goredis.Client, or
// *goredis.ClusterClient (which subscribes on one node; a PUBLISH on any
// node reaches it over the cluster bus).
type subscriber interface {
	Subscribe(ctx context.Context, channels ...string) *goredis.PubSub
}

// subscription subscribes to channels and returns a function collecting
// what arrived: channel → payloads.
func subscription(t *testing.T, c subscriber, channels ...string) func(n int, timeout time.Duration) map[string][]string {
	t.Helper()
	ps := c.Subscribe(context.Background(), channels...)
	if _, err := ps.Receive(context.Background()); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	t.Cleanup(func() { ps.Close() })
	got := map[string][]string{}
	ch := ps.Channel()
	return func(n int, timeout time.Duration) map[string][]string {
		deadline := time.After(timeout)
		count := 0
		for _, v := range got {
			count += len(v)
		}
		for count < n {
			select {
			case m := <-ch:
				got[m.Channel] = append(got[m.Channel], m.Payload)
				count++
			case <-deadline:
				return got
			}
		}
		return got
	}
}

// The reference's channel semantics against a real redis-server: expired
// leases are removed from the subscriber set (score < now), every live
// member gets the record, then the VIN channel; the payload is the
// Encoder's bytes.
func TestSubscriberSetAndVINChannel(t *testing.T) {
	b := brokertest.Redis(t, false)
	c := brokertest.RedisClient(t, b.Addr)
	recs := sinktest.AckedRecords(t)
	r := recs[0]
	vinChan := sinktest.Namespace + "_" + string(r.Topic) + "_{" + r.VIN + "}"
	set := "consumer_" + vinChan
	ctx := context.Background()
	if err := c.ZAdd(ctx, set, goredis.Z{Score: 99, Member: "expired"}, goredis.Z{Score: 100, Member: "at-boundary"},
		goredis.Z{Score: 101, Member: "future"}).Err(); err != nil {
		t.Fatal(err)
	}
	collect := subscription(t, c, "expired", "at-boundary", "future", vinChan)
	enc := forwarder.Encoder{Namespace: sinktest.Namespace}
	s, err := New(Options{Addrs: []string{b.Addr}, PublishVINTopics: true, SubscriberSetPrefix: "consumer",
		Encoder: enc, Logger: sinktest.Quiet, Now: func() time.Time { return time.Unix(100, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Send(ctx, []spool.Record{r}); err != nil {
		t.Fatal(err)
	}
	want, _, err := enc.AppendValue(nil, &r)
	if err != nil {
		t.Fatal(err)
	}
	got := collect(3, 5*time.Second)
	for _, ch := range []string{"at-boundary", "future", vinChan} {
		if len(got[ch]) != 1 || got[ch][0] != string(want) {
			t.Errorf("channel %s got %d messages (want 1, the record's bytes)", ch, len(got[ch]))
		}
	}
	if len(got["expired"]) != 0 {
		t.Errorf("the expired lease's channel got %d messages", len(got["expired"]))
	}
	members, err := c.ZRange(ctx, set, 0, -1).Result()
	if err != nil || strings.Join(members, ",") != "at-boundary,future" {
		t.Fatalf("set after Send: %v %v", members, err)
	}
}

// Every reference vector goes through a forwarder with
// transmit_decoded_records: each VIN channel gets the JSON form the
// Encoder makes (the same bytes as the Kafka sink's), in order, and
// redis_publish_total counts them.
func TestVectorsJSONThroughForwarder(t *testing.T) {
	b := brokertest.Redis(t, false)
	c := brokertest.RedisClient(t, b.Addr)
	recs := sinktest.AckedRecords(t)
	enc := forwarder.Encoder{Namespace: sinktest.Namespace, JSON: true}
	var channels []string
	want := map[string][]string{}
	for i := range recs {
		ch := sinktest.Namespace + "_" + string(recs[i].Topic) + "_{" + recs[i].VIN + "}"
		if _, ok := want[ch]; !ok {
			channels = append(channels, ch)
		}
		v, _, err := enc.AppendValue(nil, &recs[i])
		if err != nil {
			t.Fatal(err)
		}
		want[ch] = append(want[ch], string(v))
	}
	collect := subscription(t, c, channels...)
	s, err := New(Options{Addrs: []string{b.Addr}, PublishVINTopics: true, Encoder: enc, Logger: sinktest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	before := counters.Of("V").Published.Get()
	sp := sinktest.OpenSpool(t, "redis", sinktest.Quiet)
	sinktest.Append(t, sp, recs)
	sinktest.Drain(t, sp, s, forwarder.Options{Name: "redis", Logger: sinktest.Quiet}, 30*time.Second)
	got := collect(len(recs), 10*time.Second)
	for ch, w := range want {
		if strings.Join(got[ch], "\n") != strings.Join(w, "\n") {
			t.Errorf("channel %s: got %d messages, want %d (or different bytes)", ch, len(got[ch]), len(w))
		}
	}
	nV := 0
	for i := range recs {
		if string(recs[i].Topic) == "V" {
			nV++
		}
	}
	if d := counters.Of("V").Published.Get() - before; d != uint64(nV) {
		t.Errorf("redis_publish_total{V} +%d, want +%d", d, nV)
	}
}

// Stream mode appends each record to <namespace>_<type> with its vin,
// txid, receivedat and payload, trimmed about MAXLEN.
func TestStreamMode(t *testing.T) {
	b := brokertest.Redis(t, false)
	c := brokertest.RedisClient(t, b.Addr)
	recs := sinktest.AckedRecords(t)
	enc := forwarder.Encoder{Namespace: sinktest.Namespace}
	s, err := New(Options{Addrs: []string{b.Addr}, Stream: &Stream{MaxLen: 1000}, Encoder: enc, Logger: sinktest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Send(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	checkStreams(t, c, enc, recs)
	// MAXLEN ~ trims whole macro nodes: far past the bound, the stream
	// stays near it.
	many := make([]spool.Record, 0, 3000)
	for range 3000 / len(recs) {
		many = append(many, recs...)
	}
	if err := s.Send(context.Background(), many); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.XLen(context.Background(), sinktest.Namespace+"_V").Result(); n > 1200 {
		t.Errorf("stream holds %d entries with MAXLEN ~ 1000", n)
	}
}

// checkStreams checks that the streams <namespace>_<type> hold recs, each
// type's in their order, each entry with its record's vin, txid,
// receivedat and the Encoder's payload.
func checkStreams(t *testing.T, c goredis.Cmdable, enc forwarder.Encoder, recs []spool.Record) {
	t.Helper()
	byStream := map[string][]goredis.XMessage{}
	for _, typ := range []string{"V", "alerts", "errors", "connectivity"} {
		msgs, err := c.XRange(context.Background(), sinktest.Namespace+"_"+typ, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		byStream[typ] = msgs
	}
	next := map[string]int{}
	for i := range recs {
		typ := string(recs[i].Topic)
		msgs := byStream[typ]
		if next[typ] >= len(msgs) {
			t.Fatalf("stream %s_%s has %d entries; record %d is missing", sinktest.Namespace, typ, len(msgs), i)
		}
		m := msgs[next[typ]]
		next[typ]++
		want, _, _ := enc.AppendValue(nil, &recs[i])
		if m.Values["vin"] != recs[i].VIN || m.Values["txid"] != string(recs[i].TxID) ||
			m.Values["receivedat"] != strconv.FormatInt(recs[i].ReceivedAtMs, 10) {
			t.Errorf("record %d: stream entry %v", i, m.Values)
		}
		// Equal messages (a map field's entries may be marshalled in
		// another order each time).
		gotMsg, wantMsg := sinktest.NewMessage(t, typ), sinktest.NewMessage(t, typ)
		payload, _ := m.Values["payload"].(string)
		if proto.Unmarshal([]byte(payload), gotMsg) != nil || proto.Unmarshal(want, wantMsg) != nil || !proto.Equal(gotMsg, wantMsg) {
			t.Errorf("record %d: stream payload differs from the Encoder's", i)
		}
	}
	for typ, msgs := range byStream {
		if len(msgs) != next[typ] {
			t.Errorf("stream %s_%s has %d entries, want %d", sinktest.Namespace, typ, len(msgs), next[typ])
		}
	}
}

func TestNewRefuses(t *testing.T) {
	if _, err := New(Options{PublishVINTopics: true}); err == nil || !strings.Contains(err.Error(), "addrs") {
		t.Errorf("no addrs: %v", err)
	}
	if _, err := New(Options{Addrs: []string{"127.0.0.1:1"}}); err == nil || !strings.Contains(err.Error(), "no record would be published") {
		t.Errorf("nothing to publish: %v", err)
	}
	port := brokertest.FreePort(t)
	start := time.Now()
	_, err := New(Options{Addrs: []string{"127.0.0.1:" + strconv.Itoa(port)}, PublishVINTopics: true, Logger: sinktest.Quiet})
	if err == nil || !strings.Contains(err.Error(), "PING") {
		t.Errorf("nothing listening: %v", err)
	}
	if time.Since(start) > 12*time.Second {
		t.Errorf("New took %s to give up", time.Since(start))
	}
}

// While Redis is down Send fails and nothing is counted as published; once
// it is back the same batch goes through.
func TestSendFailsWhileRedisDown(t *testing.T) {
	b := brokertest.Redis(t, false)
	s, err := New(Options{Addrs: []string{b.Addr}, PublishVINTopics: true, Encoder: forwarder.Encoder{Namespace: sinktest.Namespace},
		PublishTimeout: time.Second, Logger: sinktest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	recs := sinktest.AckedRecords(t)
	b.Stop()
	sinktest.SendFailsUncounted(t, s, recs, counters.Of("V").Published)
	b.Start()
	if err := s.Send(context.Background(), recs); err != nil {
		t.Fatalf("Send after Redis returned: %v", err)
	}
}

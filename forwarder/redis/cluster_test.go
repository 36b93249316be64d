package redis

import (
	"context"
	"fmt"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/internal/sinktest"
	"github.com/fleet-telemetry/fleet-telemetry/internal/brokertest"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// clusterVINs is how many vehicles the cluster tests send for: their
// per-VIN keys ({VIN} is the hash tag) land on every master.
const clusterVINs = 24

// clusterRecords is every acked reference record once per VIN of
// clusterVINs vehicles, VIN after VIN.
func clusterRecords(t *testing.T) []spool.Record {
	t.Helper()
	base := sinktest.AckedRecords(t)
	recs := make([]spool.Record, 0, clusterVINs*len(base))
	for v := range clusterVINs {
		vin := fmt.Sprintf("5YJ3E1EA1KF1%05d", v)
		for _, r := range base {
			r.VIN = vin
			recs = append(recs, r)
		}
	}
	return recs
}

// clusterSink is a sink of the cluster c in cluster mode.
func clusterSink(t *testing.T, c *brokertest.RedisClusterNodes, o Options) *Sink {
	t.Helper()
	o.Addrs, o.ClusterMode, o.Logger = c.Addrs(), true, sinktest.Quiet
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Against a real three-master Redis Cluster, through a forwarder: the
// subscriber sets of 24 vehicles (on every master) lose their expired
// leases on the node holding them, every live lease's channel and every
// VIN channel gets each of its records once, in the VIN's order, as a
// client subscribed on one node sees them.
func TestClusterPubSub(t *testing.T) {
	c := brokertest.RedisCluster(t, false)
	cc := c.Client()
	ctx := context.Background()
	recs := clusterRecords(t)
	enc := forwarder.Encoder{Namespace: sinktest.Namespace}
	var channels []string
	want := map[string][]string{} // channel → payloads, in order
	typeOf := map[string]string{} // channel → record type
	sets := map[string]string{}   // set key → its live lease's channel
	byNode := map[*brokertest.Broker]int{}
	for i := range recs {
		r := &recs[i]
		vinChan := sinktest.Namespace + "_" + string(r.Topic) + "_{" + r.VIN + "}"
		set := "consumer_" + vinChan
		if _, ok := sets[set]; !ok {
			live := "live-" + string(r.Topic) + "-" + r.VIN
			sets[set] = live
			channels = append(channels, vinChan, live, "expired-"+string(r.Topic)+"-"+r.VIN)
			if err := cc.ZAdd(ctx, set, goredis.Z{Score: 99, Member: "expired-" + string(r.Topic) + "-" + r.VIN},
				goredis.Z{Score: 101, Member: live}).Err(); err != nil {
				t.Fatalf("ZADD %s: %v", set, err)
			}
			byNode[c.NodeOf(set)]++
		}
		v, _, err := enc.AppendValue(nil, r)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range []string{vinChan, sets[set]} {
			want[ch] = append(want[ch], string(v))
			typeOf[ch] = string(r.Topic)
		}
	}
	if len(byNode) != len(c.Nodes) {
		t.Fatalf("the %d subscriber sets are on %d of the %d masters", len(sets), len(byNode), len(c.Nodes))
	}
	t.Logf("subscriber sets per master: %v", byNode)
	collect := subscription(t, cc, channels...)
	s := clusterSink(t, c, Options{PublishVINTopics: true, SubscriberSetPrefix: "consumer", Encoder: enc,
		Now: func() time.Time { return time.Unix(100, 0) }})
	sp := sinktest.OpenSpool(t, "redis", sinktest.Quiet)
	sinktest.Append(t, sp, recs)
	sinktest.Drain(t, sp, s, forwarder.Options{Name: "redis", Logger: sinktest.Quiet}, 20*time.Second)
	got := collect(2*len(recs), 10*time.Second)
	for _, ch := range channels {
		w, g := want[ch], got[ch]
		switch {
		case len(g) != len(w):
			t.Errorf("channel %s: %d messages, want %d", ch, len(g), len(w))
		default:
			for i := range w {
				if !samePayload(t, typeOf[ch], g[i], w[i]) {
					t.Errorf("channel %s: message %d of %d is not the record's (or out of order)", ch, i, len(w))
					break
				}
			}
		}
	}
	for set, live := range sets {
		own := brokertest.RedisClient(t, c.NodeOf(set).Addr) // a plain client: another node would answer MOVED
		if members, err := own.ZRange(ctx, set, 0, -1).Result(); err != nil || len(members) != 1 || members[0] != live {
			t.Errorf("%s on its master after Send: %v %v, want [%s]", set, members, err, live)
		}
	}
}

// samePayload reports whether two payloads of a record type are equal
// messages (a map field's entries may be marshalled in another order each
// time).
func samePayload(t *testing.T, typ, got, want string) bool {
	t.Helper()
	g, w := sinktest.NewMessage(t, typ), sinktest.NewMessage(t, typ)
	return proto.Unmarshal([]byte(got), g) == nil && proto.Unmarshal([]byte(want), w) == nil && proto.Equal(g, w)
}

// Stream mode against a real three-master Redis Cluster: the records of
// 24 vehicles, sent in one batch (one pipeline spanning the masters),
// land in the streams <namespace>_<type>, which live on more than one
// master, each entry where TestStreamMode expects it.
func TestClusterStreamMode(t *testing.T) {
	c := brokertest.RedisCluster(t, false)
	recs := clusterRecords(t)
	enc := forwarder.Encoder{Namespace: sinktest.Namespace}
	s := clusterSink(t, c, Options{Stream: &Stream{MaxLen: 100_000}, Encoder: enc})
	nodes := map[*brokertest.Broker][]string{}
	for _, typ := range []string{"V", "alerts", "errors", "connectivity"} {
		key := sinktest.Namespace + "_" + typ
		nodes[c.NodeOf(key)] = append(nodes[c.NodeOf(key)], key)
	}
	if len(nodes) < 2 {
		t.Fatalf("the four streams are on %d master(s): the test would not span the cluster", len(nodes))
	}
	if err := s.Send(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	checkStreams(t, c.Client(), enc, recs)
	ctx := context.Background()
	for n, keys := range nodes {
		own := brokertest.RedisClient(t, n.Addr)
		for _, key := range keys {
			if l, err := own.XLen(ctx, key).Result(); err != nil || l == 0 {
				t.Errorf("%s holds %d entries of %s (%v)", n, l, key, err)
			}
		}
	}
}

package test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/fleet-telemetry/fleet-telemetry/internal/brokertest"
	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
)

// clusterFeed is what a subscriber to tesla_telemetry_V_* received: the
// txids by VIN channel, in arrival order, and every copy of each.
type clusterFeed struct {
	mu    sync.Mutex
	order map[string][]string // VIN → txids in arrival order
	all   *txSet
	stray []string
}

// subscribeV feeds what ps receives to vinFeed (tesla_telemetry_V_*) and
// leaseFeed (dashboard-<VIN>) until the test ends.
func subscribeV(t *testing.T, ps *goredis.PubSub, vinFeed, leaseFeed *clusterFeed) {
	t.Helper()
	t.Cleanup(func() { ps.Close() })
	go func() {
		for m := range ps.Channel() {
			tx, vin, err := taggedTx([]byte(m.Payload))
			f := vinFeed
			if strings.HasPrefix(m.Channel, "dashboard-") {
				f = leaseFeed
			}
			f.mu.Lock()
			switch {
			case err != nil, f == vinFeed && m.Channel != "tesla_telemetry_V_{"+vin+"}",
				f == leaseFeed && m.Channel != "dashboard-"+vin:
				f.stray = append(f.stray, m.Channel)
			default:
				f.order[vin] = append(f.order[vin], tx)
				f.all.add(tx)
			}
			f.mu.Unlock()
		}
	}()
}

func newClusterFeed() *clusterFeed {
	return &clusterFeed{order: map[string][]string{}, all: newTxSet()}
}

// outOfOrder returns the VINs whose txids (<VIN>-V-<i>) did not arrive in
// increasing i, and the channels of messages that were not where they
// belong.
func (f *clusterFeed) outOfOrder() (vins, stray []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for vin, txs := range f.order {
		last := -1
		for _, tx := range txs {
			i, _ := strconv.Atoi(tx[strings.LastIndexByte(tx, '-')+1:])
			if i < last {
				vins = append(vins, vin)
				break
			}
			last = i
		}
	}
	return vins, f.stray
}

// streamTxids reads the stream tesla_telemetry_V through c: each entry
// whose txid field matches its payload's tag, counted.
func streamTxids(c goredis.Cmdable) (*txSet, error) {
	in := newTxSet()
	msgs, err := c.XRange(context.Background(), "tesla_telemetry_V", "-", "+").Result()
	if err != nil {
		return in, err
	}
	for _, m := range msgs {
		p, _ := m.Values["payload"].(string)
		if tx, _, err := taggedTx([]byte(p)); err == nil && m.Values["txid"] == tx {
			in.add(tx)
		}
	}
	return in, nil
}

// The real daemon with a "redis" section naming the three masters of a
// real Redis Cluster, cluster_mode true, publish_vin_topics, a subscriber
// set prefix and the stream: six vehicles' subscriber sets are spread over
// the masters; every acked V record reaches its VIN channel and the lease
// leased in its VIN's set once and in the VIN's order (for a client
// subscribed on one node), and the stream tesla_telemetry_V once.
func TestRedisClusterEndToEnd(t *testing.T) {
	c := brokertest.RedisCluster(t, false)
	cc := c.Client()
	ctx := context.Background()
	now := time.Now().Unix()
	masters := map[*brokertest.Broker]bool{}
	for _, vin := range relVINs {
		set := "consumer_tesla_telemetry_V_{" + vin + "}"
		if err := cc.ZAdd(ctx, set, goredis.Z{Score: float64(now + 3600), Member: "dashboard-" + vin},
			goredis.Z{Score: float64(now - 10), Member: "gone-" + vin}).Err(); err != nil {
			t.Fatalf("ZADD %s: %v", set, err)
		}
		masters[c.NodeOf(set)] = true
	}
	if len(masters) < 2 {
		t.Fatalf("the %d subscriber sets are on %d master(s): the test would not span the cluster", len(relVINs), len(masters))
	}
	ps := cc.PSubscribe(ctx, "tesla_telemetry_V_*")
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	var leases []string
	for _, vin := range relVINs {
		leases = append(leases, "dashboard-"+vin, "gone-"+vin)
	}
	if err := ps.Subscribe(ctx, leases...); err != nil {
		t.Fatal(err)
	}
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	onVIN, onLease := newClusterFeed(), newClusterFeed()
	subscribeV(t, ps, onVIN, onLease)
	setup := sinkConfig(t, map[string][]string{"V": {"redis"}}, func(cfg *config.Config) {
		cfg.Redis = &config.Redis{Addrs: c.Addrs(), ClusterMode: true, PublishVINTopics: true,
			SubscriberSetPrefix: "consumer", Stream: &config.RedisStream{}}
	})
	d := startDaemon(t, setup.ConfigPath)
	want := e2e.SendAcked(t, d.addr, setup.Certs, relVINs, 20, func(vin string, i int) *envelope.StreamMessage {
		return taggedRecord(vin, fmt.Sprintf("%s-V-%d", vin, i))
	})
	if missing, dup := onVIN.all.wait(want, 20*time.Second); missing > 0 || dup > 0 {
		t.Fatalf("VIN channels: %d of %d acked records missing, %d duplicates\n%s", missing, len(want), dup, d.logText())
	}
	if missing, dup := onLease.all.wait(want, 10*time.Second); missing > 0 || dup > 0 {
		t.Fatalf("leased channels: %d of %d acked records missing, %d duplicates", missing, len(want), dup)
	}
	for name, f := range map[string]*clusterFeed{"VIN channels": onVIN, "leased channels": onLease} {
		if vins, stray := f.outOfOrder(); len(vins) > 0 || len(stray) > 0 {
			t.Errorf("%s: out of order for %v; on the wrong channel: %v", name, vins, stray)
		}
	}
	var inStream *txSet
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		inStream, err = streamTxids(cc)
		if missing, _ := inStream.wait(want, 0); missing == 0 || time.Now().After(deadline) {
			break
		}
	}
	if missing, dup := inStream.wait(want, 0); missing > 0 || dup > 0 {
		t.Fatalf("stream tesla_telemetry_V: %d of %d acked records missing, %d duplicates (%v)", missing, len(want), dup, err)
	}
	for _, vin := range relVINs {
		set := "consumer_tesla_telemetry_V_{" + vin + "}"
		if members, err := cc.ZRange(ctx, set, 0, -1).Result(); err != nil || len(members) != 1 || members[0] != "dashboard-"+vin {
			t.Errorf("%s: %v (%v), want the live lease only", set, members, err)
		}
	}
	d.stop(t)
}

// TestRedisClusterOutage keeps three vehicles sending while the master
// holding the stream tesla_telemetry_V (durable: appendfsync always) is
// stopped for 4 s and started again, the other two serving their slots
// meanwhile. The sink passes a record only once its XADD was answered, so
// every record acked to a vehicle is in the stream afterwards. A client
// subscribed on a master that stayed up is shown what reached the VIN
// channels (pub/sub keeps nothing: its count is logged, not checked).
func TestRedisClusterOutage(t *testing.T) {
	c := brokertest.RedisCluster(t, true)
	down := c.NodeOf("tesla_telemetry_V")
	up := c.Nodes[0]
	if up == down {
		up = c.Nodes[1]
	}
	ps := brokertest.RedisClient(t, up.Addr).PSubscribe(context.Background(), "tesla_telemetry_V_*")
	if _, err := ps.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	onVIN := newClusterFeed()
	subscribeV(t, ps, onVIN, newClusterFeed())
	setup := sinkConfig(t, map[string][]string{"V": {"redis"}}, func(cfg *config.Config) {
		cfg.Redis = &config.Redis{Addrs: c.Addrs(), ClusterMode: true, PublishVINTopics: true, PublishTimeout: 1_000_000_000,
			Stream: &config.RedisStream{MaxLen: 1_000_000}}
	})
	d, out := outageUnderLoad(t, setup, down, "redis")
	c.WaitOK()
	acked := out.acked
	cc := c.Client()
	var missing, dup int
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		inStream, _ := streamTxids(cc)
		if missing, dup = inStream.wait(acked, 0); missing == 0 || time.Now().After(deadline) {
			break
		}
	}
	pubMissing, pubDup := onVIN.all.wait(acked, 2*time.Second)
	m := setup.metrics(t)
	t.Logf("master %s (stream tesla_telemetry_V) stopped for %s: %d records acked meanwhile, %d in all; max lag %.0f; "+
		"stream: %d missing, %d duplicates; VIN channels seen on %s: %d missing, %d duplicates; redis_err{V}=%.0f fleet_forwarder_retries_total{redis}=%.0f",
		down.Addr, out.took, out.during, len(acked), out.lagMax, missing, dup, up.Addr, pubMissing, pubDup,
		m[`redis_err{record_type="V"}`], m[`fleet_forwarder_retries_total{forwarder="redis"}`])
	if missing > 0 {
		t.Fatalf("%d of %d acked records are not in the stream\n%s", missing, len(acked), d.logText())
	}
	if m[`redis_err{record_type="V"}`] == 0 {
		t.Errorf("redis_err{V} = 0: the outage of the stream's master never failed a command")
	}
	d.stop(t)
}

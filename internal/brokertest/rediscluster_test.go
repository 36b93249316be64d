package brokertest

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// The cluster serves all 16384 slots from three masters: a cluster client
// writes keys that land on every node, each node holds its own keys (read
// back over a plain connection to it: another node would answer MOVED),
// and a durable master stopped and started again rejoins with its data.
func TestRedisCluster(t *testing.T) {
	c := RedisCluster(t, true)
	cl := c.Client()
	ctx := context.Background()
	byNode := map[*Broker][]string{}
	for i := range 30 {
		key := fmt.Sprintf("key-%d", i)
		if err := cl.Set(ctx, key, i, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		n := c.NodeOf(key)
		byNode[n] = append(byNode[n], key)
	}
	if len(byNode) != 3 {
		t.Fatalf("30 keys landed on %d nodes, want 3", len(byNode))
	}
	for n, keys := range byNode {
		own := RedisClient(t, n.Addr)
		for _, key := range keys {
			if got, err := own.Exists(ctx, key).Result(); err != nil || got != 1 {
				t.Errorf("%s: EXISTS %s = %d (%v)", n, key, got, err)
			}
		}
	}
	other := c.Nodes[0]
	if other == c.NodeOf("key-0") {
		other = c.Nodes[1]
	}
	if err := RedisClient(t, other.Addr).Exists(ctx, "key-0").Err(); err == nil || !strings.HasPrefix(err.Error(), "MOVED ") {
		t.Errorf("%s, not key-0's master, answered EXISTS key-0 with %v, want MOVED", other, err)
	}
	down := c.NodeOf("key-0")
	down.Stop()
	down.Start()
	c.WaitOK()
	if got, err := cl.Get(ctx, "key-0").Int(); err != nil || got != 0 {
		t.Fatalf("key-0 after its master restarted: %v %v", got, err)
	}
}

package brokertest

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
)

// clusterNodeTimeout is each node's cluster-node-timeout: longer than the
// outages the tests make, so a stopped master is never declared failed and
// the others keep serving their slots (cluster-require-full-coverage
// would otherwise turn the whole cluster down).
const clusterNodeTimeout = 15 * time.Second

// clusterOKTimeout bounds the wait for cluster_state:ok on every node.
const clusterOKTimeout = 20 * time.Second

// RedisClusterNodes is a Redis Cluster of three masters and no replicas,
// each a Broker of its own (Stop and Start one for an outage of the slots
// it serves).
type RedisClusterNodes struct {
	// Nodes are the masters, in the order their slot ranges were given
	// (redis-cli --cluster create splits the 16384 slots in three).
	Nodes []*Broker

	t testing.TB
}

// RedisCluster starts three of Debian's redis-server with cluster mode on,
// each on free ports of 127.0.0.1 (the client port and the cluster bus
// port) in its own directory, joins them with `redis-cli --cluster create`
// (no replicas) and waits until every node says cluster_state:ok. With
// durable, every write goes to an append-only file fsync'd before Redis
// answers, so a master's data survives Stop/Start; its cluster
// configuration (nodes.conf) always does. A missing redis-server or
// redis-cli skips the test (fails it under CI).
func RedisCluster(t testing.TB, durable bool) *RedisClusterNodes {
	t.Helper()
	bin := Require(t, "redis-server", "redis-server")
	cli := Require(t, "redis-cli", "redis-tools")
	var used []int
	pick := func() int {
		p, err := e2e.PickPort(used...)
		if err != nil {
			t.Fatalf("brokertest: free port: %v", err)
		}
		used = append(used, p)
		return p
	}
	c := &RedisClusterNodes{t: t}
	for range 3 {
		dir := t.TempDir()
		port, bus := pick(), pick()
		args := []string{bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--protected-mode", "no",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", strconv.Itoa(bus),
			"--cluster-node-timeout", strconv.FormatInt(clusterNodeTimeout.Milliseconds(), 10),
			"--save", "", "--dir", dir}
		if durable {
			args = append(args, "--appendonly", "yes", "--appendfsync", "always")
		} else {
			args = append(args, "--appendonly", "no")
		}
		c.Nodes = append(c.Nodes, start(t, dir, port, args...))
	}
	create := append([]string{"--cluster", "create"}, c.Addrs()...)
	create = append(create, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, cli, create...).CombinedOutput(); err != nil {
		t.Fatalf("brokertest: redis-cli --cluster create %v: %v\n%s", c.Addrs(), err, out)
	}
	c.WaitOK()
	return c
}

// Addrs are the nodes' addresses (127.0.0.1:<port>).
func (c *RedisClusterNodes) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// WaitOK waits until every node answers CLUSTER INFO with
// cluster_state:ok and sees all three masters, failing the test after
// 20 s. Call it after Start: a restarted master refuses commands
// (CLUSTERDOWN) until it rejoined.
func (c *RedisClusterNodes) WaitOK() {
	c.t.Helper()
	deadline := time.Now().Add(clusterOKTimeout)
	for _, n := range c.Nodes {
		for {
			info, err := c.info(n)
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_known_nodes:3") &&
				strings.Contains(info, "cluster_size:3") {
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("brokertest: %s not in cluster_state:ok after %s (%v):\n%s\n%s", n, clusterOKTimeout, err, info, n.Log())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// info is the node's CLUSTER INFO, over a connection of its own.
func (c *RedisClusterNodes) info(n *Broker) (string, error) {
	cl := goredis.NewClient(&goredis.Options{Addr: n.Addr, MaxRetries: -1, DialTimeout: time.Second})
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return cl.ClusterInfo(ctx).Result()
}

// NodeOf returns the master serving key's slot, as the first node's
// CLUSTER KEYSLOT and CLUSTER SHARDS answer.
func (c *RedisClusterNodes) NodeOf(key string) *Broker {
	c.t.Helper()
	cl := goredis.NewClient(&goredis.Options{Addr: c.Nodes[0].Addr})
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	slot, err := cl.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		c.t.Fatalf("brokertest: CLUSTER KEYSLOT %s: %v", key, err)
	}
	shards, err := cl.ClusterShards(ctx).Result()
	if err != nil {
		c.t.Fatalf("brokertest: CLUSTER SHARDS: %v", err)
	}
	for _, sh := range shards {
		for _, r := range sh.Slots {
			if slot < r.Start || slot > r.End {
				continue
			}
			for _, node := range sh.Nodes {
				if node.Role != "master" {
					continue
				}
				for _, b := range c.Nodes {
					if b.Port == int(node.Port) {
						return b
					}
				}
			}
		}
	}
	c.t.Fatalf("brokertest: no master of ours serves slot %d (key %s): %+v", slot, key, shards)
	return nil
}

// Client is a test's own cluster client of the nodes, closed when the test
// ends.
func (c *RedisClusterNodes) Client() *goredis.ClusterClient {
	cl := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: c.Addrs()})
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// String names the cluster in test logs.
func (c *RedisClusterNodes) String() string {
	return fmt.Sprintf("redis cluster on %s", strings.Join(c.Addrs(), ","))
}

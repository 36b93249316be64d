package test

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/fleet-telemetry/fleet-telemetry/internal/brokertest"
	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

// The real daemon with the reference integration config's "redis" section
// (publish_vin_topics, subscriber_set_prefix "consumer"): every acked V
// record reaches tesla_telemetry_V_{<VIN>} and the channels leased in
// consumer_tesla_telemetry_V_{<VIN>}; an expired lease is removed (read
// back with redis-cli) and gets nothing; connectivity records reach
// tesla_telemetry_connectivity_{<VIN>}. Payloads are the dispatched
// protobuf with the certificate's VIN.
func TestRedisEndToEnd(t *testing.T) {
	b := brokertest.Redis(t, false)
	cli := brokertest.Require(t, "redis-cli", "redis-tools")
	c := brokertest.RedisClient(t, b.Addr)
	ctx := context.Background()
	leased := "consumer_tesla_telemetry_V_{" + vins[0] + "}"
	now := time.Now().Unix()
	if err := c.ZAdd(ctx, leased, goredis.Z{Score: float64(now + 3600), Member: "dashboard-1"},
		goredis.Z{Score: float64(now - 10), Member: "gone-1"}).Err(); err != nil {
		t.Fatal(err)
	}
	ps := c.PSubscribe(ctx, "tesla_telemetry_*")
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	if err := ps.Subscribe(ctx, "dashboard-1", "gone-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	onVIN, onDashboard, onGone := newTxSet(), newTxSet(), newTxSet()
	rec := brokertest.NewReceived()
	go func() {
		for m := range ps.Channel() {
			switch {
			case strings.HasPrefix(m.Channel, "tesla_telemetry_connectivity_{"):
				var p pb.VehicleConnectivity
				if protoUnmarshal([]byte(m.Payload), &p) != nil || "tesla_telemetry_connectivity_{"+p.GetVin()+"}" != m.Channel {
					rec.Stray(m.Channel)
				}
				rec.Connectivity(p.GetVin())
			default:
				tx, vin, err := taggedTx([]byte(m.Payload))
				switch {
				case err != nil:
					rec.Stray(m.Channel)
				case m.Channel == "dashboard-1":
					onDashboard.add(tx)
				case m.Channel == "gone-1":
					onGone.add(tx)
				case m.Channel == "tesla_telemetry_V_{"+vin+"}":
					onVIN.add(tx)
				default:
					rec.Stray(m.Channel + " for " + vin)
				}
			}
		}
	}()
	setup := sinkConfig(t, map[string][]string{"V": {"redis", "logger"}, "connectivity": {"redis"}}, func(c *config.Config) {
		c.Redis = &config.Redis{Addrs: []string{b.Addr}, PublishVINTopics: true, SubscriberSetPrefix: "consumer"}
		c.ReliableAckSources = map[string]string{"V": "redis"}
	})
	d := startDaemon(t, setup.ConfigPath)
	want := e2e.SendAcked(t, d.addr, setup.Certs, vins, 10, func(vin string, i int) *envelope.StreamMessage {
		return taggedRecord(vin, fmt.Sprintf("%s-V-%d", vin, i))
	})
	wantLeased := map[string]bool{}
	for tx := range want {
		if strings.HasPrefix(tx, vins[0]+"-") {
			wantLeased[tx] = true
		}
	}
	if missing, dup := onVIN.wait(want, 30*time.Second); missing > 0 || dup > 0 {
		t.Fatalf("VIN channels: %d of %d acked records missing, %d duplicates\n%s", missing, len(want), dup, d.logText())
	}
	if missing, _ := onDashboard.wait(wantLeased, 10*time.Second); missing > 0 {
		t.Fatalf("leased channel: %d of %d records missing", missing, len(wantLeased))
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(onGone.snapshot()); n > 0 {
		t.Errorf("the expired lease's channel got %d records", n)
	}
	out, err := exec.Command(cli, "-h", "127.0.0.1", "-p", strconv.Itoa(b.Port), "ZRANGE", leased, "0", "-1").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "dashboard-1" {
		t.Errorf("redis-cli ZRANGE %s: %q (%v), want the live lease only", leased, out, err)
	}
	rec.Check(t, vins, 5*time.Second)
	m := setup.metrics(t)
	if got := m[`redis_publish_total{record_type="V"}`]; got != float64(len(want)+len(wantLeased)) {
		t.Errorf("redis_publish_total{V} = %v, want %d (VIN channels + the leased one)", got, len(want)+len(wantLeased))
	}
	d.stop(t)
}

// TestRedisOutageStreamMode keeps three vehicles sending while a durable
// redis-server (appendfsync always) is stopped for 4 s and started again.
// In stream mode the sink passes a record only once Redis answered its
// XADD, so every record acked to a vehicle is in the stream
// tesla_telemetry_V afterwards.
func TestRedisOutageStreamMode(t *testing.T) {
	b := brokertest.Redis(t, true)
	setup := sinkConfig(t, map[string][]string{"V": {"redis"}}, func(c *config.Config) {
		c.Redis = &config.Redis{Addrs: []string{b.Addr}, PublishVINTopics: true, PublishTimeout: 1_000_000_000,
			Stream: &config.RedisStream{MaxLen: 1_000_000}}
	})
	d, out := outageUnderLoad(t, setup, b, "redis")
	acked := out.acked
	c := brokertest.RedisClient(t, b.Addr)
	inStream := newTxSet()
	read := func() {
		inStream = newTxSet()
		msgs, err := c.XRange(context.Background(), "tesla_telemetry_V", "-", "+").Result()
		if err != nil {
			return
		}
		for _, m := range msgs {
			p, _ := m.Values["payload"].(string)
			if tx, _, err := taggedTx([]byte(p)); err == nil && m.Values["txid"] == tx {
				inStream.add(tx)
			}
		}
	}
	var missing, dup int
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		read()
		if missing, dup = inStream.wait(acked, 0); missing == 0 || time.Now().After(deadline) {
			break
		}
	}
	m := setup.metrics(t)
	t.Logf("redis-server stopped for %s: %d records acked meanwhile, %d in all; max lag %.0f; %d missing from the stream, %d duplicates; redis_err{V}=%.0f fleet_forwarder_retries_total{redis}=%.0f",
		out.took, out.during, len(acked), out.lagMax, missing, dup,
		m[`redis_err{record_type="V"}`], m[`fleet_forwarder_retries_total{forwarder="redis"}`])
	if missing > 0 {
		t.Fatalf("%d of %d acked records are not in the stream\n%s", missing, len(acked), d.logText())
	}
	d.stop(t)
}

// The "redis.tls" keys: Redis speaking only TLS and requiring client
// certificates. With ca_file and a client certificate the daemon starts
// (its PING went over TLS) and publishes; without the client certificate
// Redis refuses the handshake and the start stops, saying why.
func TestRedisTLS(t *testing.T) {
	dir := t.TempDir()
	if _, err := devca.WriteDir(dir, []string{vins[0]}); err != nil {
		t.Fatal(err)
	}
	ca := devca.Dir{Path: dir}
	b := brokertest.RedisTLS(t, ca.File(devca.ServerCertFile), ca.File(devca.ServerKeyFile), ca.File(devca.CACertFile))
	tlsSection := &config.RedisTLS{CAFile: ca.File(devca.CACertFile),
		ServerCert: ca.VehicleCertFile(vins[0]), ServerKey: ca.VehicleKeyFile(vins[0])}
	setup := sinkConfig(t, map[string][]string{"V": {"redis"}}, func(c *config.Config) {
		c.Redis = &config.Redis{Addrs: []string{b.Addr}, PublishVINTopics: true, TLS: tlsSection,
			OverrideTLSServerName: "localhost", Stream: &config.RedisStream{}}
	})
	d := startDaemon(t, setup.ConfigPath)
	c := e2e.Dial(t, d.addr, setup.Certs, vins[0])
	e2e.SendAndAck(t, c, []*envelope.StreamMessage{taggedRecord(vins[0], "tls-1")})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if setup.metrics(t)["fleet_redis_stream_added_total"] >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the record never reached Redis over TLS\n%s", d.logText())
		}
	}
	d.stop(t)

	bad := sinkConfig(t, map[string][]string{"V": {"redis"}}, func(c *config.Config) {
		c.Redis = &config.Redis{Addrs: []string{b.Addr}, PublishVINTopics: true, TLS: &config.RedisTLS{CAFile: tlsSection.CAFile}}
	})
	out, err := exec.Command(binary, "-config", bad.ConfigPath).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "PING") {
		t.Fatalf("without a client certificate: err %v\n%s", err, out)
	}
}

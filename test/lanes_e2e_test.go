package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/test/kfakebroker/kfaketest"
)

// kafkaAdmin sends one admin request to the broker at addr.
func kafkaAdmin(t *testing.T, addr string, req kmsg.Request) kmsg.Response {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cl.Request(ctx, req)
	if err != nil {
		t.Fatalf("kafka admin request: %v", err)
	}
	return resp
}

func createTopic(t *testing.T, addr, topic string) {
	t.Helper()
	req := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, 3, 1
	req.Topics = append(req.Topics, rt)
	resp := kafkaAdmin(t, addr, req).(*kmsg.CreateTopicsResponse)
	if len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 {
		t.Fatalf("create topic %s: %+v", topic, resp.Topics)
	}
}

func setTopicConfig(t *testing.T, addr, topic, name, value string) {
	t.Helper()
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	res := kmsg.NewIncrementalAlterConfigsRequestResource()
	res.ResourceType, res.ResourceName = kmsg.ConfigResourceTypeTopic, topic
	c := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
	c.Name, c.Op, c.Value = name, kmsg.IncrementalAlterConfigOpSet, &value
	res.Configs = append(res.Configs, c)
	req.Resources = append(req.Resources, res)
	resp := kafkaAdmin(t, addr, req).(*kmsg.IncrementalAlterConfigsResponse)
	if len(resp.Resources) != 1 || resp.Resources[0].ErrorCode != 0 {
		t.Fatalf("set %s=%s on %s: %+v", name, value, topic, resp.Resources)
	}
}

type cliLane struct {
	Name                 string  `json:"name"`
	Cursor               uint64  `json:"cursor"`
	Lag                  int64   `json:"lag"`
	OldestWaitingSeconds float64 `json:"oldest_waiting_seconds"`
	LastError            string  `json:"last_error"`
}

type cliQuarantined struct {
	Lane   string `json:"lane"`
	Seq    uint64 `json:"seq"`
	TxID   string `json:"txid"`
	Reason string `json:"reason"`
	Error  string `json:"error"`
}

// TestLanesKafkaMissingTopicAndRefusedRecord runs the daemon against a
// Kafka-protocol broker (kfake, its own process) with topic auto-creation
// off, no connectivity topic, and message.max.bytes 200,000, sending JSON
// (transmit_decoded_records):
//
//   - while the connectivity topic is missing, every V and alerts record
//     still reaches Kafka; the connectivity lane waits, its lag and last
//     error show in `spool stats`, and once the topic is created its
//     records arrive, each once;
//   - a V record whose JSON is over the broker's limit is quarantined, the
//     records around it are delivered (none twice), and after the limit
//     is raised `spool quarantine replay` delivers it.
func TestLanesKafkaMissingTopicAndRefusedRecord(t *testing.T) {
	kfaketest.RequireKcat(t)
	broker := kfaketest.Start(t, buildBroker(t), kfaketest.Options{Partitions: 3, NoAutoCreate: true,
		Topics:        []string{"tesla_telemetry_V", "tesla_telemetry_alerts"},
		BrokerConfigs: map[string]string{"message.max.bytes": "200000"}})
	dir := t.TempDir()
	setup := relWriteConfig(t, dir, relConfig{
		Records: map[string][]string{"V": {"kafka"}, "alerts": {"kafka"}, "connectivity": {"kafka"}},
		Kafka:   broker.Addr,
		Edit:    func(c *config.Config) { c.TransmitDecodedRecords = true },
	})
	d := startDaemon(t, setup.ConfigPath)
	cli := func(args ...string) cliResult {
		return mustCLI(t, append([]string{"-config", setup.ConfigPath}, args...)...)
	}

	// Three short connections: 6 connectivity records, and V and alerts.
	acked := map[string]bool{}
	for i := range 3 {
		c := e2e.Dial(t, d.addr, setup.Certs, relVINs[i])
		var ms []*envelope.StreamMessage
		for j := range 5 {
			ms = append(ms, newRecord(relVINs[i], "V", fmt.Sprintf("v-%d-%d", i, j)))
		}
		ms = append(ms, newRecord(relVINs[i], "alerts", fmt.Sprintf("alerts-%d", i)))
		e2e.SendAndAck(t, c, ms)
		for _, m := range ms {
			acked[string(m.TxID)] = true
		}
		c.Close()
	}
	got, missing, err := waitKafka(broker.Addr, acked, 30*time.Second, "V", "alerts")
	if err != nil || missing > 0 {
		t.Fatalf("%d of %d V and alerts records not in Kafka while the connectivity topic is missing (%v)", missing, len(acked), err)
	}
	if _, dup := lostAndDup(acked, got); dup != 0 {
		t.Fatalf("%d V and alerts records in Kafka more than once", dup)
	}
	var st struct {
		Lanes []cliLane `json:"lanes"`
	}
	deadline := time.Now().Add(10 * time.Second)
	var conn cliLane
	for {
		st = cliDecodeJSON[struct {
			Lanes []cliLane `json:"lanes"`
		}](t, cli("stats", "-json").stdout)
		for _, l := range st.Lanes {
			if l.Name == "kafka/connectivity" {
				conn = l
			}
		}
		if conn.Lag > 0 && conn.LastError != "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if conn.Lag == 0 || conn.LastError == "" || conn.OldestWaitingSeconds <= 0 {
		t.Fatalf("the connectivity lane while its topic is missing: %+v (want lag, waiting age and last error)", conn)
	}
	t.Logf("connectivity lane while its topic is missing: lag %d, waiting %.1fs, last error %q", conn.Lag, conn.OldestWaitingSeconds, conn.LastError)
	m := setup.metrics(t)
	if v := m[`fleet_forwarder_lane_lag_records{forwarder="kafka",record_type="connectivity"}`]; v <= 0 {
		t.Errorf("fleet_forwarder_lane_lag_records{connectivity} = %v, want > 0", v)
	}

	createTopic(t, broker.Addr, "tesla_telemetry_connectivity")
	deadline = time.Now().Add(60 * time.Second)
	var connMsgs []kfaketest.Message
	for {
		connMsgs, err = kfaketest.ReadTopic(broker.Addr, "tesla_telemetry_connectivity")
		if err == nil && len(connMsgs) >= 6 || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	txids := map[string]int{}
	for _, msg := range connMsgs {
		tx, _ := msg.Header("txid")
		txids[tx]++
	}
	if len(connMsgs) != 6 || len(txids) != 6 {
		t.Fatalf("connectivity topic holds %d messages with %d txids once created, want 6 distinct", len(connMsgs), len(txids))
	}

	// A V record whose JSON is over message.max.bytes, between others.
	c := e2e.Dial(t, d.addr, setup.Certs, relVINs[0])
	defer c.Close()
	around := map[string]bool{}
	var ms []*envelope.StreamMessage
	for j := range 5 {
		ms = append(ms, newRecord(relVINs[0], "V", fmt.Sprintf("before-%d", j)))
	}
	big := newRecord(relVINs[0], "V", "too-big")
	big.Payload = vehicle.PayloadWithString(relVINs[0], strings.Repeat("x", 240_000))
	ms = append(ms, big)
	for j := range 5 {
		ms = append(ms, newRecord(relVINs[0], "V", fmt.Sprintf("after-%d", j)))
	}
	e2e.SendAndAck(t, c, ms)
	for _, m := range ms {
		if m != big {
			around[string(m.TxID)] = true
		}
	}
	got, missing, err = waitKafka(broker.Addr, around, 30*time.Second, "V")
	if err != nil || missing > 0 {
		t.Fatalf("%d of the 10 records around the oversize one not in Kafka (%v)", missing, err)
	}
	if _, dup := lostAndDup(around, got); dup != 0 {
		t.Fatalf("%d records around the oversize one in Kafka more than once", dup)
	}
	var q []cliQuarantined
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		q = cliDecodeJSON[[]cliQuarantined](t, cli("quarantine", "ls", "-json").stdout)
		if len(q) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(q) != 1 || q[0].TxID != "too-big" || q[0].Lane != "kafka/V" || q[0].Reason != "message_too_large" {
		t.Fatalf("quarantine holds %+v, want the oversize record (kafka/V, message_too_large)", q)
	}
	if n := setup.metrics(t)[`fleet_forwarder_quarantined_total{dispatcher="kafka",record_type="V",reason="message_too_large"}`]; n != 1 {
		t.Errorf("fleet_forwarder_quarantined_total = %v, want 1", n)
	}
	if got["too-big"] != 0 {
		t.Fatal("the oversize record reached Kafka")
	}
	cat := cli("quarantine", "cat", "kafka/V", fmt.Sprint(q[0].Seq)).stdout
	if !strings.Contains(cat, `"txid": "too-big"`) || !strings.Contains(cat, "MESSAGE_TOO_LARGE") {
		t.Fatalf("quarantine cat:\n%.2000s", cat)
	}

	// Replayed before the limit is raised: refused again, it stays.
	if r := spoolCLI(t, "-config", setup.ConfigPath, "quarantine", "replay", "kafka/V", fmt.Sprint(q[0].Seq)); r.code == 0 {
		t.Fatalf("replay succeeded while the broker still refuses the record:\n%s", r.stdout)
	}
	setTopicConfig(t, broker.Addr, "tesla_telemetry_V", "max.message.bytes", "2000000")
	cli("quarantine", "replay", "kafka/V", fmt.Sprint(q[0].Seq))
	got, missing, err = waitKafka(broker.Addr, map[string]bool{"too-big": true}, 30*time.Second, "V")
	if err != nil || missing > 0 || got["too-big"] != 1 {
		t.Fatalf("the replayed record is in Kafka %d times (%v)", got["too-big"], err)
	}
	if q := cliDecodeJSON[[]cliQuarantined](t, cli("quarantine", "ls", "-json").stdout); len(q) != 0 {
		t.Fatalf("quarantine after the replay: %+v", q)
	}
	if !d.alive() {
		t.Fatalf("the daemon died:\n%s", d.logText())
	}
	d.stop(t)
}

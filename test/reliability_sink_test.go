package test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/test/kfakebroker/kfaketest"
)

const kafkaLag = `fleet_forwarder_lag_records{forwarder="kafka"}`

// TestReliabilitySinkOutage keeps three vehicles sending while the Kafka
// broker process is paused (SIGSTOP: a hung broker whose sockets stay
// open; the SIGKILL case is TestReliabilityBrokerKilled). Acks keep
// flowing (the spool absorbs them), /metrics shows the
// backlog (fleet_spool_records), every acked record ends up in Kafka and
// on stdout, and the daemon's RSS after recovery stays within 64 MiB of
// its RSS under load before the outage.
func TestReliabilitySinkOutage(t *testing.T) {
	kfaketest.RequireKcat(t)
	outage := 5 * time.Second
	if relLong() {
		outage = 30 * time.Second
	}
	broker := startRelBroker(t, "")
	dir := t.TempDir()
	setup := relWriteConfig(t, dir, relConfig{
		Records: map[string][]string{"V": {"kafka", "logger"}, "alerts": {"kafka", "logger"}},
		Kafka:   broker.Addr,
	})
	d := startDaemon(t, setup.ConfigPath)
	load := startLoad(t, d.addr, setup.Certs, 10*time.Millisecond)
	defer load.Halt()
	time.Sleep(2 * time.Second)
	rssBefore, err := rssKB(d.pid())
	if err != nil {
		t.Fatal(err)
	}

	type window struct {
		name        string
		from, to    time.Time
		spoolMax    float64
		lagMax      float64
		ackedDuring int
	}
	var windows []*window
	watch := func(w *window) {
		for time.Now().Before(w.to) {
			m := setup.metrics(t)
			w.spoolMax = max(w.spoolMax, m["fleet_spool_records"])
			w.lagMax = max(w.lagMax, m[kafkaLag])
			time.Sleep(250 * time.Millisecond)
		}
	}

	// A hung broker: the process is stopped, its sockets stay open.
	w := &window{name: "SIGSTOP", from: time.Now(), to: time.Now().Add(outage)}
	signalBroker(t, broker, syscall.SIGSTOP)
	watch(w)
	signalBroker(t, broker, syscall.SIGCONT)
	windows = append(windows, w)
	time.Sleep(2 * time.Second)

	load.Halt()

	acked, _, errs := load.Snapshot(time.Time{}, time.Now())
	for _, err := range errs {
		t.Errorf("vehicle: %v", err)
	}
	for _, w := range windows {
		_, w.ackedDuring, _ = load.Snapshot(w.from, w.to)
		t.Logf("broker %s for %s: %d records acked meanwhile; max fleet_spool_records %.0f, max %s %.0f",
			w.name, outage, w.ackedDuring, w.spoolMax, kafkaLag, w.lagMax)
		if w.ackedDuring == 0 {
			t.Errorf("no record acked while the broker was %s: the spool should absorb the outage", w.name)
		}
		if w.spoolMax < float64(w.ackedDuring)/2 {
			t.Errorf("fleet_spool_records peaked at %.0f while %d records were acked during the %s outage", w.spoolMax, w.ackedDuring, w.name)
		}
	}

	got, missing, err := waitKafka(broker.Addr, acked, 90*time.Second, "V", "alerts")
	if err != nil || missing > 0 {
		t.Fatalf("%d of %d acked records never reached Kafka (err %v)\n%s", missing, len(acked), err, d.logText())
	}
	_, dup := lostAndDup(acked, got)
	d.waitPrinted(t, acked, 30*time.Second)
	_, dupOut := lostAndDup(acked, printedCounts(d))
	t.Logf("%d acked records: all in Kafka (%d duplicates) and on stdout (%d duplicates)", len(acked), dup, dupOut)

	rssAfter, err := rssKB(d.pid())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("daemon VmRSS: %d kB under load before the outages, %d kB after recovery (bound: before + 65536 kB)", rssBefore, rssAfter)
	if rssAfter > rssBefore+64<<10 {
		t.Errorf("RSS grew from %d kB to %d kB over the outages", rssBefore, rssAfter)
	}
	d.stop(t)
}

// TestReliabilityLagGaugeWhileBrokerHangs checks that
// fleet_forwarder_lag_records{forwarder="kafka"} shows the backlog while
// the broker is hung (SIGSTOP), as fleet_spool_records does.
//
// The forwarder used to set the gauge only once per loop pass, before
// Sink.Send, so during an outage it stayed at the lag of that pass (often 0
// or 1) and an alert on it never fired; it is now refreshed every second.
func TestReliabilityLagGaugeWhileBrokerHangs(t *testing.T) {
	kfaketest.RequireKcat(t)
	broker := startRelBroker(t, "")
	dir := t.TempDir()
	setup := relWriteConfig(t, dir, relConfig{
		Records: map[string][]string{"V": {"kafka"}},
		Kafka:   broker.Addr,
	})
	d := startDaemon(t, setup.ConfigPath)
	if tx, why, _ := waitAcked(d, setup.Certs, "lag-warm", 10*time.Second); tx == "" {
		t.Fatal(why)
	}
	// Paused right after the ack: the forwarder is (usually) in the middle
	// of sending that record when the broker hangs.
	signalBroker(t, broker, syscall.SIGSTOP)
	defer func() { _ = broker.Signal(syscall.SIGCONT) }()
	acked, code, detail := pushUntilRefused(t, d, setup.Certs, "lag", 2000)
	if code != 0 {
		t.Fatalf("while the broker hangs: %s", detail)
	}
	time.Sleep(1 * time.Second) // several forwarder polls
	m := setup.metrics(t)
	t.Logf("broker hung, %d records acked: fleet_spool_records=%.0f %s=%.0f", len(acked), m["fleet_spool_records"], kafkaLag, m[kafkaLag])
	signalBroker(t, broker, syscall.SIGCONT)
	if m[kafkaLag] < float64(len(acked))/2 {
		t.Fatalf("%s = %.0f while %d acked records wait for a hung broker (fleet_spool_records = %.0f): the gauge is only set before each Sink.Send, which blocks for the whole outage",
			kafkaLag, m[kafkaLag], len(acked), m["fleet_spool_records"])
	}
	_, missing, err := waitKafka(broker.Addr, acked, 60*time.Second, "V")
	if err != nil || missing > 0 {
		t.Fatalf("%d acked records not in Kafka (%v)", missing, err)
	}
	d.stop(t)
}

// slowListener delays every read of the broker's side of a connection by
// delay: each request reaches the broker that much later (a latency
// injecting proxy in front of the broker, without a second hop whose
// address the broker would have to advertise).
type slowListener struct {
	net.Listener
	delay *atomic.Int64
}

func (l slowListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return slowConn{Conn: c, delay: l.delay}, nil
}

type slowConn struct {
	net.Conn
	delay *atomic.Int64
}

func (c slowConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if d := time.Duration(c.delay.Load()); d > 0 && n > 0 {
		time.Sleep(d)
	}
	return n, err
}

// TestReliabilitySlowAndRefusingBroker runs an in-process kfake cluster
// (ListenFn adds latency to every request it reads; auto topic creation is
// off and only tesla_telemetry_V exists). Phase 1: 200 ms per request
// while vehicles send: acks are not slowed (they wait for the spool, not
// the sink), the backlog is visible, nothing is lost. Phase 2: the broker
// refuses tesla_telemetry_alerts (UNKNOWN_TOPIC_OR_PARTITION: the topic
// does not exist and may not be created): V and alerts records are acked,
// none is skipped; once the topic is created every record arrives.
func TestReliabilitySlowAndRefusingBroker(t *testing.T) {
	kfaketest.RequireKcat(t)
	delay := new(atomic.Int64)
	cluster, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.DefaultNumPartitions(3),
		kfake.SeedTopics(3, "tesla_telemetry_V"),
		kfake.ListenFn(func(network, addr string) (net.Listener, error) {
			ln, err := net.Listen(network, addr)
			if err != nil {
				return nil, err
			}
			return slowListener{Listener: ln, delay: delay}, nil
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	addr := cluster.ListenAddrs()[0]

	dir := t.TempDir()
	setup := relWriteConfig(t, dir, relConfig{
		Records: map[string][]string{"V": {"kafka"}, "alerts": {"kafka"}},
		Kafka:   addr,
	})
	d := startDaemon(t, setup.ConfigPath)

	// Phase 1: slow broker, V only.
	delay.Store(int64(200 * time.Millisecond))
	g := startGoodVehicle(t, d.addr, setup.Certs, relVINs[0], 5*time.Millisecond)
	time.Sleep(4 * time.Second)
	m := setup.metrics(t)
	slowAcked, maxWait, errs := g.Stop()
	for _, err := range errs {
		t.Errorf("vehicle during the slow phase: %v", err)
	}
	t.Logf("broker +200ms per request: %d records acked, slowest ack %s; fleet_spool_records=%.0f %s=%.0f",
		len(slowAcked), maxWait.Round(time.Millisecond), m["fleet_spool_records"], kafkaLag, m[kafkaLag])
	if maxWait > 2*time.Second {
		t.Errorf("an ack took %s while only the sink was slow", maxWait)
	}
	delay.Store(0)
	if _, missing, err := waitKafka(addr, slowAcked, 60*time.Second, "V"); err != nil || missing > 0 {
		t.Fatalf("slow phase: %d of %d acked records not in Kafka (%v)", missing, len(slowAcked), err)
	}

	// Phase 2: the broker refuses the alerts topic.
	before := setup.metrics(t)
	c := e2e.Dial(t, d.addr, setup.Certs, relVINs[1])
	refusedAcked := map[string]bool{}
	for i := range 40 {
		topic := "V"
		if i%4 == 3 {
			topic = "alerts"
		}
		tx := fmt.Sprintf("refuse-%s-%03d", topic, i)
		e2e.SendAndAck(t, c, []*envelope.StreamMessage{newRecord(relVINs[1], topic, tx)})
		refusedAcked[tx] = true
	}
	time.Sleep(3 * time.Second)
	m = setup.metrics(t)
	partial, _ := kafkaCounts(addr, "V")
	vArrived := 0
	for tx := range refusedAcked {
		if partial[tx] > 0 {
			vArrived++
		}
	}
	t.Logf("alerts refused for 3s: %d of %d acked records (30 V, 10 alerts) are in Kafka; fleet_forwarder_failed_batches_total{kafka} +%.0f, fleet_kafka_produce_errors_total +%.0f, alerts lane lag %.0f",
		vArrived, len(refusedAcked),
		m[`fleet_forwarder_failed_batches_total{forwarder="kafka"}`]-before[`fleet_forwarder_failed_batches_total{forwarder="kafka"}`],
		m["fleet_kafka_produce_errors_total"]-before["fleet_kafka_produce_errors_total"],
		m[`fleet_forwarder_lane_lag_records{forwarder="kafka",record_type="alerts"}`])
	if vArrived < 30 {
		t.Errorf("a refused topic held back another record type: %d of 30 V records delivered while alerts were refused", vArrived)
	}
	if err := cluster.CreateTopic("tesla_telemetry_alerts", 3, nil); err != nil {
		t.Fatal(err)
	}
	got, missing, err := waitKafka(addr, refusedAcked, 90*time.Second, "V", "alerts")
	if err != nil || missing > 0 {
		t.Fatalf("after the topic was created: %d of %d acked records not in Kafka (%v)\n%s", missing, len(refusedAcked), err, d.logText())
	}
	_, dup := lostAndDup(refusedAcked, got)
	t.Logf("after the topic was created: all %d acked records in Kafka (%d duplicates)", len(refusedAcked), dup)
	d.stop(t)
}

// TestReliabilityBrokerKilled SIGKILLs the broker process and restarts it
// on the same port and data directory while a vehicle keeps sending. The
// kfake broker persists its topic list only on a clean shutdown, so after
// SIGKILL it comes back with the topics recreated under new topic IDs and
// without the records it held (a property of the fake, not of Kafka; those
// records are not counted against the daemon). Every record the daemon
// acked after the restart must still reach Kafka.
//
// franz-go does not adopt a recreated topic's new ID on its own (the topic
// fails with UNKNOWN_TOPIC_ID until it is purged from the client); the
// kafka sink purges it, or the forwarder would retry the same batch for
// ever and the spool fill. The same happens with a real cluster when a
// topic is deleted and recreated.
func TestReliabilityBrokerKilled(t *testing.T) {
	kfaketest.RequireKcat(t)
	broker := startRelBroker(t, t.TempDir())
	dir := t.TempDir()
	setup := relWriteConfig(t, dir, relConfig{
		Records: map[string][]string{"V": {"kafka"}},
		Kafka:   broker.Addr,
	})
	d := startDaemon(t, setup.ConfigPath)
	pre, code, detail := pushUntilRefused(t, d, setup.Certs, "prekill", 300)
	if code != 0 {
		t.Fatal(detail)
	}
	if _, missing, err := waitKafka(broker.Addr, pre, 30*time.Second, "V"); err != nil || missing > 0 {
		t.Fatalf("before the kill: %d not in Kafka (%v)", missing, err)
	}
	broker.Kill()
	during, code, detail := pushUntilRefused(t, d, setup.Certs, "killed", 300)
	if code != 0 {
		t.Fatalf("while the broker is dead the spool should absorb: %s", detail)
	}
	time.Sleep(3 * time.Second)
	// kfake's files do not survive SIGKILL (its partitions come back
	// unreadable), so the broker returns empty, as a rebuilt cluster would:
	// the topic is created again with a new ID, which the daemon must adopt.
	entries, _ := os.ReadDir(broker.DataDir())
	for _, e := range entries {
		os.RemoveAll(filepath.Join(broker.DataDir(), e.Name()))
	}
	broker.Restart(t)
	after, code, detail := pushUntilRefused(t, d, setup.Certs, "restarted", 300)
	if code != 0 {
		t.Fatal(detail)
	}
	want := map[string]bool{}
	for _, set := range []map[string]bool{during, after} {
		for tx := range set {
			want[tx] = true
		}
	}
	got, missing, err := waitKafka(broker.Addr, want, 10*time.Second, "V")
	if missing > 0 || err != nil {
		if strings.Contains(d.logText(), "UNKNOWN_TOPIC_ID") {
			t.Fatalf("%d of %d records acked during/after the broker's SIGKILL never reach Kafka (%v): the kafka forwarder retries a batch forever with UNKNOWN_TOPIC_ID after the topic came back with a new ID (franz-go keeps the old ID until the topic is purged from the client)", missing, len(want), err)
		}
		t.Fatalf("%d of %d acked records not in Kafka (%v)\n%s", missing, len(want), err, d.logText())
	}
	_, dup := lostAndDup(want, got)
	t.Logf("%d records acked while the broker was dead or after its restart: all in Kafka (%d duplicates)", len(want), dup)
	d.stop(t)
}

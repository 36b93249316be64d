package test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/test/kfakebroker/kfaketest"
)

// kafkaDaemonConfig writes a reference-format config routing the four
// record types to dispatchers (Kafka and/or the logger), with /metrics and
// /debug/pprof on free ports.
func kafkaDaemonConfig(t *testing.T, dir, brokerAddr string, dispatchers []string) (configPath, certs string, metricsPort, pprofPort int) {
	t.Helper()
	certs = filepath.Join(dir, "certs")
	if _, err := devca.WriteDir(certs, vins); err != nil {
		t.Fatal(err)
	}
	metricsPort, pprofPort = e2e.FreePort(t), e2e.FreePort(t)
	c := baseConfig(certs, filepath.Join(dir, "spool"))
	c.Records = allTypes(dispatchers...)
	c.Kafka = config.Kafka{
		"bootstrap.servers":      brokerAddr,
		"queue.buffering.max.ms": 5,
		"compression.type":       "gzip",
	}
	c.Monitoring = &config.Monitoring{PrometheusMetricsPort: metricsPort, ProfilerPort: pprofPort}
	configPath = filepath.Join(dir, "config.json")
	writeConfigFile(t, configPath, c)
	return configPath, certs, metricsPort, pprofPort
}

func buildBroker(t *testing.T) string {
	t.Helper()
	bin, err := kfaketest.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// readKafka reads tesla_telemetry_<topic> for each topic and indexes the
// messages by txid (the last copy of a duplicate wins; count says how many
// copies there were).
func readKafka(addr string, topics ...string) (byTx map[string]kfaketest.Message, total int, err error) {
	byTx = map[string]kfaketest.Message{}
	for _, topic := range topics {
		msgs, err := kfaketest.ReadTopic(addr, "tesla_telemetry_"+topic)
		if err != nil {
			return nil, 0, err
		}
		for _, m := range msgs {
			tx, _ := m.Header("txid")
			byTx[tx] = m
		}
		total += len(msgs)
	}
	return byTx, total, nil
}

func TestKafkaEndToEnd(t *testing.T) {
	kfaketest.RequireKcat(t)
	broker := kfaketest.Start(t, buildBroker(t), kfaketest.Options{Partitions: 3})
	dir := t.TempDir()
	configPath, certs, _, _ := kafkaDaemonConfig(t, dir, broker.Addr, []string{"kafka", "logger"})
	d := startDaemon(t, configPath)

	want := map[string]string{} // txid → vin
	wantType := map[string]string{}
	for _, vin := range vins {
		c := e2e.Dial(t, d.addr, certs, vin)
		var ms []*envelope.StreamMessage
		for i := range 10 {
			for _, topic := range []string{"V", "alerts"} {
				tx := fmt.Sprintf("%s-%s-%d", vin, topic, i)
				ms = append(ms, newRecord(vin, topic, tx))
				want[tx], wantType[tx] = vin, topic
			}
		}
		e2e.SendAndAck(t, c, ms)
	}

	deadline := time.Now().Add(30 * time.Second)
	var got map[string]kfaketest.Message
	for {
		var err error
		got, _, err = readKafka(broker.Addr, "V", "alerts")
		missing := 0
		if err == nil {
			for tx := range want {
				if _, ok := got[tx]; !ok {
					missing++
				}
			}
		}
		if err == nil && missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s: %d of %d acked records not in Kafka (last read error: %v)\n%s", missing, len(want), err, d.logText())
		}
		time.Sleep(300 * time.Millisecond)
	}
	for tx, vin := range want {
		m := got[tx]
		if m.Key != vin {
			t.Errorf("%s: key %q, want %q", tx, m.Key, vin)
		}
		for k, v := range map[string]string{"vin": vin, "txid": tx, "txtype": wantType[tx], "version": "0", "device_client_version": "e2e"} {
			if h, _ := m.Header(k); h != v {
				t.Errorf("%s: header %s = %q, want %q", tx, k, h, v)
			}
		}
		for _, k := range []string{"receivedat", "timestamp"} {
			if h, _ := m.Header(k); h == "" || h == "0" {
				t.Errorf("%s: header %s = %q, want epoch ms", tx, k, h)
			}
		}
	}
	// The logger dispatcher got them too.
	set := map[string]bool{}
	for tx := range want {
		set[tx] = true
	}
	d.waitPrinted(t, set, 10*time.Second)
	d.stop(t)
}

// startLoad keeps the vehicles of vins sending V records (every fifth an
// alerts record), one at a time each, waiting for every ack.
func startLoad(t *testing.T, addr, certs string, interval time.Duration) *e2e.Load {
	t.Helper()
	return e2e.StartLoad(t, addr, certs, vins, e2e.LoadOptions{Interval: interval,
		Record: func(vin string, i int) *envelope.StreamMessage {
			topic := "V"
			if i%5 == 4 {
				topic = "alerts"
			}
			return newRecord(vin, topic, fmt.Sprintf("load-%s-%06d", vin, i))
		}})
}

// httpGet fetches a local URL's body.
func httpGet(url string) (string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// goroutines reads the daemon's goroutine count from /debug/pprof.
func goroutines(pprofPort int) (int, error) {
	page, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/goroutine?debug=1", pprofPort))
	if err != nil {
		return 0, err
	}
	var n int
	if _, err := fmt.Sscanf(page, "goroutine profile: total %d", &n); err != nil {
		return 0, fmt.Errorf("pprof goroutine page: %w", err)
	}
	return n, nil
}

// TestKafkaOutage runs steady load while the broker is down for 30s, then
// restarts it on the same data directory and port: acks keep flowing (the
// spool absorbs the outage), the backlog drains, every acked record ends up
// in Kafka, and the daemon's goroutine count comes back.
func TestKafkaOutage(t *testing.T) {
	kfaketest.RequireKcat(t)
	if testing.Short() {
		t.Skip("a minute long")
	}
	broker := kfaketest.Start(t, buildBroker(t), kfaketest.Options{DataDir: t.TempDir(), Partitions: 3})
	dir := t.TempDir()
	configPath, certs, metricsPort, pprofPort := kafkaDaemonConfig(t, dir, broker.Addr, []string{"kafka"})
	d := startDaemon(t, configPath)
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)

	load := startLoad(t, d.addr, certs, 20*time.Millisecond) // ~150 records/s from 3 vehicles
	defer load.Halt()

	type sample struct {
		at             time.Duration
		acked, waiting int
		lagGauge       float64
		brokerUp       bool
		note           string
	}
	var samples []sample
	start := time.Now()
	brokerUp := true
	var lastInKafka map[string]kfaketest.Message
	// take samples the backlog: records acked so far that are not in Kafka
	// yet (read right after; while the broker is down, what it held when it
	// went away), and the forwarder's lag gauge.
	take := func(note string) {
		acked, _, _ := load.Snapshot(time.Time{}, time.Now())
		if brokerUp {
			if got, _, err := readKafka(broker.Addr, "V", "alerts"); err == nil {
				lastInKafka = got
			}
		}
		waiting := 0
		for tx := range acked {
			if _, ok := lastInKafka[tx]; !ok {
				waiting++
			}
		}
		gauge := -1.0
		if m, err := e2e.Scrape(metricsURL); err == nil {
			if v, ok := m[`fleet_forwarder_lag_records{forwarder="kafka"}`]; ok {
				gauge = v
			}
		}
		s := sample{at: time.Since(start).Round(100 * time.Millisecond), acked: len(acked), waiting: waiting, lagGauge: gauge, brokerUp: brokerUp, note: note}
		samples = append(samples, s)
		t.Logf("t=%6s acked=%5d waiting=%5d lag_gauge=%5.0f broker_up=%-5v %s", s.at, s.acked, s.waiting, s.lagGauge, s.brokerUp, note)
	}
	// tick waits for the next 5s mark since start, then samples.
	tick := func(note string) {
		next := start.Add(time.Since(start).Truncate(5*time.Second) + 5*time.Second)
		time.Sleep(time.Until(next))
		take(note)
	}

	tick("steady")
	baseline, err := goroutines(pprofPort)
	if err != nil {
		t.Fatalf("pprof: %v", err)
	}
	tick("steady")

	outageStart := time.Now()
	broker.Stop(t)
	brokerUp = false
	t.Logf("t=%6s broker stopped (SIGTERM)", time.Since(start).Round(100*time.Millisecond))
	for time.Since(outageStart) < 30*time.Second-5*time.Second {
		tick("broker down")
	}
	time.Sleep(time.Until(outageStart.Add(30 * time.Second)))
	broker.Restart(t)
	outageEnd := time.Now()
	brokerUp = true
	t.Logf("t=%6s broker restarted after %s", time.Since(start).Round(100*time.Millisecond), outageEnd.Sub(outageStart).Round(100*time.Millisecond))
	for range 2 {
		tick("broker back, load on")
	}
	load.Halt()
	acked, ackedDuringOutage, errs := load.Snapshot(outageStart, outageEnd)
	for _, err := range errs {
		t.Errorf("vehicle: %v", err)
	}
	if ackedDuringOutage == 0 {
		t.Errorf("no record was acked during the %s outage: the spool should absorb it", outageEnd.Sub(outageStart).Round(time.Second))
	}
	t.Logf("%d records acked in all, %d of them while the broker was down", len(acked), ackedDuringOutage)

	// Every acked record reaches Kafka.
	deadline := time.Now().Add(60 * time.Second)
	var missing []string
	for {
		tick("load off")
		got, total, err := readKafka(broker.Addr, "V", "alerts")
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("reading Kafka back still fails after 60s: %v\n%s", err, d.logText())
			}
			continue
		}
		missing = missing[:0]
		for tx := range acked {
			if _, ok := got[tx]; !ok {
				missing = append(missing, tx)
			}
		}
		if len(missing) == 0 {
			t.Logf("all %d acked records are in Kafka (%d messages, %d duplicates)", len(acked), total, total-len(got))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acked records never reached Kafka, e.g. %q\n%s", len(missing), len(acked), missing[:min(5, len(missing))], d.logText())
		}
	}
	// The forwarder caught up: its lag gauge is back to 0 (it is updated on
	// every pass of the loop, which is idle now).
	gaugeDeadline := time.Now().Add(10 * time.Second)
	for {
		m, err := e2e.Scrape(metricsURL)
		if v, ok := m[`fleet_forwarder_lag_records{forwarder="kafka"}`]; err == nil && ok && v == 0 {
			break
		}
		if time.Now().After(gaugeDeadline) {
			t.Errorf("fleet_forwarder_lag_records{forwarder=\"kafka\"} not back to 0: %v (%v)", m[`fleet_forwarder_lag_records{forwarder="kafka"}`], err)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// No goroutine leak: vehicles are still connected as at the baseline;
	// the Kafka client's reconnects left nothing behind.
	after := -1
	for range 50 {
		if after, err = goroutines(pprofPort); err == nil && after <= baseline+10 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("daemon goroutines: %d under load before the outage, %d after recovery (load stopped, connections open)", baseline, after)
	if after > baseline+10 {
		page, _ := httpGet(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/goroutine?debug=1", pprofPort))
		t.Errorf("daemon goroutines grew from %d to %d:\n%s", baseline, after, page)
	}

	d.stop(t)
	if logs := d.logText(); strings.Contains(logs, "did not drain") {
		t.Errorf("the forwarder did not drain at stop:\n%s", logs)
	}
	var curve []string
	for _, s := range samples {
		curve = append(curve, fmt.Sprintf("%s:%d", s.at, s.waiting))
	}
	t.Logf("records waiting (acked, not yet in Kafka) every 5s: %s", strings.Join(curve, " "))
	warns := strings.Count(d.logText(), "kafka client:")
	t.Logf("kafka client log lines during the run: %d", warns)
}

func TestKafkaUnsupportedPropertyIsAStartupError(t *testing.T) {
	dir := t.TempDir()
	configPath, _, _, _ := kafkaDaemonConfig(t, dir, "127.0.0.1:1", []string{"kafka"})
	b, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatal(err)
	}
	b = []byte(strings.Replace(string(b), `"bootstrap.servers"`, `"foo.bar": 1, "bootstrap.servers"`, 1))
	if err := os.WriteFile(configPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "-config", configPath)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `unsupported property \"foo.bar\"`) {
		t.Fatalf("err=%v; the output does not name the property:\n%s", err, out)
	}
}

package test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
)

var vins = []string{"5YJ3E1EA1KF000001", "5YJ3E1EA1KF000002", "5YJ3E1EA1KF000003"}

var topics = []string{"V", "alerts", "errors", "connectivity"}

// writeConfig writes a reference-format config routing every record type to
// the logger, with a key this build does not act on (airbrake) to check
// that it warns instead of failing.
func writeConfig(t *testing.T, dir string) (configPath, certs string) {
	t.Helper()
	certs = filepath.Join(dir, "certs")
	if _, err := devca.WriteDir(certs, vins); err != nil {
		t.Fatal(err)
	}
	c := baseConfig(certs, filepath.Join(dir, "spool"))
	c.Records = allTypes("logger")
	c.RateLimit = &config.RateLimit{Enabled: true, MessageIntervalTime: 30, MessageLimit: 1_000_000}
	c.Airbrake = json.RawMessage(`{"project_id": 1}`)
	c.Monitoring = &config.Monitoring{PrometheusMetricsPort: e2e.FreePort(t)}
	configPath = filepath.Join(dir, "config.json")
	writeConfigFile(t, configPath, c)
	return configPath, certs
}

var (
	rngMu sync.Mutex
	rng   = rand.New(rand.NewPCG(7, 7))
)

func newRecord(vin, topic, txid string) *envelope.StreamMessage {
	rngMu.Lock() // tests send from several goroutines
	payload := vehicle.Payload(rng, topic, "SPOOFED0000000000", time.Now())
	rngMu.Unlock()
	// A VIN inside the payload is not the certificate's: the daemon must
	// print the certificate's.
	return &envelope.StreamMessage{
		TxID: []byte(txid), Topic: []byte(topic), MessageID: []byte(txid),
		CreatedAt: uint32(time.Now().Unix()), SenderID: []byte("vehicle_device." + vin),
		Payload: payload,
	}
}

func TestIngestEveryTopicToStdoutAndSurviveSIGKILL(t *testing.T) {
	dir := t.TempDir()
	configPath, certs := writeConfig(t, dir)
	d := startDaemon(t, configPath)
	if !strings.Contains(d.logText(), `airbrake`) {
		t.Errorf("no warning names the unsupported key airbrake:\n%s", d.logText())
	}

	// Phase 1: every topic from every vehicle, acked and printed.
	want := map[string]string{} // txid → vin
	wantTopic := map[string]string{}
	for _, vin := range vins {
		c := e2e.Dial(t, d.addr, certs, vin)
		var ms []*envelope.StreamMessage
		for i := range 5 {
			for _, topic := range topics {
				tx := fmt.Sprintf("%s-%s-%d", vin, topic, i)
				ms = append(ms, newRecord(vin, topic, tx))
				want[tx], wantTopic[tx] = vin, topic
			}
		}
		e2e.SendAndAck(t, c, ms)
	}
	set := map[string]bool{}
	for tx := range want {
		set[tx] = true
	}
	got := d.waitPrinted(t, set, 20*time.Second)
	for tx, vin := range want {
		l := got[tx]
		if l.VIN != vin || l.Topic != wantTopic[tx] || l.ReceivedAtMs == 0 {
			t.Fatalf("printed %+v for %s, want vin=%s topic=%s", l, tx, vin, wantTopic[tx])
		}
		var rec struct {
			VIN string `json:"vin"`
		}
		if err := json.Unmarshal(l.Record, &rec); err != nil || rec.VIN != vin {
			t.Fatalf("record JSON for %s has vin %q (%v), want the certificate's %s: %s", tx, rec.VIN, err, vin, l.Record)
		}
	}

	// The counters operators graph moved.
	m := scrape(t, d.logText())
	for name, atLeast := range map[string]float64{
		"fleet_records_spooled_total":                        float64(len(want)),
		"fleet_acks_sent_total":                              float64(len(want)),
		`fleet_forwarder_sent_total{forwarder="logger"}`:     float64(len(want)),
		"fleet_tls_handshakes_total":                         float64(len(vins)),
		"fleet_spool_commits_total":                          1,
		`fleet_connections_refused_total{reason="draining"}`: 0,
	} {
		v, ok := m[name]
		if !ok || v < atLeast {
			t.Errorf("metric %s = %v (present %v), want >= %v", name, v, ok, atLeast)
		}
	}

	// Phase 2: a burst of records while stdout is not read (so the stdout
	// sink blocks once the pipe is full and most of the burst is acked but
	// only in the spool), SIGKILL right after the last ack, restart on the
	// same spool: every acked record is printed.
	c := e2e.Dial(t, d.addr, certs, vins[0])
	var burst []*envelope.StreamMessage
	acked := map[string]bool{}
	for i := range 2000 {
		tx := fmt.Sprintf("burst-%04d", i)
		burst = append(burst, newRecord(vins[0], topics[i%len(topics)], tx))
		acked[tx] = true
	}
	release := d.holdStdout()
	defer release()
	e2e.SendAndAck(t, c, burst)
	d.cmd.Process.Signal(syscall.SIGKILL)
	release() // read what the pipe holds; the process is gone
	d.kill()
	before := map[string]bool{}
	for _, l := range d.printed() {
		if acked[l.TxID] {
			before[l.TxID] = true
		}
	}
	t.Logf("before SIGKILL %d of %d acked burst records were printed", len(before), len(acked))

	d2 := startDaemon(t, configPath)
	missing := map[string]bool{}
	for tx := range acked {
		if !before[tx] {
			missing[tx] = true
		}
	}
	// With stdout held, at most a pipe's worth was printed: the restart
	// has records of its own to deliver, or this phase checks nothing.
	if len(missing) < len(acked)/2 {
		t.Fatalf("only %d of %d acked records were left unprinted at the SIGKILL; the held stdout did not hold", len(missing), len(acked))
	}
	d2.waitPrinted(t, missing, 30*time.Second)
	t.Logf("after restart the remaining %d were printed", len(missing))
	d2.stop(t)
}

func TestReferenceConfigsLoad(t *testing.T) {
	out, err := exec.Command(binary, "check-config", "-syntax-only", "testdata/configs/reference-example.json").CombinedOutput()
	if err != nil {
		t.Fatalf("reference-example.json: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "warning") {
		t.Errorf("reference-example.json loads with a warning (every key it has is supported):\n%s", out)
	}
	// Checked in full, the only problems are its TLS files, which this
	// machine does not have.
	out, err = exec.Command(binary, "check-config", "testdata/configs/reference-example.json").CombinedOutput()
	if err == nil {
		t.Fatalf("reference-example.json passes the full check without its TLS files:\n%s", out)
	}
	for _, f := range []string{"tls.server_cert: open /etc/certs/server/tls.crt", "tls.server_key: open /etc/certs/server/tls.key"} {
		if !strings.Contains(string(out), f) {
			t.Errorf("the full check does not name %q:\n%s", f, out)
		}
	}
	// The integration config routes to every sink the reference has
	// (kafka, kinesis, pubsub, logger, mqtt, zmq, redis): its settings
	// load with one warning (airbrake, which this build does not act on),
	// and checked in full the only problems are the files and directories
	// it names that this machine does not have.
	out, err = exec.Command(binary, "check-config", "-syntax-only", "-config", "testdata/configs/reference-integration.json").CombinedOutput()
	if err != nil {
		t.Fatalf("reference-integration.json: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `warning: config key "airbrake"`) {
		t.Errorf("no warning names airbrake:\n%s", out)
	}
	if n := strings.Count(string(out), "warning:"); n != 1 {
		t.Errorf("%d warnings, want 1 (airbrake):\n%s", n, out)
	}
	out, err = exec.Command(binary, "check-config", "testdata/configs/reference-integration.json").CombinedOutput()
	if err == nil {
		t.Fatalf("reference-integration.json passes the full check without its TLS files:\n%s", out)
	}
	problems := 0
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "tls.server_cert: open "), strings.HasPrefix(line, "tls.server_key: open "),
			strings.HasPrefix(line, "tls.ca_file: open "), strings.HasPrefix(line, "monitoring.profiling_path "):
			problems++
		case strings.Contains(line, "problem(s)"), strings.HasPrefix(line, "warning:"), line == "":
		default:
			t.Errorf("the full check reports %q, which is not about a missing file:\n%s", line, out)
		}
	}
	if problems != 4 {
		t.Errorf("%d missing-file problems, want 4:\n%s", problems, out)
	}
}

func TestUnknownDispatcherIsAStartupError(t *testing.T) {
	dir := t.TempDir()
	cfg := `{"port": 0, "records": {"V": ["logger", "carrier-pigeon"]}, "tls": {"server_cert": "x", "server_key": "y"}, "spool": {"dir": "` + dir + `"}}`
	path := filepath.Join(dir, "c.json")
	os.WriteFile(path, []byte(cfg), 0o600)
	out, err := exec.Command(binary, "-config", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "carrier-pigeon") {
		t.Fatalf("unknown dispatcher: err=%v, output does not name it:\n%s", err, out)
	}
}

// metricsAddr is the daemon's /metrics address, from its "serving
// metrics" log line.
func metricsAddr(t *testing.T, logs string) string {
	t.Helper()
	var addr string
	for _, line := range strings.Split(logs, "\n") {
		var e struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "serving metrics" {
			addr = e.Addr
		}
	}
	if addr == "" {
		t.Fatalf("no metrics address in the logs:\n%s", logs)
	}
	return addr
}

// scrape reads the daemon's /metrics (its address is in the logs).
func scrape(t *testing.T, logs string) e2e.Samples {
	t.Helper()
	return e2e.MustScrape(t, "http://"+metricsAddr(t, logs)+"/metrics")
}

package test

// Helpers for the reliability (reliability_*_test.go) and hostile-client
// (hostile_*_test.go) tests: a config writer with knobs, a kfake broker
// process the tests can SIGSTOP/SIGKILL (kfaketest.Broker), RSS and
// /metrics readers, and a well-behaved vehicle that keeps sending in the
// background.

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/test/kfakebroker/kfaketest"
)

// relVINs are the vehicles of the reliability tests (more connections than
// the shared vins list).
var relVINs = []string{
	"5YJ3E1EA1KF000001", "5YJ3E1EA1KF000002", "5YJ3E1EA1KF000003",
	"5YJ3E1EA1KF000004", "5YJ3E1EA1KF000005", "5YJ3E1EA1KF000006",
}

// relRounds reads FT_RELIABILITY_ROUNDS (make reliability sets it), else def.
func relRounds(def int) int {
	if v, err := strconv.Atoi(os.Getenv("FT_RELIABILITY_ROUNDS")); err == nil && v > 0 {
		return v
	}
	return def
}

// relLong reports whether the long variants run (make reliability).
func relLong() bool { return os.Getenv("FT_RELIABILITY_ROUNDS") != "" }

// relConfig is what relWriteConfig varies.
type relConfig struct {
	// Records maps a record type to its dispatchers (default: every
	// topic to the logger).
	Records map[string][]string
	// Kafka is bootstrap.servers ("" leaves the section out).
	Kafka string
	// SpoolDir defaults to dir/spool.
	SpoolDir string
	// MaxBytes is spool.max_bytes (0: unlimited).
	MaxBytes int64
	// MinFreeBytes is spool.min_free_bytes (nil: the daemon's default).
	MinFreeBytes *int64
	// ExtraCAs are PEM certificates added to the ca_file bundle.
	ExtraCAs [][]byte
	// Edit changes the config before it is written (timeouts, a sink's
	// section ...).
	Edit func(*config.Config)
}

// relSetup is one written config.
type relSetup struct {
	ConfigPath  string
	Certs       string
	MetricsPort int
	PprofPort   int
	CA          *devca.CA
}

func relWriteConfig(t *testing.T, dir string, rc relConfig) relSetup {
	t.Helper()
	certs := filepath.Join(dir, "certs")
	ca, err := devca.WriteDir(certs, relVINs)
	if err != nil {
		t.Fatal(err)
	}
	caFile := devca.Dir{Path: certs}.File(devca.CACertFile)
	if len(rc.ExtraCAs) > 0 {
		bundle, err := os.ReadFile(caFile)
		if err != nil {
			t.Fatal(err)
		}
		for _, pem := range rc.ExtraCAs {
			bundle = append(bundle, pem...)
		}
		caFile = filepath.Join(dir, "ca-bundle.pem")
		if err := os.WriteFile(caFile, bundle, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if rc.Records == nil {
		rc.Records = map[string][]string{"V": {"logger"}, "alerts": {"logger"}, "errors": {"logger"}}
	}
	if rc.SpoolDir == "" {
		rc.SpoolDir = filepath.Join(dir, "spool")
	}
	s := relSetup{Certs: certs, MetricsPort: e2e.FreePort(t), PprofPort: e2e.FreePort(t), CA: ca}
	c := baseConfig(certs, rc.SpoolDir)
	c.Records = rc.Records
	c.TLS.CAFile = caFile
	c.Monitoring = &config.Monitoring{PrometheusMetricsPort: s.MetricsPort, ProfilerPort: s.PprofPort}
	c.Spool.MinFreeBytes = rc.MinFreeBytes
	c.Spool.MaxBytes = rc.MaxBytes
	if rc.Kafka != "" {
		c.Kafka = config.Kafka{"bootstrap.servers": rc.Kafka, "queue.buffering.max.ms": 5}
	}
	if rc.Edit != nil {
		rc.Edit(c)
	}
	s.ConfigPath = filepath.Join(dir, "config.json")
	writeConfigFile(t, s.ConfigPath, c)
	return s
}

// metrics reads the daemon's /metrics page; a failed scrape fails the
// test (e2e.MustScrape).
func (s relSetup) metrics(t testing.TB) e2e.Samples {
	t.Helper()
	return e2e.MustScrape(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", s.MetricsPort))
}

// refused is the name of a connection refusal counter.
func refused(reason string) string {
	return `fleet_connections_refused_total{reason="` + reason + `"}`
}

// rssKB reads VmRSS of pid in kB.
func rssKB(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			var kb int
			_, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb)
			return kb, err
		}
	}
	return 0, errors.New("no VmRSS line")
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// alive reports whether the daemon process is still running.
func (d *daemon) alive() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// startRelBroker builds and starts a kfakebroker process with 3 partitions
// per topic (dataDir "" keeps its cluster in memory) that the test can
// pause (SIGSTOP, see signalBroker) and Kill; a paused broker is resumed
// before it is killed when the test ends.
func startRelBroker(t *testing.T, dataDir string) *kfaketest.Broker {
	t.Helper()
	b := kfaketest.Start(t, buildBroker(t), kfaketest.Options{DataDir: dataDir, Partitions: 3})
	t.Cleanup(func() { _ = b.Signal(syscall.SIGCONT) }) // runs before Start's Kill
	return b
}

// signalBroker sends sig to the broker process and fails the test if it
// cannot (an outage test whose broker was never paused would prove
// nothing).
func signalBroker(t *testing.T, b *kfaketest.Broker, sig os.Signal) {
	t.Helper()
	if err := b.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// kafkaCounts reads tesla_telemetry_<topic> for each topic and counts the
// copies of each txid.
func kafkaCounts(addr string, topics ...string) (map[string]int, error) {
	out := map[string]int{}
	for _, topic := range topics {
		msgs, err := kfaketest.ReadTopic(addr, "tesla_telemetry_"+topic)
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			tx, _ := m.Header("txid")
			out[tx]++
		}
	}
	return out, nil
}

// waitKafka polls until every txid of want is in Kafka or timeout passes;
// it returns the last counts and how many are missing.
func waitKafka(addr string, want map[string]bool, timeout time.Duration, topics ...string) (map[string]int, int, error) {
	deadline := time.Now().Add(timeout)
	for {
		got, err := kafkaCounts(addr, topics...)
		missing := -1
		if err == nil {
			missing = 0
			for tx := range want {
				if got[tx] == 0 {
					missing++
				}
			}
			if missing == 0 {
				return got, 0, nil
			}
		}
		if time.Now().After(deadline) {
			return got, missing, err
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// printedCounts counts the stdout copies of each txid over several daemon
// runs.
func printedCounts(ds ...*daemon) map[string]int {
	out := map[string]int{}
	for _, d := range ds {
		for _, l := range d.printed() {
			out[l.TxID]++
		}
	}
	return out
}

// lostAndDup compares acked txids with the copies a sink holds.
func lostAndDup(acked map[string]bool, got map[string]int) (lost []string, dup int) {
	for tx := range acked {
		switch n := got[tx]; {
		case n == 0:
			lost = append(lost, tx)
		case n > 1:
			dup += n - 1
		}
	}
	return lost, dup
}

// startGoodVehicle keeps one well-behaved vehicle sending a V record
// every interval and waiting for its ack.
func startGoodVehicle(t *testing.T, addr, certs, vin string, interval time.Duration) *e2e.Load {
	t.Helper()
	return e2e.StartLoad(t, addr, certs, []string{vin}, e2e.LoadOptions{Interval: interval,
		Record: func(vin string, i int) *envelope.StreamMessage {
			return newRecord(vin, "V", fmt.Sprintf("good-%s-%06d", vin, i))
		}})
}

// closeCode returns the WebSocket close code inside err, or 0.
func closeCode(err error) int {
	var ce *vehicle.CloseError
	if errors.As(err, &ce) {
		return int(ce.Code)
	}
	return 0
}

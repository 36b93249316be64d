// Package spawn starts the processes a benchmark runs against: a kfake
// Kafka broker (test/kfakebroker) and the daemon with a config file written
// for the run, optionally pinned to CPUs with taskset.
package spawn

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
)

// Proc is a started process.
type Proc struct {
	Cmd  *exec.Cmd
	Addr string
	// Log is where its stderr goes.
	Log  string
	done chan struct{}
}

// PID is the process id (the program's own: taskset execs it).
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Stop sends SIGTERM, waits up to timeout, then SIGKILL.
func (p *Proc) Stop(timeout time.Duration) {
	if p == nil || p.Cmd.Process == nil {
		return
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func command(cpus, bin string, args ...string) *exec.Cmd {
	if cpus != "" {
		return exec.Command("taskset", append([]string{"-c", cpus, bin}, args...)...)
	}
	return exec.Command(bin, args...)
}

// StartBroker runs the kfakebroker binary and waits for its "listening" line.
func StartBroker(bin, cpus, dir string) (*Proc, error) {
	logPath := filepath.Join(dir, "kfakebroker.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := command(cpus, bin, "-port", "0")
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &Proc{Cmd: cmd, Log: logPath, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				addr <- a
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(p.done) }()
	select {
	case p.Addr = <-addr:
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("kfakebroker exited before listening (see %s)", logPath)
	case <-time.After(20 * time.Second):
		p.Stop(time.Second)
		return nil, fmt.Errorf("kfakebroker did not listen within 20s")
	}
}

// DaemonConfig is what the written config file says.
type DaemonConfig struct {
	// Dir holds the config file, the spool and the daemon's log.
	Dir string
	// CertDir is a `certs dev` directory (server.crt/key, ca.crt).
	CertDir string
	// Port to listen on (0: pick a free one).
	Port int
	// Sink is "kafka" (needs BrokerAddr), "logger" or "none" (records are
	// acked without a sink and without the spool).
	Sink       string
	BrokerAddr string
	// AckMode is "spool" or "receive".
	AckMode string
	// LogLevel of the daemon.
	LogLevel string
	// PprofPort serves /debug/pprof when > 0.
	PprofPort int
	// MetricsPort serves /metrics when > 0.
	MetricsPort int
}

// DaemonCounters are what the bench reads from the daemon's /metrics.
type DaemonCounters struct {
	// ForwarderSent is the records the forwarders have sent
	// (fleet_forwarder_sent_total) and ForwarderLag what they still have
	// to send (fleet_forwarder_lag_records), summed over forwarders.
	ForwarderSent, ForwarderLag int64
	// RecordsRefused is fleet_records_refused_total summed over reasons:
	// records the daemon acked or answered but did not keep. A bench run
	// expects none.
	RecordsRefused int64
	// SenderMismatches is fleet_records_sender_id_mismatch_total: records
	// sent under another vehicle's sender id, which the daemon keeps under
	// the certificate's VIN. A bench run expects none.
	SenderMismatches int64
}

// Scrape reads the daemon's /metrics on port.
func Scrape(port int) (DaemonCounters, error) {
	m, err := e2e.Scrape(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return DaemonCounters{}, err
	}
	return DaemonCounters{
		ForwarderSent:    int64(m.Sum("fleet_forwarder_sent_total")),
		ForwarderLag:     int64(m.Sum("fleet_forwarder_lag_records")),
		RecordsRefused:   int64(m.Sum("fleet_records_refused_total")),
		SenderMismatches: int64(m.Sum("fleet_records_sender_id_mismatch_total")),
	}, nil
}

// WriteConfig writes the daemon's config file and returns its path.
func WriteConfig(c *DaemonConfig) (string, error) {
	types := []string{"V", "alerts", "errors"}
	cfg := &config.Config{
		Host: "127.0.0.1", Port: c.Port, LogLevel: c.LogLevel, JSONLogEnable: true,
		Namespace: config.DefaultNamespace,
		TLS: config.TLS{
			ServerCert: filepath.Join(c.CertDir, "server.crt"),
			ServerKey:  filepath.Join(c.CertDir, "server.key"),
			CAFile:     filepath.Join(c.CertDir, "ca.crt"),
		},
		Spool:       config.Spool{Dir: filepath.Join(c.Dir, "spool")},
		AckMode:     c.AckMode,
		IdleTimeout: config.NewDuration(0), // off: the bench holds idle connections on purpose
		Records:     map[string][]string{},
	}
	switch c.Sink {
	case "kafka":
		for _, t := range types {
			cfg.Records[t] = []string{"kafka"}
		}
		cfg.Kafka = config.Kafka{"bootstrap.servers": c.BrokerAddr}
	case "logger":
		for _, t := range types {
			cfg.Records[t] = []string{"logger"}
		}
	case "none":
		// The daemon refuses a config that routes nothing; route a type
		// the bench never sends, so the ones it sends stay unrouted.
		cfg.Records["connectivity"] = []string{"logger"}
	default:
		return "", fmt.Errorf("unknown sink %q (kafka, logger, none)", c.Sink)
	}
	if c.PprofPort > 0 || c.MetricsPort > 0 {
		cfg.Monitoring = &config.Monitoring{ProfilerPort: c.PprofPort, PrometheusMetricsPort: c.MetricsPort}
	}
	b, err := config.Marshal(cfg)
	if err != nil {
		return "", err
	}
	path := filepath.Join(c.Dir, "config.json")
	return path, os.WriteFile(path, b, 0o600)
}

// StartDaemon writes the config and runs bin -config FILE, waiting until
// the port accepts connections. Stdout (the logger sink) is discarded;
// stderr goes to daemon.log in c.Dir.
func StartDaemon(bin, cpus string, c *DaemonConfig) (*Proc, error) {
	if c.Port == 0 {
		port, err := e2e.PickPort(c.PprofPort, c.MetricsPort)
		if err != nil {
			return nil, err
		}
		c.Port = port
	}
	path, err := WriteConfig(c)
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(c.Dir, "daemon.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := command(cpus, bin, "-config", path)
	cmd.Stderr = logf
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	cmd.Stdout = devnull
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &Proc{Cmd: cmd, Log: logPath, Addr: fmt.Sprintf("127.0.0.1:%d", c.Port), done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if p.Exited() {
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("daemon exited before listening:\n%s", tail(b, 2000))
		}
		conn, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err == nil {
			conn.Close()
			return p, nil
		}
		if time.Now().After(deadline) {
			p.Stop(5 * time.Second)
			return nil, fmt.Errorf("daemon did not listen on %s within 30s (see %s)", p.Addr, logPath)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

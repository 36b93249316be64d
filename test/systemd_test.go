package test

// Tests of the production packaging: the systemd unit (checked with
// systemd-analyze), `make install`, the sd_notify handshake of the real
// daemon, the example config and the Grafana dashboard.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
)

const (
	repoRoot    = ".."
	unitFile    = "../systemd/fleet-telemetry.service"
	exampleConf = "../systemd/config.json"
	dashboard   = "../deploy/grafana-dashboard.json"
)

// needTool returns the path of an external tool. Missing, it skips the
// test, except under CI (e2e.UnderCI), where a missing tool is a failure:
// .ci/run installs it.
func needTool(t *testing.T, name string) string {
	t.Helper()
	return e2e.NeedTool(t, name, debianPackageOf(name))
}

func debianPackageOf(tool string) string {
	switch tool {
	case "systemd-analyze", "systemd-sysusers":
		return "systemd"
	case "prlimit":
		return "util-linux"
	case "gnutls-cli":
		return "gnutls-bin"
	}
	return tool
}

// systemdAnalyze runs systemd-analyze without a running systemd: no man
// page lookups, no generators, and a fixed log level so that an inherited
// SYSTEMD_LOG_LEVEL=debug cannot flood the output.
func systemdAnalyze(t *testing.T, args ...string) (string, error) {
	t.Helper()
	sa := needTool(t, "systemd-analyze")
	cmd := exec.Command(sa, append([]string{"--man=no", "--generators=no"}, args...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// unitPointingAt writes a copy of the unit whose ExecStart= names bin, into
// a directory of its own (the file keeps its name: verify checks it).
func unitPointingAt(t *testing.T, unit, bin string, edit func(string) string) string {
	t.Helper()
	b, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^ExecStart=\S+`)
	s := re.ReplaceAllString(string(b), "ExecStart="+bin)
	if edit != nil {
		s = edit(s)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "fleet-telemetry.service")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// verifyUnit fails unless systemd-analyze verify accepts the unit with no
// complaint at all: verify exits 0 for an unknown key or a value it cannot
// parse (it only warns, "…, ignoring"), so any output is a failure too.
func verifyUnit(t *testing.T, unit string) {
	t.Helper()
	out, err := systemdAnalyze(t, "verify", unit)
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", unit, err, out)
	}
}

// installInto copies the built daemon to root/usr/local/bin, as a
// stand-in for an installed system: verify insists that ExecStart= names an
// executable that exists.
func installInto(t *testing.T, root string) string {
	t.Helper()
	dst := filepath.Join(root, "usr", "local", "bin", "fleet-telemetry")
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestSystemdUnitVerify(t *testing.T) {
	needTool(t, "systemd-analyze")
	bin := installInto(t, t.TempDir())
	unit := unitPointingAt(t, unitFile, bin, nil)
	verifyUnit(t, unit)

	// The check is live: a broken copy must be reported.
	broken := unitPointingAt(t, unitFile, bin, func(s string) string {
		return strings.Replace(s, "Type=notify\n", "Type=notifyy\n", 1)
	})
	if out, _ := systemdAnalyze(t, "verify", broken); !strings.Contains(out, "notifyy") {
		t.Fatalf("systemd-analyze verify did not report Type=notifyy; output:\n%s", out)
	}

	// The sandbox keeps the exposure score low ("OK" is below 2.0 on
	// systemd-analyze's 0–10 scale; --threshold counts tenths).
	out, err := systemdAnalyze(t, "security", "--offline=true", "--threshold=20", unit)
	if err != nil {
		t.Fatalf("systemd-analyze security: exposure above 2.0 (%v):\n%s", err, out)
	}
	if i := strings.Index(out, "Overall exposure level"); i >= 0 {
		t.Log(strings.TrimSpace(out[i:]))
	}
}

// unitSettings reads the unit's Key=Value lines per section (a key may
// repeat).
func unitSettings(t *testing.T, path string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	section := ""
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: line %q is not Key=Value", path, line)
			}
			out[section+"."+k] = append(out[section+"."+k], v)
		}
	}
	return out
}

// TestSystemdUnitSettings pins what the issue asks of the unit, so that a
// later edit cannot drop it silently.
func TestSystemdUnitSettings(t *testing.T) {
	s := unitSettings(t, unitFile)
	want := map[string]string{
		"Service.Type":                    "notify",
		"Service.ExecStart":               "/usr/local/bin/fleet-telemetry -config /etc/fleet-telemetry/config.json",
		"Service.ExecReload":              "/bin/kill -HUP $MAINPID",
		"Service.Restart":                 "on-failure",
		"Service.User":                    "fleet-telemetry",
		"Service.StateDirectory":          "fleet-telemetry",
		"Service.ConfigurationDirectory":  "fleet-telemetry",
		"Service.AmbientCapabilities":     "CAP_NET_BIND_SERVICE",
		"Service.CapabilityBoundingSet":   "CAP_NET_BIND_SERVICE",
		"Service.LimitNOFILE":             "1048576",
		"Service.ProtectSystem":           "strict",
		"Service.ProtectHome":             "true",
		"Service.PrivateTmp":              "true",
		"Service.NoNewPrivileges":         "true",
		"Service.RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		"Install.WantedBy":                "multi-user.target",
	}
	for k, v := range want {
		if got := s[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if !slices.Contains(s["Service.SystemCallFilter"], "@system-service") {
		t.Errorf("SystemCallFilter = %q, want @system-service among them", s["Service.SystemCallFilter"])
	}
	if _, ok := s["Service.DynamicUser"]; ok {
		t.Error("DynamicUser= is set; the unit runs as the static user fleet-telemetry")
	}
	// The stop timeout must outlast the daemon's 25s graceful shutdown
	// (cmd/fleet-telemetry: shutdownTimeout).
	stop, err := time.ParseDuration(strings.Join(s["Service.TimeoutStopSec"], ""))
	if err != nil || stop <= 25*time.Second {
		t.Errorf("TimeoutStopSec = %q, want a duration above 25s", s["Service.TimeoutStopSec"])
	}
	if wd, err := time.ParseDuration(strings.Join(s["Service.WatchdogSec"], "")); err != nil || wd < 10*time.Second {
		t.Errorf("WatchdogSec = %q, want at least 10s", s["Service.WatchdogSec"])
	}

	// Restart= alone must never trip the start limit: a start failing for
	// a minute (a sink not reachable yet, the port held by TIME_WAIT
	// sockets of a daemon without SO_REUSEADDR) is retried until it works.
	// systemd's window opens at the first start and counts every start in
	// it; Restart= spaces them by at least RestartSec.
	restart, err := time.ParseDuration(strings.Join(s["Service.RestartSec"], ""))
	if err != nil || restart <= 0 {
		t.Fatalf("RestartSec = %q, want a duration", s["Service.RestartSec"])
	}
	window, err := time.ParseDuration(strings.Join(s["Unit.StartLimitIntervalSec"], ""))
	if err != nil || window < time.Minute {
		t.Errorf("StartLimitIntervalSec = %q, want at least 60s (TIME_WAIT lasts 60 s)", s["Unit.StartLimitIntervalSec"])
	}
	burst, err := strconv.Atoi(strings.Join(s["Unit.StartLimitBurst"], ""))
	if most := int(window/restart) + 1; err != nil || burst <= most {
		t.Errorf("StartLimitBurst = %q: Restart= alone makes up to %d starts in StartLimitIntervalSec=%v at RestartSec=%v; want more", s["Unit.StartLimitBurst"], most, window, restart)
	}
}

// TestSystemdExampleConfig checks that the shipped example loads, names the
// production paths, and keeps /metrics on loopback.
func TestSystemdExampleConfig(t *testing.T) {
	// The TLS files it names are the operator's to install.
	out, err := exec.Command(binary, "check-config", "-syntax-only", exampleConf).CombinedOutput()
	if err != nil {
		t.Fatalf("check-config %s: %v\n%s", exampleConf, err, out)
	}
	if strings.Contains(string(out), "warning") {
		t.Errorf("check-config warns about the example:\n%s", out)
	}
	var c struct {
		Host string `json:"host"`
		Port int    `json:"port"`
		TLS  struct {
			ServerCert string `json:"server_cert"`
			ServerKey  string `json:"server_key"`
		} `json:"tls"`
		Spool      struct{ Dir string } `json:"spool"`
		Monitoring struct {
			Port int    `json:"prometheus_metrics_port"`
			Host string `json:"prometheus_metrics_host"`
		} `json:"monitoring"`
	}
	b, err := os.ReadFile(exampleConf)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if c.Host != "0.0.0.0" || c.Port != 443 {
		t.Errorf("listens on %s:%d, want 0.0.0.0:443", c.Host, c.Port)
	}
	for _, p := range []string{c.TLS.ServerCert, c.TLS.ServerKey} {
		if !strings.HasPrefix(p, "/etc/fleet-telemetry/") {
			t.Errorf("TLS file %q is not under /etc/fleet-telemetry/ (the unit's ConfigurationDirectory)", p)
		}
	}
	if c.Spool.Dir != "/var/lib/fleet-telemetry/spool" {
		t.Errorf("spool.dir = %q, want /var/lib/fleet-telemetry/spool (inside the unit's StateDirectory)", c.Spool.Dir)
	}
	if c.Monitoring.Port != 9273 || c.Monitoring.Host != "127.0.0.1" {
		t.Errorf("metrics on %s:%d, want 127.0.0.1:9273", c.Monitoring.Host, c.Monitoring.Port)
	}
}

// TestInstall runs `make install` into a staging root the way a package
// build would, and checks what lands where.
func TestInstall(t *testing.T) {
	mk := needTool(t, "make")
	root := t.TempDir()
	build := t.TempDir()
	install := func() string {
		cmd := exec.Command(mk, "install", "DESTDIR="+root, "PREFIX=/usr", "BIN="+build)
		cmd.Dir = repoRoot
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make install: %v\n%s", err, out)
		}
		return string(out)
	}
	install()

	mode := func(rel string) fs.FileMode {
		t.Helper()
		fi, err := os.Stat(filepath.Join(root, rel))
		if err != nil {
			t.Fatalf("make install did not install %s: %v", rel, err)
		}
		return fi.Mode().Perm()
	}
	if m := mode("usr/bin/fleet-telemetry"); m != 0o755 {
		t.Errorf("usr/bin/fleet-telemetry mode %v, want 0755", m)
	}
	for _, rel := range []string{
		"usr/lib/systemd/system/fleet-telemetry.service",
		"usr/lib/sysusers.d/fleet-telemetry.conf",
		"etc/fleet-telemetry/config.json.example",
		"etc/fleet-telemetry/config.json",
	} {
		if m := mode(rel); m != 0o644 {
			t.Errorf("%s mode %v, want 0644", rel, m)
		}
	}
	out, err := exec.Command(filepath.Join(root, "usr/bin/fleet-telemetry"), "check-config", "-syntax-only",
		filepath.Join(root, "etc/fleet-telemetry/config.json.example")).CombinedOutput()
	if err != nil {
		t.Fatalf("installed binary on the installed example: %v\n%s", err, out)
	}
	// make install's build carries the revision it was built from, even
	// where Go's own VCS stamp is off (a git worktree, -buildvcs=false).
	out, err = exec.Command(filepath.Join(root, "usr/bin/fleet-telemetry"), "version").CombinedOutput()
	if err != nil {
		t.Fatalf("installed binary: version: %v\n%s", err, out)
	}
	if head, gerr := exec.Command("git", "-C", repoRoot, "rev-parse", "HEAD").Output(); gerr != nil {
		t.Logf("no git revision to compare with (%v): %s", gerr, out)
	} else if rev := strings.TrimSpace(string(head)); !strings.Contains(string(out), "revision "+rev) {
		t.Errorf("installed binary: version %q does not name revision %s", out, rev)
	}
	unit := filepath.Join(root, "usr/lib/systemd/system/fleet-telemetry.service")
	exec0 := unitSettings(t, unit)["Service.ExecStart"]
	if len(exec0) != 1 || exec0[0] != "/usr/bin/fleet-telemetry -config /etc/fleet-telemetry/config.json" {
		t.Errorf("installed unit ExecStart = %q, want the PREFIX=/usr binary", exec0)
	}

	// An operator's config.json is never overwritten; the example is.
	mine := []byte(`{"port": 8443}` + "\n")
	if err := os.WriteFile(filepath.Join(root, "etc/fleet-telemetry/config.json"), mine, 0o600); err != nil {
		t.Fatal(err)
	}
	if out := install(); !strings.Contains(out, "kept the existing") {
		t.Errorf("second install does not say it kept config.json:\n%s", out)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "etc/fleet-telemetry/config.json")); string(got) != string(mine) {
		t.Errorf("make install overwrote config.json: now %q", got)
	}

	if _, err := exec.LookPath("systemd-analyze"); err == nil || e2e.UnderCI() {
		// The installed unit, pointed at the installed binary, verifies.
		verifyUnit(t, unitPointingAt(t, unit, filepath.Join(root, "usr/bin/fleet-telemetry"), nil))
	}
	if sysusers, err := exec.LookPath("systemd-sysusers"); err == nil {
		// The sysusers.d file creates the service user in the staging root.
		if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(sysusers, "--root="+root).CombinedOutput()
		if err != nil {
			t.Fatalf("systemd-sysusers --root: %v\n%s", err, out)
		}
		passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
		if !regexp.MustCompile(`(?m)^fleet-telemetry:x:\d+:\d+:[^:]*:/var/lib/fleet-telemetry:/usr/sbin/nologin$`).Match(passwd) {
			t.Errorf("systemd-sysusers did not create the fleet-telemetry user; /etc/passwd:\n%s", passwd)
		}
	}
}

// notifySocket is the service manager's end of NOTIFY_SOCKET for a daemon
// under test.
type notifySocket struct {
	path string
	conn *net.UnixConn
	msgs chan notifyMsg
}

type notifyMsg struct {
	text string
	at   time.Time
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	// sun_path holds 108 bytes: keep the path short whatever TMPDIR is.
	dir, err := os.MkdirTemp("", "ftn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{path: path, conn: conn, msgs: make(chan notifyMsg, 1000)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				close(n.msgs)
				return
			}
			n.msgs <- notifyMsg{string(buf[:k]), time.Now()}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return n
}

// next waits for the next datagram.
func (n *notifySocket) next(t *testing.T, timeout time.Duration, what string) notifyMsg {
	t.Helper()
	select {
	case m, ok := <-n.msgs:
		if !ok {
			t.Fatalf("notify socket closed while waiting for %s", what)
		}
		return m
	case <-time.After(timeout):
		t.Fatalf("no datagram within %v while waiting for %s", timeout, what)
	}
	return notifyMsg{}
}

// assignments splits a datagram into its KEY=VALUE lines.
func assignments(text string) map[string]string {
	out := map[string]string{}
	for _, l := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			out[k] = v
		}
	}
	return out
}

// notifiedDaemon is the real binary started with NOTIFY_SOCKET.
type notifiedDaemon struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	logs   []string
	listen chan string // the "listening" line's addr
	exited chan struct{}
}

func startNotified(t *testing.T, configPath string, env ...string) *notifiedDaemon {
	t.Helper()
	d := &notifiedDaemon{listen: make(chan string, 1), exited: make(chan struct{})}
	d.cmd = exec.Command(binary, "-config", configPath)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k != "NOTIFY_SOCKET" && !strings.HasPrefix(k, "WATCHDOG_") {
			d.cmd.Env = append(d.cmd.Env, kv)
		}
	}
	d.cmd.Env = append(d.cmd.Env, env...)
	d.cmd.Stdout = nil // records would go to stdout; none are sent here
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.logs = append(d.logs, line)
			d.mu.Unlock()
			var e struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "listening" {
				d.listen <- e.Addr
			}
		}
		d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			d.cmd.Process.Kill()
			<-d.exited
		}
	})
	return d
}

func (d *notifiedDaemon) logText() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.logs, "\n")
}

// writeNotifyConfig writes a config on 127.0.0.1 port 0 with dev
// certificates; change edits it before it is written.
func writeNotifyConfig(t *testing.T, change func(*config.Config)) (configPath, certs string) {
	t.Helper()
	dir := t.TempDir()
	certs = filepath.Join(dir, "certs")
	if _, err := devca.WriteDir(certs, vins[:1]); err != nil {
		t.Fatal(err)
	}
	c := baseConfig(certs, filepath.Join(dir, "spool"))
	c.Records = map[string][]string{"V": {"logger"}}
	if change != nil {
		change(c)
	}
	configPath = filepath.Join(dir, "config.json")
	writeConfigFile(t, configPath, c)
	return configPath, certs
}

// TestSystemdNotifyEndToEnd runs the daemon as systemd would run a
// Type=notify unit with WatchdogSec=1s: READY=1 only once a vehicle can
// connect, WATCHDOG=1 every half second, STOPPING=1 after SIGTERM.
func TestSystemdNotifyEndToEnd(t *testing.T) {
	sock := newNotifySocket(t)
	configPath, certs := writeNotifyConfig(t, nil)
	const watchdog = time.Second
	d := startNotified(t, configPath, "NOTIFY_SOCKET="+sock.path,
		"WATCHDOG_USEC="+strconv.FormatInt(watchdog.Microseconds(), 10))

	// The first datagram is READY=1, carrying the bound address in STATUS=.
	ready := sock.next(t, 20*time.Second, "READY=1")
	a := assignments(ready.text)
	if a["READY"] != "1" {
		t.Fatalf("first datagram %q is not READY=1\n%s", ready.text, d.logText())
	}
	addr, ok := strings.CutPrefix(a["STATUS"], "listening on ")
	if !ok {
		t.Fatalf("READY datagram %q has no STATUS=listening on ADDR", ready.text)
	}
	// A vehicle connects at once: one try, no retry loop. The listener was
	// accepting before READY=1 was sent.
	tlsCfg, err := vehicle.TLSFromDir(certs, vins[0])
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := vehicle.Dial(ctx, vehicle.Config{Addr: addr, TLS: tlsCfg, Header: http.Header{"Version": []string{"e2e"}}})
	cancel()
	if err != nil {
		t.Fatalf("connecting right after READY=1: %v\n%s", err, d.logText())
	}
	c.Close()
	// The "listening" line was written before READY=1 was sent.
	select {
	case la := <-d.listen:
		if la != addr {
			t.Errorf("listening line says %s, READY's STATUS says %s", la, addr)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no \"listening\" log line although READY=1 arrived:\n%s", d.logText())
	}

	// Watchdog pings: at half of WATCHDOG_USEC, never as late as the
	// deadline itself.
	var pings []notifyMsg
	for len(pings) < 4 {
		m := sock.next(t, 2*watchdog, "WATCHDOG=1")
		if m.text != "WATCHDOG=1" {
			t.Fatalf("datagram %q before SIGTERM, want only WATCHDOG=1", m.text)
		}
		pings = append(pings, m)
	}
	for i := 1; i < len(pings); i++ {
		gap := pings[i].at.Sub(pings[i-1].at)
		if gap < watchdog/4 || gap >= watchdog {
			t.Errorf("watchdog pings %d and %d are %v apart, want about %v", i-1, i, gap, watchdog/2)
		}
	}

	sigterm := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var stopping notifyMsg
	for stopping.text == "" {
		m := sock.next(t, 10*time.Second, "STOPPING=1")
		switch {
		case m.text == "WATCHDOG=1":
		case assignments(m.text)["STOPPING"] == "1":
			stopping = m
		default:
			t.Fatalf("unexpected datagram %q after SIGTERM", m.text)
		}
	}
	if stopping.at.Before(sigterm) {
		t.Errorf("STOPPING=1 arrived before SIGTERM was sent")
	}
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon did not exit within 30s of SIGTERM:\n%s", d.logText())
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("daemon exited %d after SIGTERM:\n%s", code, d.logText())
	}
	// Nothing but watchdog pings may follow STOPPING=1, and no second READY.
	for {
		select {
		case m, ok := <-sock.msgs:
			if ok && m.text != "WATCHDOG=1" {
				t.Errorf("datagram %q after STOPPING=1", m.text)
			}
			if ok {
				continue
			}
		case <-time.After(100 * time.Millisecond):
		}
		break
	}
}

// TestSystemdNotifyNoReadyWhenStartFails: a daemon that cannot listen (port
// taken) or cannot load its certificate never says READY=1, so systemd
// reports the start as failed instead of as running.
func TestSystemdNotifyNoReadyWhenStartFails(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cases := map[string]func(*config.Config){
		"port in use":         func(c *config.Config) { c.Port = taken.Addr().(*net.TCPAddr).Port },
		"missing certificate": func(c *config.Config) { c.TLS.ServerCert = "/nonexistent/server.crt" },
	}
	names := make([]string, 0, len(cases))
	for n := range cases {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			sock := newNotifySocket(t)
			configPath, _ := writeNotifyConfig(t, cases[name])
			d := startNotified(t, configPath, "NOTIFY_SOCKET="+sock.path)
			select {
			case <-d.exited:
			case <-time.After(20 * time.Second):
				t.Fatalf("daemon still running:\n%s", d.logText())
			}
			if d.cmd.ProcessState.ExitCode() == 0 {
				t.Fatalf("daemon exited 0:\n%s", d.logText())
			}
			select {
			case m := <-sock.msgs:
				t.Fatalf("daemon that failed to start sent %q:\n%s", m.text, d.logText())
			case <-time.After(200 * time.Millisecond):
			}
		})
	}
}

// dashboardMetrics are the series the dashboard's queries use. Each must be
// exported by the daemon: its name is registered with a GetOrCreate* call
// in our code (histograms add _bucket, _sum and _count), or written by the
// metrics library's process metrics (WritePrometheus(w, true)).
var dashboardMetrics = []string{
	"fleet_ack_latency_seconds_bucket",
	"fleet_ack_latency_seconds_count",
	"fleet_ack_latency_seconds_sum",
	"fleet_acks_sent_total",
	"fleet_connections_accepted_total",
	"fleet_connections_open",
	"fleet_connections_refused_total",
	"fleet_forwarder_failed_batches_total",
	"fleet_forwarder_lag_records",
	"fleet_forwarder_lane_lag_records",
	"fleet_forwarder_lane_oldest_waiting_seconds",
	"fleet_forwarder_quarantined_total",
	"fleet_forwarder_retries_total",
	"fleet_forwarder_sent_batches_total",
	"fleet_forwarder_sent_total",
	"fleet_record_bytes_received_total",
	"fleet_records_received_total",
	"fleet_records_refused_total",
	"fleet_records_spooled_total",
	"fleet_records_unrouted_total",
	"fleet_spool_background_errors_total",
	"fleet_spool_bytes",
	"fleet_spool_commit_duration_seconds_count",
	"fleet_spool_commit_duration_seconds_sum",
	"fleet_spool_commit_errors_total",
	"fleet_spool_commits_total",
	"fleet_spool_degraded",
	"fleet_spool_disk_free_bytes",
	"fleet_spool_oldest_record_age_seconds",
	"fleet_spool_records",
	"fleet_spool_refused_total",
	"fleet_tls_handshakes_total",
	"fleet_websocket_upgrades_total",
	"process_cpu_seconds_total",
	"process_max_fds",
	"process_open_fds",
	"process_resident_memory_bytes",
	"record_size_bytes_total",
	"record_total",
}

// literalPrefix returns the string literal an expression starts with:
// "name" or "name" + label.
func literalPrefix(e ast.Expr) (string, bool) {
	for {
		switch x := e.(type) {
		case *ast.BasicLit:
			if x.Kind != token.STRING {
				return "", false
			}
			s, err := strconv.Unquote(x.Value)
			return s, err == nil
		case *ast.BinaryExpr:
			if x.Op != token.ADD {
				return "", false
			}
			e = x.X
		case *ast.ParenExpr:
			e = x.X
		default:
			return "", false
		}
	}
}

func callName(c *ast.CallExpr) string {
	switch f := c.Fun.(type) {
	case *ast.SelectorExpr:
		return f.Sel.Name
	case *ast.Ident:
		return f.Name
	}
	return ""
}

// exportedMetricNames scans the non-test Go files under dir for metric
// registrations (GetOrCreate*(name…) and metrics.New*(name…)) and, when
// writers is set, for direct writes (Write*(w, "name", …)) as the metrics
// library does for process metrics.
func exportedMetricNames(t *testing.T, dir string, writers bool) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(dir, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.IsDir() {
			switch de.Name() {
			case ".git", "node_modules", "testdata", "vendor", "bin", "var":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return fmt.Errorf("parse: %w", err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			c, ok := n.(*ast.CallExpr)
			if !ok || len(c.Args) == 0 {
				return true
			}
			fn := callName(c)
			var arg ast.Expr
			switch {
			case strings.HasPrefix(fn, "GetOrCreate"):
				arg = c.Args[0]
			case strings.HasPrefix(fn, "New") && isPkg(c, "metrics"):
				arg = c.Args[0]
			case writers && strings.HasPrefix(fn, "Write") && len(c.Args) >= 2:
				arg = c.Args[1]
			default:
				return true
			}
			s, ok := literalPrefix(arg)
			if !ok {
				return true
			}
			name, _, _ := strings.Cut(s, "{")
			if !regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`).MatchString(name) {
				return true
			}
			names[name] = true
			switch {
			case strings.Contains(fn, "Histogram"):
				names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
			case strings.Contains(fn, "Summary"):
				names[name+"_sum"], names[name+"_count"] = true, true
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatalf("scan %s: %v", dir, err)
	}
	return names
}

func isPkg(c *ast.CallExpr, pkg string) bool {
	s, ok := c.Fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	id, ok := s.X.(*ast.Ident)
	return ok && id.Name == pkg
}

// grafanaPanel is the part of a dashboard panel the test reads.
type grafanaPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"`
}

func TestDashboardMetricNames(t *testing.T) {
	b, err := os.ReadFile(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		SchemaVersion int    `json:"schemaVersion"`
		Title         string `json:"title"`
		UID           string `json:"uid"`
		Templating    struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []grafanaPanel `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s is not JSON: %v", dashboard, err)
	}
	if d.SchemaVersion < 36 || d.SchemaVersion > 41 {
		t.Errorf("schemaVersion %d, want about 39", d.SchemaVersion)
	}
	if d.Title == "" || d.UID == "" {
		t.Error("dashboard has no title or uid")
	}
	dsVar := ""
	for _, v := range d.Templating.List {
		if v.Type == "datasource" && v.Query == "prometheus" {
			dsVar = v.Name
		}
	}
	if dsVar == "" {
		t.Fatal("no Prometheus datasource variable in templating")
	}

	used := map[string]bool{}
	ids := map[int]string{}
	metricRe := regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	selectorRe := regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\{`)
	var walk func([]grafanaPanel)
	walk = func(ps []grafanaPanel) {
		for _, p := range ps {
			if prev, dup := ids[p.ID]; dup {
				t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
			}
			ids[p.ID] = p.Title
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			if p.Datasource == nil || p.Datasource.UID != "${"+dsVar+"}" {
				t.Errorf("panel %q does not use the ${%s} datasource variable", p.Title, dsVar)
			}
			for _, tg := range p.Targets {
				if strings.Count(tg.Expr, "(") != strings.Count(tg.Expr, ")") ||
					strings.Count(tg.Expr, "{") != strings.Count(tg.Expr, "}") ||
					strings.Count(tg.Expr, "[") != strings.Count(tg.Expr, "]") {
					t.Errorf("panel %q: unbalanced brackets in %q", p.Title, tg.Expr)
				}
				// Every selector carries the $instance matcher, so a metric
				// name is an identifier right before '{'.
				sels := selectorRe.FindAllStringSubmatch(tg.Expr, -1)
				for _, m := range sels {
					used[m[1]] = true
				}
				if n := strings.Count(tg.Expr, `instance=~"$instance"`); n != len(sels) {
					t.Errorf("panel %q: %d selectors but %d $instance matchers in %q", p.Title, len(sels), n, tg.Expr)
				}
				bare := regexp.MustCompile(`\{[^}]*\}|"[^"]*"`).ReplaceAllString(tg.Expr, "{}")
				for _, tok := range metricRe.FindAllString(bare, -1) {
					if !used[tok] && (strings.HasPrefix(tok, "fleet_") || strings.HasPrefix(tok, "process_")) {
						t.Errorf("panel %q: %s is used without the instance matcher in %q", p.Title, tok, tg.Expr)
					}
				}
			}
		}
	}
	walk(d.Panels)

	var usedList []string
	for n := range used {
		usedList = append(usedList, n)
	}
	sort.Strings(usedList)
	want := slices.Sorted(slices.Values(dashboardMetrics))
	if !slices.Equal(usedList, want) {
		t.Errorf("the dashboard's metric names differ from dashboardMetrics:\n got  %q\n want %q", usedList, want)
	}

	ours := exportedMetricNames(t, repoRoot, false)
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/VictoriaMetrics/metrics").Output()
	if err != nil {
		t.Fatalf("go list the metrics module: %v", err)
	}
	lib := exportedMetricNames(t, strings.TrimSpace(string(out)), true)
	for _, n := range dashboardMetrics {
		switch {
		case ours[n]:
		case strings.HasPrefix(n, "process_") && lib[n]:
		default:
			t.Errorf("dashboard metric %s is not exported by the daemon (no GetOrCreate* registers it)", n)
		}
	}
	// Guard the scanner itself: it must see the core metrics.
	for _, n := range []string{"fleet_connections_open", "fleet_ack_latency_seconds_bucket", "fleet_forwarder_lag_records"} {
		if !ours[n] {
			t.Fatalf("scanner found no %s; found %d names", n, len(ours))
		}
	}
}

package test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
)

// runBinary runs a command line in dir and returns its stdout, stderr and
// exit code.
func runBinary(t *testing.T, dir, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runBinaryEnv(t, dir, nil, bin, args...)
}

// runBinaryEnv is runBinary with the variables env added to the test's
// environment.
func runBinaryEnv(t *testing.T, dir string, env []string, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("%s %q: %v", bin, args, err)
	}
	return out.String(), errb.String(), code
}

var (
	benchOnce sync.Once
	benchBin  string
	benchErr  error
)

// benchBinary builds the load generator once.
func benchBinary(t *testing.T) string {
	t.Helper()
	benchOnce.Do(func() {
		benchBin = filepath.Join(filepath.Dir(binary), "bench")
		out, err := exec.Command("go", "build", "-o", benchBin, "../bench").CombinedOutput()
		if err != nil {
			benchErr = fmt.Errorf("build bench: %v\n%s", err, out)
		}
	})
	if benchErr != nil {
		t.Fatal(benchErr)
	}
	return benchBin
}

// TestCLIHelp: -h and --help on every command and subcommand print the
// usage on stdout, nothing on stderr, and exit 0.
func TestCLIHelp(t *testing.T) {
	commands := [][]string{
		{}, // fleet-telemetry -h
		{"serve"},
		{"check-config"},
		{"certs"},
		{"certs", "dev"},
		{"send"},
		{"spool"},
		{"spool", "stats"},
		{"spool", "ls"},
		{"spool", "cat"},
		{"spool", "tail"},
		{"spool", "verify"},
		{"spool", "export"},
		{"spool", "replay"},
		{"spool", "quarantine"},
		{"vehicle-config"},
		{"check-server"},
		{"conns"},
		{"status"},
		{"version"},
	}
	dir := t.TempDir() // nothing is created by asking for help
	for _, help := range []string{"-h", "--help"} {
		for _, cmd := range commands {
			args := append(append([]string(nil), cmd...), help)
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				out, errs, code := runBinary(t, dir, binary, args...)
				if code != 0 || errs != "" || !strings.HasPrefix(out, "usage:") {
					t.Fatalf("fleet-telemetry %s: exit %d, stdout %q, stderr %q; want the usage on stdout and exit 0",
						strings.Join(args, " "), code, out, errs)
				}
				if len(cmd) > 0 && !strings.Contains(strings.SplitN(out, "\n", 2)[0], cmd[len(cmd)-1]) {
					t.Errorf("the usage's first line does not name %s:\n%s", cmd[len(cmd)-1], out)
				}
			})
		}
		t.Run("bench "+help, func(t *testing.T) {
			out, errs, code := runBinary(t, dir, benchBinary(t), help)
			if code != 0 || errs != "" || !strings.HasPrefix(out, "usage: bench") || !strings.Contains(out, "-scenario") {
				t.Fatalf("bench %s: exit %d, stdout %q, stderr %q", help, code, out, errs)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Errorf("asking for help created %v", entries)
	}
	// A bad flag is still an error: the message and the usage on stderr, 2.
	out, errs, code := runBinary(t, dir, binary, "serve", "-no-such-flag")
	if code != 2 || out != "" || !strings.Contains(errs, "no-such-flag") || !strings.Contains(errs, "usage:") {
		t.Errorf("serve -no-such-flag: exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

// TestVersion: the version subcommand and flag print the module version,
// the VCS revision and the Go version; the daemon logs them at start and
// exports fleet_build_info.
func TestVersion(t *testing.T) {
	line := regexp.MustCompile(`^fleet-telemetry (\S+) \(revision (\S+), (go\S+)\)\n$`)
	var first string
	for _, args := range [][]string{{"version"}, {"-version"}, {"--version"}, {"serve", "-version"}} {
		out, errs, code := runBinary(t, t.TempDir(), binary, args...)
		m := line.FindStringSubmatch(out)
		if code != 0 || errs != "" || m == nil {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
		if m[3] != runtime.Version() {
			t.Errorf("%v: Go version %s, the test was built with %s", args, m[3], runtime.Version())
		}
		if first == "" {
			first = out
		} else if out != first {
			t.Errorf("%v prints %q, version printed %q", args, out, first)
		}
	}
	m := line.FindStringSubmatch(first)
	t.Logf("%s", strings.TrimSpace(first))

	configPath, _ := writeConfig(t, t.TempDir())
	d := startDaemon(t, configPath)
	var logged bool
	for _, l := range strings.Split(d.logText(), "\n") {
		var e struct{ Msg, Version, Revision, Go string }
		if json.Unmarshal([]byte(l), &e) == nil && e.Msg == "fleet-telemetry" {
			logged = true
			if e.Version != m[1] || e.Revision != m[2] || e.Go != m[3] {
				t.Errorf("logged %s, version printed %q", l, first)
			}
		}
	}
	if !logged {
		t.Errorf("no start line with the version:\n%s", d.logText())
	}
	series := fmt.Sprintf(`fleet_build_info{version="%s",revision="%s",goversion="%s"}`, m[1], m[2], m[3])
	if v := scrape(t, d.logText())[series]; v != 1 {
		t.Errorf("%s = %v, want 1", series, v)
	}
	d.stop(t)
}

// TestCheckConfig: check-config takes the file as its argument or with
// -config, and checks what a start would, naming every problem: the TLS
// files, the allowlist file, the spool directory.
func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	configPath, certs := writeConfig(t, dir)
	for _, args := range [][]string{{configPath}, {"-config", configPath}, {configPath, "-syntax-only"}} {
		out, errs, code := runBinary(t, dir, binary, append([]string{"check-config"}, args...)...)
		if code != 0 || out != "configuration ok\n" {
			t.Fatalf("check-config %v: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}

	// Everything a start would trip over, at once.
	d := devca.Dir{Path: certs}
	other := filepath.Join(dir, "other")
	if _, err := devca.WriteDir(other, nil); err != nil {
		t.Fatal(err)
	}
	badCA := filepath.Join(dir, "ca.txt")
	os.WriteFile(badCA, []byte("not a certificate\n"), 0o600)
	aFile := filepath.Join(dir, "a-file")
	os.WriteFile(aFile, nil, 0o600)
	broken := filepath.Join(dir, "broken.json")
	b, _ := os.ReadFile(configPath)
	os.WriteFile(broken, b, 0o600)
	editConfig(t, broken, func(c *config.Config) {
		c.TLS = config.TLS{
			ServerCert: d.File(devca.ServerCertFile),
			ServerKey:  devca.Dir{Path: other}.File(devca.ServerKeyFile), // another certificate's key
			CAFile:     badCA,
		}
		c.VINAllowlist = config.AllowlistFile(filepath.Join(dir, "no-such-allowlist.txt"))
		c.Spool = config.Spool{Dir: filepath.Join(aFile, "spool")}
	})
	out, errs, code := runBinary(t, dir, binary, "check-config", broken)
	if code != 1 || out != "" {
		t.Fatalf("check-config on a broken config: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	for _, want := range []string{
		"4 problem(s)",
		"tls.server_cert " + d.File(devca.ServerCertFile) + " and tls.server_key",
		"tls.ca_file " + badCA + " holds no PEM certificate",
		"vin_allowlist: stat " + filepath.Join(dir, "no-such-allowlist.txt") + ": no such file or directory",
		"spool.dir: stat " + filepath.Join(aFile, "spool") + ": not a directory",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("check-config does not say %q:\n%s", want, errs)
		}
	}
	t.Logf("check-config on a broken config:\n%s", errs)
	// Files that do not exist.
	editConfig(t, broken, func(c *config.Config) {
		c.TLS = config.TLS{ServerCert: filepath.Join(dir, "missing.crt"), ServerKey: filepath.Join(dir, "missing.key")}
		c.VINAllowlist = nil
		c.Spool = config.Spool{Dir: filepath.Join(dir, "new", "spool")}
	})
	_, errs, code = runBinary(t, dir, binary, "check-config", broken)
	if code != 1 || !strings.Contains(errs, "2 problem(s)") || !strings.Contains(errs, "missing.crt: no such file") || !strings.Contains(errs, "missing.key: no such file") {
		t.Errorf("missing TLS files: exit %d:\n%s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); err == nil {
		t.Error("check-config created the spool directory")
	}

	// A spool directory the daemon's user may not create.
	checkSpoolNotWritable(t)
}

// checkSpoolNotWritable runs check-config on a spool directory whose
// parent its user cannot write: as root, the command runs as nobody.
func checkSpoolNotWritable(t *testing.T) {
	t.Helper()
	dir, err := os.MkdirTemp("", "fleet-telemetry-checkconfig")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Chmod(filepath.Join(dir, "ro"), 0o755)
		os.RemoveAll(dir)
	})
	configPath, certs := writeConfig(t, dir)
	ro := filepath.Join(dir, "ro")
	os.Mkdir(ro, 0o755)
	editConfig(t, configPath, func(c *config.Config) { c.Spool = config.Spool{Dir: filepath.Join(ro, "spool")} })
	bin := filepath.Join(dir, "fleet-telemetry")
	raw, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "check-config", configPath)
	if os.Geteuid() == 0 {
		// Everything the command reads is readable by others; ro is not
		// writable by them.
		for _, p := range []string{dir, certs} {
			os.Chmod(p, 0o755)
		}
		filepath.Walk(certs, func(p string, fi os.FileInfo, _ error) error {
			if fi != nil && !fi.IsDir() {
				os.Chmod(p, 0o644)
			}
			return nil
		})
		os.Chmod(configPath, 0o644)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	} else {
		os.Chmod(ro, 0o555)
	}
	out, err := cmd.CombinedOutput()
	want := "spool.dir " + filepath.Join(ro, "spool") + " cannot be created: " + ro + " is not writable: permission denied"
	if err == nil || !strings.Contains(string(out), want) || !strings.Contains(string(out), "1 problem(s)") {
		t.Errorf("check-config with an unwritable spool parent: %v, want one problem %q:\n%s", err, want, out)
	}
}

// TestSpoolDevOnMakeRunsSpool follows the README's quick start in a fresh
// directory: `fleet-telemetry -dev` (what make run starts), `send`, then
// `spool -dev` reads the spool it made, through the running daemon's
// admin socket and, once it stopped, directly. The dev config's ports are
// fixed (4443, 9273): when they are taken, the test is skipped.
func TestSpoolDevOnMakeRunsSpool(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:4443", "127.0.0.1:9273"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Skipf("%s is taken (a make run here?): %v", addr, err)
		}
		ln.Close()
	}
	dir := t.TempDir()
	cmd := exec.Command(binary, "-dev")
	cmd.Dir = dir
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var mu sync.Mutex
	var logs []string
	listening := make(chan struct{}, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			logs = append(logs, sc.Text())
			mu.Unlock()
			if strings.Contains(sc.Text(), "msg=listening") {
				listening <- struct{}{}
			}
		}
		cmd.Wait()
		close(exited)
	}()
	logText := func() string { mu.Lock(); defer mu.Unlock(); return strings.Join(logs, "\n") }
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	})
	select {
	case <-listening:
	case <-exited:
		t.Fatalf("fleet-telemetry -dev exited:\n%s", logText())
	case <-time.After(20 * time.Second):
		t.Fatalf("fleet-telemetry -dev did not listen:\n%s", logText())
	}
	out, errs, code := runBinary(t, dir, binary, "send", "-n", "3")
	if code != 0 || strings.Count(out, "acked txid=") != 3 {
		t.Fatalf("send: exit %d\n%s%s", code, out, errs)
	}
	// Through the running daemon's admin socket.
	out, errs, code = runBinary(t, dir, binary, "spool", "-dev", "stats")
	if code != 0 || !strings.Contains(out, "running daemon") || !strings.Contains(out, "var/spool") {
		t.Fatalf("spool -dev stats on the running daemon: exit %d\n%s%s", code, out, errs)
	}
	live := devSpoolStats(t, dir, "admin")
	cmd.Process.Signal(syscall.SIGTERM)
	<-exited
	// Opened directly once the daemon stopped: the same spool. Its
	// records were forwarded (and trimmed) by then; their sequence
	// numbers stay.
	stopped := devSpoolStats(t, dir, "direct")
	if live.LastSeq < 3 || stopped.LastSeq < live.LastSeq {
		t.Errorf("last seq %d through the daemon, %d read directly; want at least the 3 records sent", live.LastSeq, stopped.LastSeq)
	}
	out, errs, code = runBinary(t, dir, binary, "check-config", "-dev")
	if code != 0 {
		t.Errorf("check-config -dev after a dev run: exit %d\n%s%s", code, out, errs)
	}
}

type devStats struct {
	Dir     string `json:"dir"`
	Source  string `json:"source"`
	LastSeq uint64 `json:"last_seq"`
}

// devSpoolStats runs spool -dev stats -json in dir and checks where it
// read from.
func devSpoolStats(t *testing.T, dir, source string) devStats {
	t.Helper()
	out, errs, code := runBinary(t, dir, binary, "spool", "-dev", "stats", "-json")
	var s devStats
	if code != 0 || json.Unmarshal([]byte(out), &s) != nil || s.Source != source || s.Dir != "var/spool" {
		t.Fatalf("spool -dev stats -json: exit %d, want source %s and dir var/spool\n%s%s", code, source, out, errs)
	}
	return s
}

// A key no section has is named at any depth, by check-config (both modes)
// and by the daemon's start, as a warning: the config still loads.
func TestUnknownNestedKeysAreNamed(t *testing.T) {
	dir := t.TempDir()
	configPath, _ := writeConfig(t, dir)
	raw, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatal(err)
	}
	// Typos a typed config cannot hold, written into the file's text.
	text := strings.Replace(string(raw), `"spool": {`, `"spool": {"max_byte": 5, `, 1)
	text = strings.Replace(text, `"tls": {`, `"tls": {"kafka_servers": "x", `, 1)
	if text == string(raw) || !json.Valid([]byte(text)) {
		t.Fatalf("could not add the typos:\n%s", text)
	}
	if err := os.WriteFile(configPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	want := []string{`warning: config key "spool.max_byte" is unknown and is ignored`, `warning: config key "tls.kafka_servers" is unknown and is ignored`}
	for _, args := range [][]string{{configPath}, {"-syntax-only", configPath}} {
		out, errs, code := runBinary(t, dir, binary, append([]string{"check-config"}, args...)...)
		if code != 0 || out != "configuration ok\n" {
			t.Fatalf("check-config %v: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
		for _, w := range want {
			if !strings.Contains(errs, w+"\n") {
				t.Errorf("check-config %v does not say %q:\n%s", args, w, errs)
			}
		}
	}
	d := startDaemon(t, configPath)
	for _, w := range []string{`config key \"spool.max_byte\" is unknown`, `config key \"tls.kafka_servers\" is unknown`} {
		if !strings.Contains(d.logText(), w) {
			t.Errorf("the start does not log %s:\n%s", w, d.logText())
		}
	}
	d.stop(t)
}

package test

import (
	"bufio"
	"bytes"
	"context"
	encbin "encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/internal/testkit"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// spoolCLIConfig routes V, alerts and errors to the logger and to a Kafka
// broker that is not there: the kafka forwarder never moves, so nothing is
// trimmed and the spool keeps every record (a sink outage, the case the
// spool command is for).
func spoolCLIConfig(t *testing.T, dir string) (configPath, certs, spoolDir string) {
	t.Helper()
	certs = filepath.Join(dir, "certs")
	if _, err := devca.WriteDir(certs, vins); err != nil {
		t.Fatal(err)
	}
	spoolDir = filepath.Join(dir, "spool")
	ds := []string{"logger", "kafka"}
	c := baseConfig(certs, spoolDir)
	c.Records = map[string][]string{"V": ds, "alerts": ds, "errors": ds}
	c.Kafka = config.Kafka{"bootstrap.servers": fmt.Sprintf("127.0.0.1:%d", e2e.FreePort(t))}
	// The kafka forwarder cannot drain: the stop waits this long.
	c.ShutdownTimeout = config.NewDuration(2 * time.Second)
	configPath = filepath.Join(dir, "config.json")
	writeConfigFile(t, configPath, c)
	return configPath, certs, spoolDir
}

type cliResult struct {
	stdout, stderr string
	code           int
}

// spoolCLI runs `fleet-telemetry spool ARGS`.
func spoolCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"spool"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cliResult{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		t.Fatalf("spool %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("spool %v did not finish within 30s", args)
	}
	return res
}

// mustCLI runs the command and fails unless it exits 0.
func mustCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	r := spoolCLI(t, args...)
	if r.code != 0 {
		t.Fatalf("spool %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, r.code, r.stdout, r.stderr)
	}
	return r
}

func cliDecodeJSON[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("output is not the expected JSON: %v\n%s", err, s)
	}
	return v
}

type cliStats struct {
	Source    string  `json:"source"`
	Records   int64   `json:"records"`
	Bytes     int64   `json:"bytes"`
	FirstSeq  uint64  `json:"first_seq"`
	NewestSeq uint64  `json:"newest_seq"`
	LastSeq   uint64  `json:"last_seq"`
	OldestMs  int64   `json:"oldest_received_at_ms"`
	NewestAge float64 `json:"newest_age_seconds"`
	Lanes     []struct {
		Name      string `json:"name"`
		Forwarder string `json:"forwarder"`
		Cursor    uint64 `json:"cursor"`
		Lag       int64  `json:"lag"`
		Active    bool   `json:"active"`
	} `json:"lanes"`
}

// forwarder sums up a forwarder's lanes: the slowest one's cursor and lag,
// and whether every one is active.
func (s cliStats) forwarder(name string) (cursor uint64, lag int64, ok bool) {
	first := true
	for _, l := range s.Lanes {
		if l.Forwarder != name {
			continue
		}
		if first || l.Cursor < cursor {
			cursor = l.Cursor
		}
		lag = max(lag, l.Lag)
		ok = (first || ok) && l.Active
		first = false
	}
	return cursor, lag, ok
}

type cliRecord struct {
	Seq          uint64          `json:"seq"`
	ReceivedAtMs int64           `json:"received_at_ms"`
	VIN          string          `json:"vin"`
	Topic        string          `json:"topic"`
	TxID         string          `json:"txid"`
	Size         int             `json:"size"`
	Error        string          `json:"error"`
	Record       json.RawMessage `json:"record"`
}

type cliVerify struct {
	Source   string `json:"source"`
	Records  int64  `json:"records"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Corrupt  []struct {
		Seq   uint64 `json:"seq"`
		Error string `json:"error"`
	} `json:"corrupt"`
	Accounting *struct {
		OK bool `json:"ok"`
	} `json:"accounting"`
	OK bool `json:"ok"`
}

type cliSent struct{ vin, topic string }

// cliTailProc is a running `spool tail -f`.
type cliTailProc struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *testkit.LockedBuffer
}

func startCLITail(t *testing.T, args ...string) *cliTailProc {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"spool", "tail", "-f"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	tp := &cliTailProc{cmd: cmd, lines: make(chan string, 1000), stderr: &testkit.LockedBuffer{}}
	cmd.Stderr = tp.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			tp.lines <- sc.Text()
		}
		close(tp.lines)
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return tp
}

func (tp *cliTailProc) next(t *testing.T, timeout time.Duration) cliRecord {
	t.Helper()
	select {
	case l, ok := <-tp.lines:
		if !ok {
			t.Fatalf("tail exited; stderr:\n%s", tp.stderr)
		}
		return cliDecodeJSON[cliRecord](t, l)
	case <-time.After(timeout):
		t.Fatalf("tail printed nothing within %s; stderr:\n%s", timeout, tp.stderr)
	}
	return cliRecord{}
}

// stop interrupts tail and checks it exits 0.
func (tp *cliTailProc) stop(t *testing.T) {
	t.Helper()
	_ = tp.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- tp.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("tail after SIGINT: %v\n%s", err, tp.stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("tail did not stop on SIGINT")
	}
}

func cliSendRecords(t *testing.T, addr, certs string, want map[string]cliSent, vin string, topics []string, n int, prefix string) {
	t.Helper()
	c := e2e.Dial(t, addr, certs, vin)
	var ms []*envelope.StreamMessage
	for i := range n {
		for _, topic := range topics {
			tx := fmt.Sprintf("%s-%s-%s-%d", prefix, vin, topic, i)
			ms = append(ms, newRecord(vin, topic, tx))
			want[tx] = cliSent{vin, topic}
		}
	}
	e2e.SendAndAck(t, c, ms)
	c.Close()
}

// checkExport parses `export --format jsonl` output against what was sent.
func checkCLIExport(t *testing.T, out string, want map[string]cliSent, wantN int) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != wantN {
		t.Fatalf("export: %d lines, want %d", len(lines), wantN)
	}
	var prev uint64
	for _, l := range lines {
		r := cliDecodeJSON[cliRecord](t, l)
		w, ok := want[r.TxID]
		if !ok || r.VIN != w.vin || r.Topic != w.topic || r.Seq <= prev || r.ReceivedAtMs == 0 {
			t.Fatalf("export line %s: want %+v (known %v), seq after %d", l, w, ok, prev)
		}
		prev = r.Seq
		var rec struct {
			VIN string `json:"vin"`
		}
		if err := json.Unmarshal(r.Record, &rec); err != nil || rec.VIN != w.vin {
			t.Fatalf("export record JSON has vin %q (%v), want %s", rec.VIN, err, w.vin)
		}
	}
}

// checkProtoExport reads the length-delimited stream of V payloads.
func checkCLIProtoExport(t *testing.T, out []byte, wantN int) {
	t.Helper()
	n := 0
	for len(out) > 0 {
		l, k := encbin.Uvarint(out)
		if k <= 0 || uint64(len(out)-k) < l {
			t.Fatalf("proto export: bad frame at entry %d", n)
		}
		var p pb.Payload
		if err := proto.Unmarshal(out[k:k+int(l)], &p); err != nil {
			t.Fatalf("proto export entry %d: %v", n, err)
		}
		if !strings.HasPrefix(p.Vin, "5YJ3E1EA1KF00000") || len(p.Data) == 0 {
			t.Fatalf("proto export entry %d: vin %q, %d datums", n, p.Vin, len(p.Data))
		}
		out = out[k+int(l):]
		n++
	}
	if n != wantN {
		t.Fatalf("proto export: %d entries, want %d", n, wantN)
	}
}

// checkReplay parses the logger lines a replay printed.
func checkCLIReplay(t *testing.T, r cliResult, want map[string]cliSent, wantN int) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != wantN {
		t.Fatalf("replay printed %d lines, want %d:\n%s\nstderr:\n%s", len(lines), wantN, r.stdout, r.stderr)
	}
	for _, l := range lines {
		var sl stdoutLine
		if err := json.Unmarshal([]byte(l), &sl); err != nil {
			t.Fatalf("replay line %q: %v", l, err)
		}
		if w, ok := want[sl.TxID]; !ok || w.vin != sl.VIN || w.topic != sl.Topic {
			t.Fatalf("replay line %q: not what was sent", l)
		}
	}
	if !strings.Contains(r.stderr, fmt.Sprintf("replayed %d records", wantN)) {
		t.Fatalf("replay summary missing:\n%s", r.stderr)
	}
}

func TestSpoolCLI(t *testing.T) {
	dir := t.TempDir()
	configPath, certs, spoolDir := spoolCLIConfig(t, dir)
	sock := filepath.Join(spoolDir, "admin.sock")
	d := startDaemon(t, configPath)
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket: %v %v", fi, err)
	}

	want := map[string]cliSent{}
	recordTopics := []string{"V", "alerts", "errors"}
	for _, vin := range vins {
		cliSendRecords(t, d.addr, certs, want, vin, recordTopics, 10, "a")
	}
	const n1 = 90
	set := map[string]bool{}
	for tx := range want {
		set[tx] = true
	}
	d.waitPrinted(t, set, 20*time.Second)
	cfg := []string{"-config", configPath}

	// --- through the admin socket of the running daemon
	t.Run("admin", func(t *testing.T) {
		// stats: the logger moves its cursor right after printing.
		var st cliStats
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			st = cliDecodeJSON[cliStats](t, mustCLI(t, append(cfg, "stats", "--json")...).stdout)
			if c, _, _ := st.forwarder("logger"); c == n1 || time.Now().After(deadline) {
				break
			}
		}
		if st.Source != "admin" || st.Records != n1 || st.FirstSeq != 1 || st.NewestSeq != n1 || st.LastSeq != n1 || st.Bytes == 0 || st.OldestMs == 0 {
			t.Fatalf("stats: %+v", st)
		}
		if c, lag, active := st.forwarder("kafka"); c != 0 || lag != n1 || !active {
			t.Fatalf("kafka forwarder: cursor %d lag %d active %v", c, lag, active)
		}
		if c, lag, _ := st.forwarder("logger"); c != n1 || lag != 0 {
			t.Fatalf("logger forwarder: cursor %d lag %d", c, lag)
		}
		human := mustCLI(t, append(cfg, "stats")...).stdout
		t.Logf("spool stats:\n%s", human)
		for _, s := range []string{"running daemon", "LANE", "kafka/V", "90"} {
			if !strings.Contains(human, s) {
				t.Fatalf("stats table lacks %q:\n%s", s, human)
			}
		}

		ls := cliDecodeJSON[[]cliRecord](t, mustCLI(t, append(cfg, "ls", "-n", "5", "--json")...).stdout)
		if len(ls) != 5 || ls[0].Seq != n1-4 || ls[4].Seq != n1 {
			t.Fatalf("ls: %+v", ls)
		}
		for _, r := range ls {
			if w := want[r.TxID]; w.vin != r.VIN || w.topic != r.Topic || r.Size == 0 {
				t.Fatalf("ls row %+v, sent %+v", r, w)
			}
		}
		lsFrom := cliDecodeJSON[[]cliRecord](t, mustCLI(t, append(cfg, "ls", "--from", "3", "-n", "2", "--topic", "V", "--json")...).stdout)
		if len(lsFrom) != 2 || lsFrom[0].Seq < 3 || lsFrom[0].Topic != "V" || lsFrom[1].Topic != "V" {
			t.Fatalf("ls --from --topic: %+v", lsFrom)
		}
		out := mustCLI(t, append(cfg, "ls")...).stdout
		t.Logf("spool ls:\n%s", out)
		if !strings.Contains(out, "SEQ") || !strings.Contains(out, "TXID") || strings.Count(out, "\n") != 21 {
			t.Fatalf("ls table:\n%s", out)
		}

		cat := cliDecodeJSON[cliRecord](t, mustCLI(t, append(cfg, "cat", "1", "--json")...).stdout)
		if w := want[cat.TxID]; cat.Seq != 1 || w.vin != cat.VIN || len(cat.Record) == 0 {
			t.Fatalf("cat 1: %+v", cat)
		}
		if r := spoolCLI(t, append(cfg, "cat", "9999")...); r.code != 1 || !strings.Contains(r.stderr, "not in the spool") {
			t.Fatalf("cat of a missing seq: %+v", r)
		}

		r := mustCLI(t, append(cfg, "verify", "--json", "--progress")...)
		v := cliDecodeJSON[cliVerify](t, r.stdout)
		if !v.OK || v.Source != "admin" || v.Records != n1 || len(v.Corrupt) != 0 {
			t.Fatalf("verify: %+v", v)
		}
		if !strings.Contains(r.stderr, "rec/s") {
			t.Fatalf("verify --progress drew no progress bar:\n%q", r.stderr)
		}

		checkCLIExport(t, mustCLI(t, append(cfg, "export", "--format", "jsonl")...).stdout, want, n1)
		checkCLIProtoExport(t, []byte(mustCLI(t, append(cfg, "export", "--format", "proto", "--topic", "V")...).stdout), 30)
		checkCLIReplay(t, mustCLI(t, append(cfg, "replay", "--sink", "logger", "--from", "10", "--to", "19")...), want, 10)

		// tail -f: the newest record of vins[1] first, then only the new
		// records of vins[1].
		tp := startCLITail(t, append(cfg, "--vin", vins[1], "-n", "1", "--json")...)
		if first := tp.next(t, 10*time.Second); first.VIN != vins[1] {
			t.Fatalf("tail's first record: %+v", first)
		}
		// vins[0]'s records come first in the spool: the filter must
		// skip them for vins[1]'s to be the next three lines.
		cliSendRecords(t, d.addr, certs, want, vins[0], []string{"V"}, 3, "tail")
		cliSendRecords(t, d.addr, certs, want, vins[1], []string{"V"}, 3, "tail")
		for i := range 3 {
			r := tp.next(t, 10*time.Second)
			if r.VIN != vins[1] || r.TxID != fmt.Sprintf("tail-%s-V-%d", vins[1], i) || r.Seq <= n1 || len(r.Record) == 0 {
				t.Fatalf("tail record %d: %+v", i, r)
			}
		}
		tp.stop(t)
		for l := range tp.lines { // closed once tail's stdout ends
			t.Fatalf("tail printed more than vins[1]'s three new records: %s", l)
		}

		// Opening the spool itself while the daemon runs fails at once.
		start := time.Now()
		r = spoolCLI(t, "-dir", spoolDir, "-admin", filepath.Join(dir, "nope.sock"), "stats")
		if r.code != 1 || !strings.Contains(r.stderr, "daemon running: use its admin socket") || time.Since(start) > 10*time.Second {
			t.Fatalf("direct open of a running daemon's spool: %+v after %s", r, time.Since(start))
		}
	})
	if t.Failed() {
		return
	}
	n2 := len(want) // 96
	set = map[string]bool{}
	for tx := range want {
		set[tx] = true
	}
	d.waitPrinted(t, set, 20*time.Second)

	// The kafka forwarder cannot drain: the stop waits out the shutdown
	// timeout (2s here) and the records stay in the spool.
	d.stop(t)
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Fatalf("admin socket left behind after a clean stop: %v", err)
	}

	// --- on the stopped daemon's spool, opened read-only
	t.Run("direct", func(t *testing.T) {
		st := cliDecodeJSON[cliStats](t, mustCLI(t, append(cfg, "stats", "--json")...).stdout)
		if st.Source != "direct" || st.Records != int64(n2) || st.FirstSeq != 1 || st.NewestSeq != uint64(n2) {
			t.Fatalf("stats: %+v", st)
		}
		if c, lag, _ := st.forwarder("kafka"); c != 0 || lag != int64(n2) {
			t.Fatalf("kafka forwarder: cursor %d lag %d", c, lag)
		}
		if c, lag, _ := st.forwarder("logger"); c != uint64(n2) || lag != 0 {
			t.Fatalf("logger forwarder: cursor %d lag %d", c, lag)
		}
		if out := mustCLI(t, "-dir", spoolDir, "stats").stdout; !strings.Contains(out, "stopped daemon") {
			t.Fatalf("stats -dir:\n%s", out)
		}
		ls := cliDecodeJSON[[]cliRecord](t, mustCLI(t, append(cfg, "ls", "-n", "3", "--json")...).stdout)
		if len(ls) != 3 || ls[2].Seq != uint64(n2) || want[ls[2].TxID].vin != vins[1] {
			t.Fatalf("ls: %+v", ls)
		}
		cat := cliDecodeJSON[cliRecord](t, mustCLI(t, append(cfg, "cat", "--json", "42")...).stdout)
		if w := want[cat.TxID]; cat.Seq != 42 || w.vin != cat.VIN || w.topic != cat.Topic || len(cat.Record) == 0 {
			t.Fatalf("cat 42: %+v", cat)
		}
		if out := mustCLI(t, append(cfg, "cat", "42")...).stdout; !strings.Contains(out, "\n  \"seq\": 42") {
			t.Fatalf("cat (human) is not indented JSON:\n%s", out)
		}
		v := cliDecodeJSON[cliVerify](t, mustCLI(t, append(cfg, "verify", "--json")...).stdout)
		if !v.OK || v.Source != "direct" || v.Records != int64(n2) || v.Accounting == nil || !v.Accounting.OK {
			t.Fatalf("verify: %+v", v)
		}
		checkCLIExport(t, mustCLI(t, append(cfg, "export", "--format", "jsonl")...).stdout, want, n2)
		out := filepath.Join(dir, "export.jsonl")
		mustCLI(t, append(cfg, "export", "--from", "20", "--to", "29", "-o", out)...)
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		checkCLIExport(t, string(b), want, 10)
		checkCLIProtoExport(t, []byte(mustCLI(t, append(cfg, "export", "--format", "proto", "--topic", "V", "--vin", vins[1])...).stdout), 13)
		checkCLIReplay(t, mustCLI(t, append(cfg, "replay", "--sink", "logger", "--topic", "alerts")...), want, 30)
		tail := strings.Split(strings.TrimSpace(mustCLI(t, append(cfg, "tail", "-n", "2", "--vin", vins[0], "--json")...).stdout), "\n")
		if len(tail) != 2 || cliDecodeJSON[cliRecord](t, tail[1]).TxID != "tail-"+vins[0]+"-V-2" {
			t.Fatalf("tail -n 2 --vin:\n%s", strings.Join(tail, "\n"))
		}

		// verify finds damaged records and names their seqs.
		restore := corruptSpoolRecords(t, spoolDir, map[uint64][]byte{
			5: {1, 0xff, 0xff}, // not a spool record
			7: spool.EncodeRecord(nil, &spool.Record{ReceivedAtMs: 1, VIN: vins[0], Topic: []byte("V"), TxID: []byte("x"), Payload: []byte{0xff, 0xff, 0xff}}),
		})
		r := spoolCLI(t, append(cfg, "verify", "--json")...)
		v = cliDecodeJSON[cliVerify](t, r.stdout)
		if r.code != 1 || v.OK || len(v.Corrupt) != 2 || v.Corrupt[0].Seq != 5 || v.Corrupt[1].Seq != 7 || v.Records != int64(n2) {
			t.Fatalf("verify of a damaged spool: exit %d %+v\n%s", r.code, v, r.stderr)
		}
		if !strings.Contains(v.Corrupt[1].Error, "payload") {
			t.Fatalf("seq 7's error does not blame the payload: %s", v.Corrupt[1].Error)
		}
		r = spoolCLI(t, append(cfg, "verify")...)
		t.Logf("spool verify:\n%s", r.stdout)
		if r.code != 1 || !strings.Contains(r.stdout, "corrupt record seq 5") || !strings.Contains(r.stdout, "corrupt record seq 7") {
			t.Fatalf("verify (human) of a damaged spool: %+v", r)
		}
		if ls := cliDecodeJSON[[]cliRecord](t, mustCLI(t, append(cfg, "ls", "--from", "5", "-n", "1", "--json")...).stdout); len(ls) != 1 || ls[0].Error == "" {
			t.Fatalf("ls of a damaged record: %+v", ls)
		}
		restore()
		if v := cliDecodeJSON[cliVerify](t, mustCLI(t, append(cfg, "verify", "--json")...).stdout); !v.OK {
			t.Fatalf("verify after the repair: %+v", v)
		}
	})
	if t.Failed() {
		return
	}

	// --- tail -f started with no daemon waits for one and follows it.
	t.Run("tail-across-start", func(t *testing.T) {
		tp := startCLITail(t, append(cfg, "-n", "0", "--json", "--topic", "alerts")...)
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(tp.stderr.String(), "waiting for the daemon") {
			if time.Now().After(deadline) {
				t.Fatalf("tail -f on a stopped spool does not say it waits: %q", tp.stderr)
			}
			time.Sleep(20 * time.Millisecond)
		}
		d2 := startDaemon(t, configPath) // the tail released the spool's lock
		cliSendRecords(t, d2.addr, certs, want, vins[2], []string{"V", "alerts"}, 2, "restart")
		for i := range 2 {
			r := tp.next(t, 15*time.Second)
			if r.Topic != "alerts" || r.Seq <= uint64(n2) || want[r.TxID].vin != vins[2] {
				t.Fatalf("tail record %d after the start: %+v", i, r)
			}
		}
		tp.stop(t)
		d2.kill()
	})
}

// corruptSpoolRecords overwrites records of a stopped spool in Pebble directly and
// returns a function putting the old values back.
func corruptSpoolRecords(t *testing.T, dir string, vals map[uint64][]byte) (restore func()) {
	t.Helper()
	key := func(seq uint64) []byte {
		k := []byte("r/\x00\x00\x00\x00\x00\x00\x00\x00")
		encbin.BigEndian.PutUint64(k[2:], seq)
		return k
	}
	write := func(vals map[uint64][]byte) map[uint64][]byte {
		db, err := pebble.Open(dir, &pebble.Options{Logger: cliQuietPebble{}})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		old := map[uint64][]byte{}
		for seq, v := range vals {
			cur, closer, err := db.Get(key(seq))
			if err != nil {
				t.Fatalf("seq %d: %v", seq, err)
			}
			old[seq] = bytes.Clone(cur)
			closer.Close()
			if err := db.Set(key(seq), v, pebble.Sync); err != nil {
				t.Fatal(err)
			}
		}
		return old
	}
	old := write(vals)
	return func() { write(old) }
}

// cliQuietPebble drops Pebble's log lines (WAL replay notes).
type cliQuietPebble struct{}

func (cliQuietPebble) Infof(string, ...any)  {}
func (cliQuietPebble) Errorf(string, ...any) {}
func (cliQuietPebble) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

package test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/test/kfakebroker/kfaketest"
)

// mountSmallFS mounts a size-limited tmpfs on a new directory and unmounts
// it when the test ends; it skips, saying why, where mounting is not
// possible (not root, no CAP_SYS_ADMIN, a container without mount rights),
// except under CI (e2e.UnderCI), where that is a failure: CI must allow it.
func mountSmallFS(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	mnt := filepath.Join(dir, "fs")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", mnt).CombinedOutput()
	if err != nil {
		e2e.Unavailable(t, "cannot mount a %s tmpfs here (needs root / CAP_SYS_ADMIN): %v: %s", size, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", mnt).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}

// fillFS writes a filler file until the file system is full and returns its
// path.
func fillFS(t *testing.T, dir string) string {
	t.Helper()
	path := fillFSLeaving(t, dir, 0)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The last pages.
	small := make([]byte, 512)
	for {
		if _, err := f.Write(small); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", path, err)
			}
			return path
		}
	}
}

// startOnFullDisk starts a logger daemon with its spool on an 8 MiB tmpfs
// (no free-space floor), has it ack 500 records, fills the disk and pushes
// until the daemon sheds with 1013. It returns the daemon, its setup, the
// txids acked and the filler's path.
func startOnFullDisk(t *testing.T, prefix string) (*daemon, relSetup, map[string]bool, string) {
	t.Helper()
	mnt := mountSmallFS(t, "8m")
	d, setup, all := startLoggerDaemonOn(t, mnt, new(int64), prefix+"-before")
	filler := fillFS(t, mnt)
	if shed, last := pushUntilShed(t, d, setup.Certs, prefix+"-full", all); !shed {
		t.Fatalf("a full disk did not shed vehicles with 1013: %s\n%s", last, d.logText())
	}
	return d, setup, all, filler
}

// waitPrintedByEither waits until every txid in all was printed by a or b
// (a daemon and the one restarted on its spool).
func waitPrintedByEither(t *testing.T, all map[string]bool, a, b *daemon, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; {
		seen := map[string]bool{}
		for _, l := range append(a.printed(), b.printed()...) {
			seen[l.TxID] = true
		}
		missing := 0
		for tx := range all {
			if !seen[tx] {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acked records printed by neither run:\n%s", missing, len(all), b.logText())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fillFSLeaving writes a filler file until the file system has about leave
// bytes free (never less) and returns its path.
func fillFSLeaving(t *testing.T, dir string, leave int64) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		free := int64(st.Bavail) * st.Bsize
		n := min(int64(len(chunk)), free-leave)
		if n < st.Bsize {
			return path
		}
		if _, err := f.Write(chunk[:n]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return path // the daemon wrote meanwhile: full already
			}
			t.Fatalf("fill %s: %v", path, err)
		}
	}
}

// codeErrorReply is what pushUntilRefused returns as its code when the
// daemon answered a record with an error reply: not a close code, and not 0
// (the limit was reached), so a caller checking code != 0 fails on it.
const codeErrorReply = -2

// pushUntilRefused sends pipelined batches on one connection until the
// daemon refuses (close 1013, another close or an error reply) or limit
// records were acked; it returns the acked txids and the close code seen:
// 0 only when limit records were acked, codeErrorReply after an error
// reply, -1 when dialling, sending or reading failed without a close code.
func pushUntilRefused(t *testing.T, d *daemon, certs, prefix string, limit int) (acked map[string]bool, code int, detail string) {
	t.Helper()
	acked = map[string]bool{}
	vin := relVINs[0]
	c, err := e2e.TryDial(d.addr, certs, vin)
	if err != nil {
		return acked, -1, "dial failed: " + err.Error()
	}
	defer c.Close()
	for b := 0; len(acked) < limit; b++ {
		batch := make([]*envelope.StreamMessage, 50)
		for j := range batch {
			batch[j] = newRecord(vin, "V", fmt.Sprintf("%s-%05d-%02d", prefix, b, j))
		}
		if err := c.SendMany(batch); err != nil {
			return acked, -1, "send: " + err.Error()
		}
		for range batch {
			r, err := c.ReadReply(15 * time.Second)
			if err != nil {
				code := closeCode(err)
				if code == 0 {
					code = -1 // not a close (a timeout, a reset): not "limit reached"
				}
				return acked, code, err.Error()
			}
			if !r.Ack {
				return acked, codeErrorReply, fmt.Sprintf("error reply %+v", r)
			}
			acked[r.TxID] = true
		}
	}
	return acked, 0, "limit reached"
}

// sendOneAcked dials and sends one record; it reports whether it was acked
// (and otherwise why not).
func sendOneAcked(d *daemon, certs, tx string) (bool, string) {
	c := dialNoFail(d.addr, certs, relVINs[1])
	if c == nil {
		return false, "dial failed"
	}
	defer c.Close()
	if err := c.Send(newRecord(relVINs[1], "V", tx)); err != nil {
		return false, err.Error()
	}
	r, err := c.ReadReply(10 * time.Second)
	if err != nil {
		return false, err.Error()
	}
	if !r.Ack || r.TxID != tx {
		return false, fmt.Sprintf("reply %+v", r)
	}
	return true, ""
}

// waitAcked retries sendOneAcked until a record is acked or timeout; it
// returns the acked txid ("" on timeout) and the last failure.
func waitAcked(d *daemon, certs, prefix string, timeout time.Duration) (string, string, time.Duration) {
	start := time.Now()
	last := ""
	for i := 0; time.Since(start) < timeout; i++ {
		tx := fmt.Sprintf("%s-%03d", prefix, i)
		ok, why := sendOneAcked(d, certs, tx)
		if ok {
			return tx, last, time.Since(start)
		}
		last = why
		time.Sleep(200 * time.Millisecond)
	}
	return "", last, time.Since(start)
}

// TestReliabilityDiskFullSoftLimit puts the spool on an 8 MB tmpfs with
// spool.max_bytes = 512 KiB and a Kafka forwarder whose broker is paused
// (SIGSTOP): the spool fills to its budget, vehicles are shed with close
// 1013 and counted (spool_full), the daemon stays up; once the broker runs
// again the forwarder drains, space returns and acks resume; every acked
// record reaches Kafka and stdout.
func TestReliabilityDiskFullSoftLimit(t *testing.T) {
	kfaketest.RequireKcat(t)
	mnt := mountSmallFS(t, "8m")
	broker := startRelBroker(t, "")
	dir := t.TempDir()
	setup := relWriteConfig(t, dir, relConfig{
		Records:  map[string][]string{"V": {"kafka", "logger"}},
		Kafka:    broker.Addr,
		SpoolDir: filepath.Join(mnt, "spool"),
		MaxBytes: 512 << 10,
		// The budget is under test, not the free-space floor (whose 128
		// MiB default is more than this file system).
		MinFreeBytes: new(int64),
	})
	d := startDaemon(t, setup.ConfigPath)
	all := map[string]bool{}
	if tx, why, _ := waitAcked(d, setup.Certs, "soft-warm", 10*time.Second); tx == "" {
		t.Fatalf("no ack before the test started: %s", why)
	} else {
		all[tx] = true
	}

	signalBroker(t, broker, syscall.SIGSTOP)
	before := setup.metrics(t)
	acked, code, detail := pushUntilRefused(t, d, setup.Certs, "soft", 20000)
	for tx := range acked {
		all[tx] = true
	}
	t.Logf("broker paused: %d records acked, then %s (close %d)", len(acked), detail, code)
	if code != 1013 {
		t.Fatalf("the spool filling did not shed the vehicle with 1013: %s", detail)
	}
	if ok, why := sendOneAcked(d, setup.Certs, "soft-while-full"); ok {
		t.Fatalf("a record was acked while the spool was full")
	} else if !d.alive() {
		t.Fatalf("daemon died while full:\n%s", d.logText())
	} else {
		t.Logf("new connection while full: %s", why)
	}
	after := setup.metrics(t)
	if n := after[refused("spool_full")] - before[refused("spool_full")]; n < 1 {
		t.Errorf("spool_full refusals did not move (%v → %v)", before[refused("spool_full")], after[refused("spool_full")])
	}
	t.Logf("while full: fleet_spool_bytes=%.0f fleet_spool_records=%.0f lag{kafka}=%.0f lag{logger}=%.0f",
		after["fleet_spool_bytes"], after["fleet_spool_records"],
		after[`fleet_forwarder_lag_records{forwarder="kafka"}`], after[`fleet_forwarder_lag_records{forwarder="logger"}`])
	if after[`fleet_forwarder_lag_records{forwarder="kafka"}`] <= 0 {
		t.Errorf("kafka lag gauge shows no backlog while the broker is paused")
	}

	signalBroker(t, broker, syscall.SIGCONT)
	tx, why, took := waitAcked(d, setup.Certs, "soft-resumed", 60*time.Second)
	if tx == "" {
		t.Fatalf("acks did not resume within 60s after the broker came back: %s\n%s", why, d.logText())
	}
	all[tx] = true
	t.Logf("acks resumed %s after the broker came back", took.Round(time.Millisecond))

	d.waitPrinted(t, all, 30*time.Second)
	got, missing, err := waitKafka(broker.Addr, all, 60*time.Second, "V")
	if err != nil || missing > 0 {
		t.Fatalf("%d of %d acked records not in Kafka (err %v)", missing, len(all), err)
	}
	_, dup := lostAndDup(all, got)
	t.Logf("%d acked records all in Kafka (%d duplicates) and on stdout", len(all), dup)
	d.stop(t)
}

// TestReliabilityDiskFullENOSPC fills the spool's file system with a
// filler file (no max_bytes): commits fail with ENOSPC, vehicles are shed
// with 1013, the daemon keeps running; once the filler is deleted acks
// resume, and every record acked before, during and after is printed.
func TestReliabilityDiskFullENOSPC(t *testing.T) {
	mnt := mountSmallFS(t, "8m")
	// No free-space floor: a commit must hit ENOSPC.
	d, setup, all := startLoggerDaemonOn(t, mnt, new(int64), "hard-before")

	filler := fillFS(t, mnt)
	before := setup.metrics(t)
	start := time.Now()
	shed, lastDetail := pushUntilShed(t, d, setup.Certs, "hard-full", all)
	if !shed {
		// Refused dials may be a daemon on its way out: give its exit
		// (and its last log lines) a moment to show.
		select {
		case <-d.exited:
		case <-time.After(2 * time.Second):
		}
	}
	if !d.alive() {
		t.Fatalf("BUG: the daemon died on ENOSPC (exit %v):\n%s", d.cmd.ProcessState, d.logText())
	}
	if !shed {
		t.Fatalf("a full disk did not shed vehicles with 1013 within %s: %s\n%s\ndaemon log:\n%s", time.Since(start).Round(time.Millisecond), lastDetail, diagnose(d, setup), d.logText())
	}
	// Still full: new records are not acked, and the daemon stays up.
	time.Sleep(1 * time.Second)
	if ok, why := sendOneAcked(d, setup.Certs, "hard-still-full"); ok {
		t.Logf("NOTE: a record was acked while the disk is still full (the spool found room): %s", why)
		all["hard-still-full"] = true
	}
	if !d.alive() {
		t.Fatalf("BUG: the daemon died while the disk stayed full:\n%s", d.logText())
	}
	after := setup.metrics(t)
	t.Logf("refusals while full: spool_commit_failed +%.0f, spool_busy +%.0f, spool_full +%.0f; fleet_spool_commit_errors_total +%.0f",
		after[refused("spool_commit_failed")]-before[refused("spool_commit_failed")],
		after[refused("spool_busy")]-before[refused("spool_busy")],
		after[refused("spool_full")]-before[refused("spool_full")],
		after["fleet_spool_commit_errors_total"]-before["fleet_spool_commit_errors_total"])

	// The failed commit's reopen waits for room instead of letting Pebble
	// retry its flush of the replayed log in a tight loop, and what
	// background errors there are reach the log throttled.
	logText := d.logText()
	if !strings.Contains(logText, "disk too full to reopen the spool") {
		t.Errorf("no 'disk too full to reopen' line while the disk was full:\n%s", logText)
	}
	if n := strings.Count(logText, "background error"); n > 5 {
		t.Errorf("%d background error lines in the daemon log while the disk was full (want them throttled)", n)
	}

	freeAndResume(t, d, setup, filler, "hard-resumed", all)
	acked, code, detail := pushUntilRefused(t, d, setup.Certs, "hard-after", 500)
	if code != 0 {
		t.Fatalf("after space returned: %s", detail)
	}
	for tx := range acked {
		all[tx] = true
	}
	d.waitPrinted(t, all, 30*time.Second)
	t.Logf("all %d acked records printed (before, while and after the disk was full)", len(all))
	d.stop(t)
	// And a restart on that spool starts (nothing left corrupt).
	d2 := startDaemon(t, setup.ConfigPath)
	if ok, why := sendOneAcked(d2, setup.Certs, "hard-restart"); !ok {
		t.Fatalf("after a restart on the spool that was full: %s\n%s", why, d2.logText())
	}
	d2.stop(t)
}

// TestReliabilityDiskFreeSpaceFloor: with spool.min_free_bytes the daemon
// stops taking records while the disk's free space is under the floor,
// before any commit can fail: vehicles are shed with 1013, no commit error
// happens, and acks resume once space returns; every acked record is
// printed.
func TestReliabilityDiskFreeSpaceFloor(t *testing.T) {
	mnt := mountSmallFS(t, "8m")
	floor := int64(2 << 20)
	d, setup, all := startLoggerDaemonOn(t, mnt, &floor, "floor-before")

	// Leave 1 MiB free: under the floor, but room for the commits of what
	// was taken before the floor was noticed. Never fuller than that: a
	// cursor write landing while the disk was full for a moment would fail
	// its commit (this test filled to the brim and truncated, and failed
	// that way about half the time on a slow machine).
	filler := fillFSLeaving(t, mnt, 1<<20)
	// Another process filled the disk: the daemon learns of it at its next
	// probe (every 250 ms). Records pushed before that may find the disk
	// full (the README says so); this test is about what happens after.
	for deadline := time.Now().Add(5 * time.Second); setup.metrics(t)["fleet_spool_disk_free_bytes"] >= float64(floor); {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon's free-space gauge did not fall under the floor within 5 s:\n%s", d.logText())
		}
		time.Sleep(50 * time.Millisecond)
	}
	before := setup.metrics(t)
	if shed, _ := pushUntilShed(t, d, setup.Certs, "floor-low", all); !shed {
		t.Fatalf("free space under the floor did not shed vehicles with 1013:\n%s", d.logText())
	}
	after := setup.metrics(t)
	if n := after["fleet_spool_commit_errors_total"] - before["fleet_spool_commit_errors_total"]; n != 0 {
		t.Errorf("%.0f commits failed: the floor should refuse records before the disk is full", n)
	}
	if after[`fleet_spool_refused_total{reason="low_disk"}`] == 0 {
		t.Errorf("no low_disk refusal counted")
	}
	if !strings.Contains(d.logText(), "free disk space under the floor") {
		t.Errorf("the daemon did not log that free space is under the floor:\n%s", d.logText())
	}

	freeAndResume(t, d, setup, filler, "floor-resumed", all)
	d.waitPrinted(t, all, 30*time.Second)
	t.Logf("all %d acked records printed", len(all))
	d.stop(t)
}

// TestReliabilityStopWhileDiskFull: a stop (SIGTERM, as systemctl stop
// sends) while the disk is still full ends the daemon promptly (well
// within systemd's TimeoutStopSec, 40 s in our unit; it took the whole
// 25 s shutdown timeout before), cleanly; once space is back a restart
// on that spool forwards whatever the first run had acked but not yet
// printed: every acked record is printed by one run or the other.
func TestReliabilityStopWhileDiskFull(t *testing.T) {
	d, setup, all, filler := startOnFullDisk(t, "stop")
	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The forwarders cannot read the spool until space is freed: the stop
	// does not wait for that (it waited the whole 25 s shutdown timeout).
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("the daemon did not stop within 10 s of SIGTERM with the disk full:\n%s", d.logText())
	}
	code := d.cmd.ProcessState.ExitCode()
	t.Logf("stopped %s after SIGTERM with the disk full, exit status %d", time.Since(start).Round(time.Millisecond), code)
	if code != 0 {
		t.Fatalf("exit status %d stopping with the disk full:\n%s", code, d.logText())
	}
	// While running, a forwarder that tried to read the spool (reopening,
	// for lack of room) logged one line per busy spell, not one per retry
	// (it was one every 100 ms); one with nothing new to read logged none.
	if n := strings.Count(d.logText(), "spool busy"); n > 3 {
		t.Errorf("%d 'spool busy' lines while the disk was full (want at most 1 per spell):\n%s", n, d.logText())
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	d2 := startDaemon(t, setup.ConfigPath)
	waitPrintedByEither(t, all, d, d2, 30*time.Second)
	t.Logf("all %d acked records printed (%d by the restarted daemon)", len(all), len(d2.printed()))
	// Records left for the restart: the stop said why it did not drain.
	if len(d2.printed()) > 0 && !strings.Contains(d.logText(), "reopening waits for free space") {
		t.Errorf("no line says the forwarder did not drain for lack of disk space:\n%s", d.logText())
	}
	// Stopped at once after starting: the signal arrives early in its
	// life and still gets the graceful stop (exit status 0), not the
	// default action.
	d2.stop(t)
}

// TestReliabilityStartWhileDiskFull: a daemon started on a disk too full
// to replay its spool's logs says so and waits (before, Pebble retried the
// replay's flush inside Open: no line saying why, never READY, killed by
// systemd's start timeout and restarted, over and over). A stop while it
// waits is a clean exit; once space is freed it opens the spool and
// forwards what the previous run had acked.
func TestReliabilityStartWhileDiskFull(t *testing.T) {
	d, setup, all, filler := startOnFullDisk(t, "start")
	d.stop(t)

	// Started while full: it waits, and a stop ends it cleanly.
	cmd := exec.Command(binary, "-config", setup.ConfigPath)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitingLine := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "disk too full to open the spool") {
				waitingLine <- sc.Text()
			}
		}
		close(waitingLine)
	}()
	select {
	case line, ok := <-waitingLine:
		if !ok {
			t.Fatalf("the daemon exited without saying the disk is too full: %v", cmd.Wait())
		}
		t.Logf("started while full: %s", line)
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("no 'disk too full to open the spool' line within 20 s of starting on a full disk")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("stopped while waiting for space: %v", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("SIGTERM did not stop a daemon waiting for disk space within 10 s")
	}

	// Started while full, space freed 4 s later: it opens and serves.
	freed := make(chan struct{})
	go func() {
		defer close(freed)
		time.Sleep(4 * time.Second)
		os.Remove(filler)
	}()
	start := time.Now()
	d2 := startDaemon(t, setup.ConfigPath)
	<-freed
	t.Logf("listening %s after start, space freed after 4 s", time.Since(start).Round(time.Millisecond))
	logText := d2.logText()
	if n := strings.Count(logText, "disk too full to open the spool"); n != 1 {
		t.Errorf("%d 'disk too full to open' lines, want 1:\n%s", n, logText)
	}
	if !strings.Contains(logText, "disk has room again") {
		t.Errorf("no 'disk has room again' line:\n%s", logText)
	}
	waitPrintedByEither(t, all, d, d2, 30*time.Second)
	if ok, why := sendOneAcked(d2, setup.Certs, "start-after"); !ok {
		t.Fatalf("after space returned: %s", why)
	}
	d2.stop(t)
}

// startLoggerDaemonOn starts a daemon with its spool in mnt (records V to
// the logger; minFree is spool.min_free_bytes, nil for the default) and
// has it ack 500 records, whose txids it returns.
func startLoggerDaemonOn(t *testing.T, mnt string, minFree *int64, prefix string) (*daemon, relSetup, map[string]bool) {
	t.Helper()
	setup := relWriteConfig(t, t.TempDir(), relConfig{
		Records:      map[string][]string{"V": {"logger"}},
		SpoolDir:     filepath.Join(mnt, "spool"),
		MinFreeBytes: minFree,
	})
	d := startDaemon(t, setup.ConfigPath)
	acked, code, detail := pushUntilRefused(t, d, setup.Certs, prefix, 500)
	if code != 0 || len(acked) < 500 {
		t.Fatalf("before filling: %s", detail)
	}
	return d, setup, acked
}

// freeAndResume deletes the filler and waits (up to 60 s) for an ack,
// adding its txid to all.
func freeAndResume(t *testing.T, d *daemon, setup relSetup, filler, tx string, all map[string]bool) {
	t.Helper()
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	acked, why, took := waitAcked(d, setup.Certs, tx, 60*time.Second)
	if acked == "" {
		t.Fatalf("acks did not resume within 60s after space returned: %s\n%s", why, d.logText())
	}
	all[acked] = true
	t.Logf("acks resumed %s after the filler was deleted", took.Round(time.Millisecond))
}

// pushUntilShed pushes batches on new connections, at most 20, until the
// daemon closes one with 1013 (or dies); acked txids are added to all. It
// returns whether the daemon shed, and what happened last.
func pushUntilShed(t *testing.T, d *daemon, certs, prefix string, all map[string]bool) (bool, string) {
	t.Helper()
	var last string
	for i := 0; i < 20 && d.alive(); i++ {
		acked, code, detail := pushUntilRefused(t, d, certs, fmt.Sprintf("%s%02d", prefix, i), 20000)
		for tx := range acked {
			all[tx] = true
		}
		last = fmt.Sprintf("%d acked, then %s", len(acked), detail)
		t.Logf("%s, attempt %d: %s", prefix, i, last)
		if code == 1013 {
			return true, last
		}
	}
	return false, last
}

// diagnose describes a live daemon that stopped answering: its open
// descriptors, its connection refusal counters and its goroutines.
func diagnose(d *daemon, setup relSetup) string {
	var b strings.Builder
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid))
	fmt.Fprintf(&b, "open descriptors: %d (%v)\n", len(fds), err)
	if page, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/metrics", setup.MetricsPort)); err == nil {
		for _, line := range strings.Split(page, "\n") {
			if strings.HasPrefix(line, "fleet_connections_refused_total") || strings.HasPrefix(line, "fleet_connections") {
				fmt.Fprintln(&b, line)
			}
		}
	} else {
		fmt.Fprintf(&b, "metrics: %v\n", err)
	}
	if page, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/goroutine?debug=2", setup.PprofPort)); err == nil {
		fmt.Fprintf(&b, "goroutines:\n%s\n", page)
	} else {
		fmt.Fprintf(&b, "goroutines: %v\n", err)
	}
	return b.String()
}

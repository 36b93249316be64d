package test

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
)

// TestGracefulShutdownUnderLoad sends SIGTERM while vehicles push records:
// the daemon stops taking records, sends the acks it owes, closes every
// vehicle with 1001 and exits 0; every acked record is printed, by this
// run or (if the forwarder had not reached it) by the next one.
func TestGracefulShutdownUnderLoad(t *testing.T) {
	dir := t.TempDir()
	configPath, certs := writeConfig(t, dir)
	d := startDaemon(t, configPath)

	var mu sync.Mutex
	acked := map[string]bool{}
	closes := map[ws.StatusCode]int{}
	var wg sync.WaitGroup
	for k, vin := range vins {
		c := e2e.Dial(t, d.addr, certs, vin)
		wg.Add(2)
		stop := make(chan struct{})
		go func() { // writer: keeps records in flight until the server closes
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				batch := make([]*envelope.StreamMessage, 0, 10)
				for j := range 10 {
					batch = append(batch, newRecord(vin, "V", fmt.Sprintf("gs-%d-%d-%d", k, i, j)))
				}
				if c.SendMany(batch) != nil {
					return
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
		go func() { // reader: collects acks until the close frame
			defer wg.Done()
			defer close(stop)
			for {
				r, err := c.ReadReply(30 * time.Second)
				var ce *vehicle.CloseError
				if errors.As(err, &ce) {
					mu.Lock()
					closes[ce.Code]++
					mu.Unlock()
					return
				}
				if err != nil {
					return
				}
				if !r.Ack {
					t.Errorf("error reply %+v", r)
					return
				}
				mu.Lock()
				acked[r.TxID] = true
				mu.Unlock()
			}
		}()
	}
	time.Sleep(700 * time.Millisecond)
	d.stop(t) // SIGTERM; fails the test unless the exit is clean (code 0)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(acked) == 0 {
		t.Fatal("no record was acked before the shutdown")
	}
	if closes[ws.StatusGoingAway] != len(vins) {
		t.Fatalf("close codes %v, want 1001 for each of %d vehicles", closes, len(vins))
	}
	printed := map[string]bool{}
	for _, l := range d.printed() {
		printed[l.TxID] = true
	}
	missing := map[string]bool{}
	for tx := range acked {
		if !printed[tx] {
			missing[tx] = true
		}
	}
	t.Logf("%d records acked; %d printed before exit, %d left for the next run", len(acked), len(acked)-len(missing), len(missing))
	if len(missing) > 0 {
		d2 := startDaemon(t, configPath)
		d2.waitPrinted(t, missing, 30*time.Second)
		d2.stop(t)
	}
}

// TestSIGHUPReloadsCertificates replaces the server certificate and sends
// SIGHUP: an established vehicle keeps working, new handshakes see the new
// certificate, and a broken file keeps the old one with a log line saying
// why.
func TestSIGHUPReloadsCertificates(t *testing.T) {
	dir := t.TempDir()
	configPath, certs := writeConfig(t, dir)
	d := startDaemon(t, configPath)
	dd := devca.Dir{Path: certs}

	serverSerial := func() string {
		cfg, err := vehicle.TLSFromDir(certs, vins[1])
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.Dial("tcp", d.addr, cfg)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	established := e2e.Dial(t, d.addr, certs, vins[0])
	before := serverSerial()

	ca, err := devca.Load(dd.File(devca.CACertFile), dd.File(devca.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	_, certPEM, keyPEM, err := ca.Issue(devca.Options{CommonName: "localhost", Hosts: []string{"127.0.0.1", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(dd.File(devca.ServerKeyFile), keyPEM, 0o600)
	os.WriteFile(dd.File(devca.ServerCertFile), certPEM, 0o644)
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, d, "reloaded TLS certificates")
	after := serverSerial()
	if after == before {
		t.Fatal("new handshakes still get the old certificate after SIGHUP")
	}
	e2e.SendAndAck(t, established, []*envelope.StreamMessage{newRecord(vins[0], "V", "still-open")})

	// A broken certificate file: the reload is refused, the old one stays.
	os.WriteFile(dd.File(devca.ServerCertFile), []byte("not a certificate"), 0o644)
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, d, "reload failed")
	if got := serverSerial(); got != after {
		t.Fatalf("after a failed reload the server presents %s, want the previous %s", got, after)
	}
	e2e.SendAndAck(t, established, []*envelope.StreamMessage{newRecord(vins[0], "V", "still-open-2")})
}

func waitLog(t *testing.T, d *daemon, msg string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(d.logText(), msg) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the logs:\n%s", msg, d.logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/wsframe"
)

// restartWithin is how soon a new daemon must listen on the ports the
// previous one held.
const restartWithin = 2 * time.Second

// TestRestartOnBusyPort runs the daemon on fixed ports (vehicles, metrics,
// profiler, status), has it close connections itself so that their
// sockets sit in TIME_WAIT on those ports, and restarts it on the same
// ports, after (a) SIGKILL and (b) SIGTERM: each time the new daemon must
// listen within 2 s and take records. The ports are found free once and
// then reused for every daemon of the test, so parallel test processes do
// not collide.
func TestRestartOnBusyPort(t *testing.T) {
	dir := t.TempDir()
	configPath, certs := writeConfig(t, dir)
	port, statusPort, metricsPort, pprofPort := e2e.FreePort(t), e2e.FreePort(t), e2e.FreePort(t), e2e.FreePort(t)
	editConfig(t, configPath, func(c *config.Config) {
		c.Port = port
		c.StatusPort = statusPort
		c.VINAllowlist = config.AllowlistOf(vins[:2]...) // vins[2] gets 403
		c.Monitoring = &config.Monitoring{PrometheusMetricsPort: metricsPort, ProfilerPort: pprofPort}
	})
	httpPorts := []struct {
		name, path string
		port       int
	}{{"status", "/status", statusPort}, {"metrics", "/metrics", metricsPort}, {"pprof", "/debug/pprof/", pprofPort}}

	d := startDaemon(t, configPath)
	if want := fmt.Sprintf("127.0.0.1:%d", port); d.addr != want {
		t.Fatalf("daemon listens on %s, want %s", d.addr, want)
	}
	secondDaemonFails(t, dir, certs, port)

	for round, how := range []struct {
		name string
		stop func(*daemon)
	}{
		{"SIGKILL", func(d *daemon) { d.kill() }},
		{"SIGTERM", func(d *daemon) { d.stop(t) }},
	} {
		takesRecords(t, d, certs, fmt.Sprintf("before-%s", how.name))
		closed := closeConnectionsFromTheDaemon(t, d, certs)
		// A vehicle stays connected across the stop: SIGKILL closes its
		// socket from the daemon's side too, SIGTERM with close 1001.
		open := e2e.Dial(t, d.addr, certs, vins[1])
		for _, h := range httpPorts {
			closedHTTP(t, h.name, fmt.Sprintf("127.0.0.1:%d", h.port), h.path)
		}
		tw := waitTimeWait(t, port, 10)
		t.Logf("%s: the daemon closed %d vehicle connections itself; %d sockets in TIME_WAIT on port %d", how.name, closed, tw, port)
		for _, h := range httpPorts {
			waitTimeWait(t, h.port, 1)
		}

		how.stop(d)
		open.Close()
		stopped := time.Now()
		next := startDaemon(t, configPath)
		took := time.Since(stopped)
		t.Logf("after %s: a new daemon listens on %s %v after the old one exited", how.name, next.addr, took.Round(time.Millisecond))
		if took > restartWithin {
			t.Errorf("after %s the new daemon listened %v after the old one exited, want within %v", how.name, took, restartWithin)
		}
		if next.addr != d.addr {
			t.Fatalf("the new daemon listens on %s, the old one did on %s", next.addr, d.addr)
		}
		for _, h := range httpPorts {
			if err := httpOK(fmt.Sprintf("http://127.0.0.1:%d%s", h.port, h.path)); err != nil {
				t.Errorf("after %s, %s port: %v", how.name, h.name, err)
			}
		}
		takesRecords(t, next, certs, fmt.Sprintf("after-%s-%d", how.name, round))
		d = next
	}
	d.stop(t)
}

// closeConnectionsFromTheDaemon makes the daemon close 12 vehicle
// connections itself: handshakes with a certificate from an unknown CA,
// WebSockets closed with 1003 for a text frame and with 1002 for a bad
// frame header, and upgrades refused with 403 (a VIN off the allowlist).
// Each client then just closes its TCP socket, as a scanner or a vehicle
// that lost interest does (a TLS close_notify arriving after the daemon's
// close would make the kernel reset the connection instead).
func closeConnectionsFromTheDaemon(t *testing.T, d *daemon, certs string) int {
	t.Helper()
	stranger, err := devca.New() // same issuer name as the dev CA, another key
	if err != nil {
		t.Fatal(err)
	}
	foreign, _, _, err := stranger.Issue(devca.Options{CommonName: vins[0]})
	if err != nil {
		t.Fatal(err)
	}
	good, err := vehicle.TLSFromDir(certs, vins[0])
	if err != nil {
		t.Fatal(err)
	}
	unknownCA := good.Clone()
	unknownCA.Certificates = []tls.Certificate{foreign}
	off, err := vehicle.TLSFromDir(certs, vins[2])
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range 3 {
		raw, tc := rawTLSDial(t, d.addr, unknownCA)
		// TLS 1.3: the client's handshake ends before the daemon checked
		// its certificate; the refusal arrives as an alert.
		if err := tc.Handshake(); err == nil {
			if _, err = tc.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
				t.Fatalf("a certificate from an unknown CA: %v, want a refusal", err)
			}
		}
		waitEOF(t, raw)
		raw.Close()
		n++
	}
	for _, frame := range [][]byte{
		wsframe.AppendMaskedFrame(nil, ws.OpText, true, []byte("text"), [4]byte{1, 2, 3, 4}), // close 1003
		rawFrameHeader(1 << 63), // close 1002
	} {
		for range 3 {
			raw, tc := rawTLSDial(t, d.addr, good)
			if status := rawUpgrade(t, tc); status != 101 {
				t.Fatalf("upgrade: HTTP %d", status)
			}
			tc.Write(frame)
			waitEOF(t, raw) // the daemon's close frame, then its FIN
			raw.Close()
			n++
		}
	}
	for range 3 {
		raw, tc := rawTLSDial(t, d.addr, off)
		if status := rawUpgrade(t, tc); status != 403 {
			t.Fatalf("a VIN off the allowlist: HTTP %d, want 403", status)
		}
		waitEOF(t, raw)
		raw.Close()
		n++
	}
	return n
}

// rawTLSDial opens a TCP connection and a TLS client on it; closing raw
// closes the socket without a close_notify.
func rawTLSDial(t *testing.T, addr string, cfg *tls.Config) (raw net.Conn, tc *tls.Conn) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	return raw, tls.Client(raw, cfg)
}

// rawUpgrade sends a WebSocket upgrade request and returns the response's
// status code.
func rawUpgrade(t *testing.T, tc *tls.Conn) int {
	t.Helper()
	req := "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := tc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(tc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		io.Copy(io.Discard, resp.Body)
	}
	if br.Buffered() > 0 {
		t.Fatalf("%d bytes after the upgrade response", br.Buffered())
	}
	return resp.StatusCode
}

// takesRecords connects a vehicle and checks that its records are acked
// and printed.
func takesRecords(t *testing.T, d *daemon, certs, prefix string) {
	t.Helper()
	c := e2e.Dial(t, d.addr, certs, vins[0])
	var ms []*envelope.StreamMessage
	want := map[string]bool{}
	for i := range 5 {
		tx := fmt.Sprintf("%s-%d", prefix, i)
		ms = append(ms, newRecord(vins[0], "V", tx))
		want[tx] = true
	}
	e2e.SendAndAck(t, c, ms)
	c.Close()
	d.waitPrinted(t, want, 10*time.Second)
}

// closedHTTP makes one plain-TCP request with "Connection: close" and
// reads to the end: the server answers and closes first.
func closedHTTP(t *testing.T, name, addr, path string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, addr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("%s: GET %s: %s", name, path, resp.Status)
	}
	waitEOF(t, c)
}

// waitEOF reads and discards until the peer closes.
func waitEOF(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("waiting for the daemon to close the connection: %v", err)
	}
}

func httpOK(url string) error {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// waitTimeWait waits (up to 5 s) until at least want sockets whose local
// port is port are in TIME_WAIT, and returns how many there are.
func waitTimeWait(t *testing.T, port, want int) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := timeWaitSockets(port)
		if err != nil {
			t.Fatal(err)
		}
		if n >= want || time.Now().After(deadline) {
			if n < want {
				t.Fatalf("%d sockets in TIME_WAIT on port %d, want at least %d", n, port, want)
			}
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// timeWaitSockets counts the TCP sockets in TIME_WAIT whose local port is
// port (/proc/net/tcp and tcp6: "local_address rem_address st", the
// address as hex IP:port, TIME_WAIT is state 06).
func timeWaitSockets(port int) (int, error) {
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		fh, err := os.Open(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 4 || fields[3] != "06" {
				continue
			}
			i := strings.LastIndexByte(fields[1], ':')
			p, err := strconv.ParseUint(fields[1][i+1:], 16, 16)
			if err == nil && int(p) == port {
				n++
			}
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// secondDaemonFails starts a second daemon on a vehicle port the first one
// listens on (its own spool, no other port): it must exit at once and say
// the address is in use.
func secondDaemonFails(t *testing.T, dir, certs string, port int) {
	t.Helper()
	second := filepath.Join(dir, "second")
	if err := os.MkdirAll(second, 0o700); err != nil {
		t.Fatal(err)
	}
	path, _ := writeConfig(t, second)
	editConfig(t, path, func(c *config.Config) { c.Port, c.Monitoring = port, &config.Monitoring{} })
	cmd := exec.Command(binary, "-config", path)
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
		t.Fatalf("a second daemon on port %d is still running:\n%s", port, out)
	}
	if err == nil || !strings.Contains(string(out), "address already in use") {
		t.Fatalf("a second daemon on port %d: %v, want a failure naming \"address already in use\":\n%s", port, err, out)
	}
}

package netloop

import (
	"bufio"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
)

// TestCloseNotifyBeforeClosing: when the daemon closes a connection whose
// handshake is done (here: a request it answers with 400), OpenSSL, an
// independent TLS 1.3 client, sees a close_notify alert first, on either
// record path.
func TestCloseNotifyBeforeClosing(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is missing (.ci/run installs it)")
		}
		t.Skip("openssl not installed")
	}
	for _, tc := range []struct {
		name      string
		cryptoTLS bool
	}{{"native record layer", false}, {"crypto/tls records", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, allTopics, func(o *Options) { o.CryptoTLSRecords = tc.cryptoTLS })
			d := devca.Dir{Path: e.certs}
			cmd := exec.Command("openssl", "s_client", "-connect", e.addr(), "-tls1_3",
				"-cert", d.VehicleCertFile(vinA), "-key", d.VehicleKeyFile(vinA),
				"-CAfile", d.File(devca.CACertFile), "-servername", "localhost", "-verify_return_error", "-msg", "-ign_eof")
			cmd.Stdin = strings.NewReader("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			done := make(chan struct{})
			var out []byte
			var err error
			go func() {
				out, err = cmd.CombinedOutput()
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				t.Fatalf("openssl did not finish: the daemon did not close the connection\n%s", out)
			}
			text := string(out)
			if !strings.Contains(text, "400 Bad Request") {
				t.Fatalf("no 400 answer (err %v):\n%s", err, text)
			}
			if !strings.Contains(text, "<<< TLS 1.3, Alert [length 0002], warning close_notify") {
				t.Fatalf("no close_notify from the daemon before it closed:\n%s", text)
			}
		})
	}
}

// TestUpgradeRequestCappedAt8KiB: the HTTP request on the mTLS port may be
// at most 8 KiB in total, however it is cut into TLS records: a longer one
// is answered with 431 and the connection closed, counted.
func TestUpgradeRequestCappedAt8KiB(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	header := func(n int) string { return "X-Pad: " + strings.Repeat("a", n) + "\r\n" }
	start := "GET /status HTTP/1.1\r\nHost: x\r\n"
	// 8 KiB less one byte of request with no end yet
	first8K := start + "X-Pad: " + strings.Repeat("a", 8<<10-1-len(start)-len("X-Pad: ")-2) + "\r\n"
	for _, tc := range []struct {
		name   string
		writes []string
		status int
	}{
		{"7 KiB in one record", []string{start + header(7<<10) + "\r\n"}, 200},
		{"just under 8 KiB in three records", []string{start + header(3<<10), header(4 << 10), "\r\n"}, 200},
		{"8 KiB less a byte, then 15 KiB ending the request", []string{first8K, header(15000) + "\r\n"}, 431},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := refusedRequestTooLarge.Get()
			cfg := e.clientTLS(t, vinA)
			cfg.DynamicRecordSizingDisabled = true // one write, one record
			c, err := tls.Dial("tcp", e.addr(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			for _, w := range tc.writes {
				if _, err := io.WriteString(c, w); err != nil {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond) // one read, one record, each
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if got := refusedRequestTooLarge.Get() - before; (tc.status == 431) != (got == 1) {
				t.Fatalf("http_request_too_large counted %d", got)
			}
		})
	}
}

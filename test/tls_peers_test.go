package test

import (
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/testkit"
)

// Independent TLS 1.3 implementations (OpenSSL's s_client, GnuTLS's
// gnutls-cli) against the real binary, on both record paths: the native
// record layer (the default) and crypto/tls's
// (FLEET_TELEMETRY_CRYPTO_TLS_RECORDS=true), which must behave alike.

var tls13Suites = []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}

var recordPaths = []struct {
	name      string
	cryptoTLS bool
}{{"native records", false}, {"crypto/tls records", true}}

// startRecordPathDaemon runs the binary on the default config, with
// crypto/tls's record layer when cryptoTLS.
func startRecordPathDaemon(t *testing.T, cryptoTLS bool) (*daemon, relSetup) {
	t.Helper()
	setup := relWriteConfig(t, t.TempDir(), relConfig{})
	cmd := exec.Command(binary, "-config", setup.ConfigPath)
	if cryptoTLS {
		cmd.Env = append(os.Environ(), "FLEET_TELEMETRY_CRYPTO_TLS_RECORDS=true")
	}
	return startDaemonCmd(t, cmd), setup
}

// tlsPeer is a TLS client process driven through its stdin.
type tlsPeer struct {
	t *testing.T
	*testkit.Process
}

func startTLSPeer(t *testing.T, path string, args ...string) *tlsPeer {
	t.Helper()
	return &tlsPeer{t: t, Process: testkit.StartProcess(t, exec.Command(path, args...))}
}

// output is all the peer has printed so far.
func (p *tlsPeer) output() string { return p.Out.String() }

// send writes one line of input (the peer reads each as one command or
// one write: callers wait for its effect before the next).
func (p *tlsPeer) send(s string) {
	if _, err := io.WriteString(p.Stdin, s); err != nil {
		p.t.Fatalf("write to %s: %v\n%s", p.Cmd.Path, err, p.output())
	}
}

// waitCount waits until what appears n times in the output.
func (p *tlsPeer) waitCount(what string, n int) {
	p.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for strings.Count(p.output(), what) < n {
		if time.Now().After(deadline) {
			p.t.Fatalf("%q seen %d times, want %d; output:\n%s", what, strings.Count(p.output(), what), n, p.output())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitExit waits for the peer to end (the server closed the connection).
func (p *tlsPeer) waitExit() {
	p.t.Helper()
	select {
	case <-p.Exited():
	case <-time.After(15 * time.Second):
		p.t.Fatalf("the peer is still connected; output:\n%s", p.output())
	}
}

const statusRequest = "GET /status HTTP/1.1\r\nHost: x\r\n\r\n"

// OpenSSL sends KeyUpdates (s_client's "k" command: update_not_requested)
// with every TLS 1.3 suite. 16 in a row, then data: served. 17 in a row:
// the server refuses the 17th with unexpected_message, crypto/tls's limit
// and alert, on either record path. Requests whose records OpenSSL pads
// to 512 bytes or cuts at 512 bytes are served alike.
func TestOpenSSLKeyUpdateLimitAndRecordShapes(t *testing.T) {
	openssl := needTool(t, "openssl")
	const keyUpdateSent = ">>> TLS 1.3, Handshake [length 0005], KeyUpdate"
	const refused = "<<< TLS 1.3, Alert [length 0002], fatal unexpected_message"
	for _, path := range recordPaths {
		t.Run(path.name, func(t *testing.T) {
			d, setup := startRecordPathDaemon(t, path.cryptoTLS)
			certs := devca.Dir{Path: setup.Certs}
			vehicle := []string{"s_client", "-connect", d.addr, "-tls1_3",
				"-cert", certs.VehicleCertFile(relVINs[0]), "-key", certs.VehicleKeyFile(relVINs[0]),
				"-CAfile", certs.File(devca.CACertFile), "-servername", "localhost", "-verify_return_error", "-msg"}
			for _, suite := range tls13Suites {
				t.Run(suite, func(t *testing.T) {
					before := setup.metrics(t)[`fleet_connections_refused_total{reason="bad_tls_record"}`]
					p := startTLSPeer(t, openssl, append(vehicle, "-ciphersuites", suite)...)
					p.waitCount("Cipher is "+suite, 1)
					p.send(statusRequest)
					p.waitCount("mtls ok", 1)
					for i := 1; i <= 16; i++ {
						p.send("k\n")
						p.waitCount(keyUpdateSent, i)
					}
					p.send(statusRequest)
					p.waitCount("mtls ok", 2)
					for i := 17; i <= 33; i++ {
						p.send("k\n")
						p.waitCount(keyUpdateSent, i)
					}
					p.waitCount(refused, 1)
					p.waitExit()
					if strings.Count(p.output(), "mtls ok") != 2 {
						t.Fatalf("served %d requests, want 2", strings.Count(p.output(), "mtls ok"))
					}
					if !path.cryptoTLS {
						got := setup.metrics(t)[`fleet_connections_refused_total{reason="bad_tls_record"}`] - before
						if got != 1 {
							t.Fatalf(`fleet_connections_refused_total{reason="bad_tls_record"} grew by %v, want 1`, got)
						}
					}
				})
			}
			// Big requests in small records: s_client's -max_send_frag
			// cuts its records at 512 bytes; -record_padding pads each to
			// a multiple of 512.
			pad := strings.Repeat("x", 3000)
			big := "GET /status HTTP/1.1\r\nHost: x\r\nX-Pad: " + pad + "\r\n\r\n"
			for _, shape := range [][]string{{"-max_send_frag", "512"}, {"-record_padding", "512"}} {
				t.Run(strings.Join(shape, " "), func(t *testing.T) {
					p := startTLSPeer(t, openssl, append(vehicle, shape...)...)
					p.waitCount("Cipher is ", 1)
					p.send(big)
					p.waitCount("mtls ok", 1)
					p.send("K\n") // update_requested: the server answers
					p.waitCount("<<< TLS 1.3, Handshake [length 0005], KeyUpdate", 1)
					p.send(big)
					p.waitCount("mtls ok", 2)
					lengths := sentDataRecords(p.output())
					min := 2 * len(big) / 512
					if shape[0] == "-record_padding" {
						min = 2
					}
					if len(lengths) < min {
						t.Fatalf("%d data records sent for two requests of %d bytes; output:\n%s", len(lengths), len(big), p.output())
					}
					t.Logf("%s: data records of %v bytes", strings.Join(shape, " "), lengths)
					for _, n := range lengths {
						inner := n - 16 // the AEAD tag
						if shape[0] == "-max_send_frag" && inner > 512+1 || shape[0] == "-record_padding" && inner%512 != 0 {
							t.Fatalf("%s: a data record of %d bytes (all: %v)", shape[0], n, lengths)
						}
					}
				})
			}
		})
	}
}

// GnuTLS, a third implementation: KeyUpdates from gnutls-cli's inline
// commands (^rekey^ asks the server for one back, ^rekey1^ does not) with
// requests served between them, then 16 in a row and a request, then 17
// in a row: refused with unexpected_message. Every suite, both record
// paths. (gnutls-cli reads a command or a request per read of its stdin:
// each is written once the previous one took effect.)
func TestGnuTLSKeyUpdates(t *testing.T) {
	gnutls := needTool(t, "gnutls-cli")
	suites := map[string]string{
		"TLS_AES_128_GCM_SHA256":       "AES-128-GCM",
		"TLS_AES_256_GCM_SHA384":       "AES-256-GCM",
		"TLS_CHACHA20_POLY1305_SHA256": "CHACHA20-POLY1305",
	}
	const rekeyed = "- Rekey was completed"
	for _, path := range recordPaths {
		t.Run(path.name, func(t *testing.T) {
			d, setup := startRecordPathDaemon(t, path.cryptoTLS)
			certs := devca.Dir{Path: setup.Certs}
			host, port, _ := strings.Cut(d.addr, ":")
			for _, suite := range tls13Suites {
				t.Run(suite, func(t *testing.T) {
					p := startTLSPeer(t, gnutls, "--port", port, host, "--verify-hostname", "localhost",
						"--x509cafile", certs.File(devca.CACertFile),
						"--x509certfile", certs.VehicleCertFile(relVINs[0]), "--x509keyfile", certs.VehicleKeyFile(relVINs[0]),
						"--priority", "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+"+suites[suite], "--inline-commands")
					p.waitCount("- Simple Client Mode", 1)
					if !strings.Contains(p.output(), "(TLS1.3-") || !strings.Contains(p.output(), "-("+suites[suite]+")") {
						t.Fatalf("not TLS 1.3 with %s:\n%s", suites[suite], p.output())
					}
					served, rekeys := 0, 0
					request := func() {
						served++
						p.send(statusRequest)
						p.waitCount("mtls ok", served)
					}
					rekey := func(cmd string) {
						rekeys++
						p.send(cmd)
						p.waitCount(rekeyed, rekeys)
					}
					request()
					// A reply after ^rekey^ reads only if the server answered
					// with its own KeyUpdate and moved its keys.
					for i := range 6 {
						rekey([]string{"^rekey^\n", "^rekey1^\n"}[i%2])
						request()
					}
					for range 16 {
						rekey("^rekey1^\n")
					}
					request()
					for range 17 {
						rekey("^rekey1^\n")
					}
					p.waitCount("*** Received alert [10]: Unexpected message", 1)
					p.waitExit()
					if served != strings.Count(p.output(), "mtls ok") {
						t.Fatalf("%d replies for %d requests", strings.Count(p.output(), "mtls ok"), served)
					}
				})
			}
		})
	}
}

// sentDataRecords reads s_client's -msg output for the lengths of the
// application data records it sent: each record's header is printed, then
// its inner content type.
func sentDataRecords(out string) []int {
	var lengths []int
	lines := strings.Split(out, "\n")
	length := -1
	for i := 0; i+1 < len(lines); i++ {
		next := strings.Fields(lines[i+1])
		switch {
		case strings.HasPrefix(lines[i], ">>> ") && strings.Contains(lines[i], "RecordHeader [length 0005]") && len(next) == 5:
			hi, err1 := strconv.ParseUint(next[3], 16, 8)
			lo, err2 := strconv.ParseUint(next[4], 16, 8)
			if err1 == nil && err2 == nil {
				length = int(hi)<<8 | int(lo)
			}
		case strings.HasPrefix(lines[i], ">>> ") && strings.Contains(lines[i], "InnerContent [length 0001]") && len(next) == 1:
			if next[0] == "17" && length >= 0 {
				lengths = append(lengths, length)
			}
			length = -1
		}
	}
	return lengths
}

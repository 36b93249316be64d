package netloop

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/internal/testkit"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
)

// TLS 1.3 connections move to the native record layer after the
// handshake; TLS 1.2 ones, and all with CryptoTLSRecords, stay on
// crypto/tls. Records flow and are acked either way.
func dialWith(t *testing.T, e *testEnv, cfg *tls.Config) *vehicle.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := vehicle.Dial(ctx, vehicle.Config{Addr: e.addr(), TLS: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRecordLayerNativeAndCryptoTLS(t *testing.T) {
	for _, c := range []struct {
		name      string
		maxTLS    uint16
		cryptoTLS bool
		native    bool
	}{
		{"TLS 1.3", 0, false, true},
		{"TLS 1.2", tls.VersionTLS12, false, false},
		{"TLS 1.3 with CryptoTLSRecords", 0, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newTestEnv(t, allTopics, func(o *Options) { o.CryptoTLSRecords = c.cryptoTLS })
			native, cryptoTLS := recordLayerNative.Get(), recordLayerCryptoTLS.Get()
			cfg := e.clientTLS(t, vinA)
			cfg.MaxVersion = c.maxTLS
			cl := dialWith(t, e, cfg)
			for i := range 50 {
				tx := strings.Repeat("x", i) + "tx"
				cl.Send(newRecord(vinA, "V", tx))
				expectAck(t, cl, tx, "V")
			}
			gotNative := recordLayerNative.Get() - native
			gotCrypto := recordLayerCryptoTLS.Get() - cryptoTLS
			if c.native && (gotNative != 1 || gotCrypto != 0) || !c.native && (gotNative != 0 || gotCrypto != 1) {
				t.Fatalf("native +%d, crypto/tls +%d", gotNative, gotCrypto)
			}
		})
	}
}

// OpenSSL, an independent TLS 1.3 implementation, talks to the native
// record layer with each TLS 1.3 cipher suite, and asks for a KeyUpdate
// (s_client's "K" command: update_requested) between two requests, so the
// server must answer with its own and switch both keys.
func TestRecordLayerWithOpenSSLEverySuiteAndKeyUpdate(t *testing.T) {
	openssl := e2e.NeedTool(t, "openssl", "openssl")
	e := newTestEnv(t, allTopics, nil)
	d := devca.Dir{Path: e.certs}
	for _, suite := range []string{"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"} {
		t.Run(suite, func(t *testing.T) {
			native := recordLayerNative.Get()
			client := testkit.StartProcess(t, exec.Command(openssl, "s_client", "-connect", e.addr(), "-tls1_3", "-ciphersuites", suite,
				"-cert", d.VehicleCertFile(vinA), "-key", d.VehicleKeyFile(vinA),
				"-CAfile", d.File(devca.CACertFile), "-servername", "localhost", "-verify_return_error", "-msg"))
			stdin, out := client.Stdin, &client.Out
			// waitLine waits for what in the output after the previous
			// match (the response body ends without a newline).
			seen := 0
			waitLine := func(what string) {
				t.Helper()
				deadline := time.Now().Add(10 * time.Second)
				for time.Now().Before(deadline) {
					if i := strings.Index(out.String()[seen:], what); i >= 0 {
						seen += i + len(what)
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
				t.Fatalf("no %q from openssl; output:\n%s", what, out.String())
			}
			waitLine("Cipher is " + suite)
			// Each write is one read for s_client: a line starting with K
			// is its key-update command, anything else is sent as is.
			status := "GET /status HTTP/1.1\r\nHost: x\r\n\r\n"
			io.WriteString(stdin, status)
			waitLine("mtls ok")
			time.Sleep(200 * time.Millisecond)
			io.WriteString(stdin, "K\n")
			// openssl's KeyUpdate, then the server's answer (openssl prints
			// its "KEYUPDATE" note in between or after, in no fixed order).
			waitLine(">>> TLS 1.3, Handshake [length 0005], KeyUpdate")
			waitLine("<<< TLS 1.3, Handshake [length 0005], KeyUpdate")
			time.Sleep(200 * time.Millisecond)
			io.WriteString(stdin, status)
			waitLine("mtls ok")
			time.Sleep(200 * time.Millisecond)
			io.WriteString(stdin, status)
			waitLine("mtls ok")
			if recordLayerNative.Get() != native+1 {
				t.Fatal("the connection did not use the native record layer")
			}
		})
	}
}

// countingTickets is a client session cache that counts the session
// tickets the server sent (crypto/tls stores each NewSessionTicket).
type countingTickets struct {
	mu sync.Mutex
	n  int
}

func (c *countingTickets) Get(string) (*tls.ClientSessionState, bool) { return nil, false }
func (c *countingTickets) Put(_ string, cs *tls.ClientSessionState) {
	if cs != nil {
		c.mu.Lock()
		c.n++
		c.mu.Unlock()
	}
}

// onLoop runs f on c's event loop and waits for it.
func onLoop(t *testing.T, c *conn, f func()) {
	t.Helper()
	done := make(chan struct{})
	if err := c.gc.AsyncWrite(nil, func(gnet.Conn, error) error { f(); close(done); return nil }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the loop did not run the task")
	}
}

// TestWriteSeqContinuesAfterTickets: the native record layer's first
// record carries the sequence number that follows the records crypto/tls
// sealed under the server's application secret (its session tickets, as
// many as the client received), so each reply is exactly one more.
func TestWriteSeqContinuesAfterTickets(t *testing.T) {
	for _, tc := range []struct {
		name     string
		noTicket bool
	}{{"session tickets", false}, {"tickets disabled", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, allTopics, func(o *Options) { o.TLS.SessionTicketsDisabled = tc.noTicket })
			cache := &countingTickets{}
			cfg := e.clientTLS(t, vinA)
			cfg.ClientSessionCache = cache
			cl, err := tls.Dial("tcp", e.addr(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			br := bufio.NewReader(cl)
			for i := 1; i <= 3; i++ {
				io.WriteString(cl, "GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				var sc *conn
				e.srv.regMu.Lock()
				for c := range e.srv.conns {
					sc = c
				}
				e.srv.regMu.Unlock()
				var seq uint64
				var native bool
				onLoop(t, sc, func() {
					if native = sc.rec != nil; native {
						seq = sc.rec.WriteSeq()
					}
				})
				if !native {
					t.Fatal("the connection is not on the native record layer")
				}
				cache.mu.Lock()
				tickets := cache.n
				cache.mu.Unlock()
				if tc.noTicket != (tickets == 0) {
					t.Fatalf("client received %d session tickets", tickets)
				}
				if want := uint64(tickets + i); seq != want {
					t.Fatalf("after %d replies and %d tickets the write sequence is %d, want %d", i, tickets, seq, want)
				}
			}
		})
	}
}

package tlsrecord

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/internal/testkit"
)

// tapConn keeps every byte a connection read and wrote.
type tapConn struct {
	net.Conn
	mu            sync.Mutex
	read, written []byte
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.read = append(c.read, p[:n]...)
	c.mu.Unlock()
	return n, err
}

func (c *tapConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.written = append(c.written, p...)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *tapConn) lens() (read, written int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.read), len(c.written)
}

// splitRecords cuts whole records off p.
func splitRecords(p []byte) [][]byte {
	var recs [][]byte
	for {
		n, ok, err := RecordLen(p)
		if err != nil || !ok || len(p) < n {
			return recs
		}
		recs = append(recs, p[:n])
		p = p[n:]
	}
}

// RFC 8448 has no trace for TLS_AES_256_GCM_SHA384 or
// TLS_CHACHA20_POLY1305_SHA256, and two crypto/tls ends never pick them on
// a machine with AES hardware. So OpenSSL, offering one suite at a time,
// talks to a crypto/tls server: lines of data each way, a KeyUpdate that
// asks for an answer and one that does not. Then this package, on the
// secrets crypto/tls logged, is fed the client's records as crypto/tls
// read them and seals the same replies: it must return the same data and
// write the same bytes as crypto/tls did (the KeyUpdate answer included),
// every suite.
func TestEverySuiteWritesWhatCryptoTLSWrites(t *testing.T) {
	openssl := e2e.NeedTool(t, "openssl", "openssl")
	cert, err := diffCert()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		id   uint16
		name string
	}{
		{TLS_AES_128_GCM_SHA256, "TLS_AES_128_GCM_SHA256"},
		{TLS_AES_256_GCM_SHA384, "TLS_AES_256_GCM_SHA384"},
		{TLS_CHACHA20_POLY1305_SHA256, "TLS_CHACHA20_POLY1305_SHA256"},
	} {
		t.Run(s.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			client := testkit.StartProcess(t, exec.Command(openssl, "s_client", "-connect", ln.Addr().String(), "-tls1_3", "-ciphersuites", s.name, "-msg"))
			stdin, out := client.Stdin, &client.Out
			ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
			raw, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			raw.SetDeadline(time.Now().Add(20 * time.Second))
			tap := &tapConn{Conn: raw}
			kl := &keyLogSecrets{}
			server := tls.Server(tap, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, KeyLogWriter: kl})
			if err := server.Handshake(); err != nil {
				t.Fatalf("handshake: %v\n%s", err, out.String())
			}
			if got := server.ConnectionState().CipherSuite; got != s.id {
				t.Fatalf("negotiated %#04x", got)
			}
			hsRead, hsWritten := tap.lens()

			// crypto/tls reads lines (a goroutine, which also answers
			// KeyUpdates) and answers each with a line of its own.
			lines := make(chan string)
			go func() {
				defer close(lines)
				var pending []byte
				buf := make([]byte, 4096)
				for {
					n, err := server.Read(buf)
					pending = append(pending, buf[:n]...)
					for {
						i := bytes.IndexByte(pending, '\n')
						if i < 0 {
							break
						}
						lines <- string(pending[:i+1])
						pending = pending[i+1:]
					}
					if err != nil {
						return
					}
				}
			}()
			var dataSeen []byte
			exchange := func(i int) {
				t.Helper()
				ping := fmt.Sprintf("ping %d from openssl\n", i)
				io.WriteString(stdin, ping)
				select {
				case got := <-lines:
					if got != ping {
						t.Fatalf("read %q, want %q", got, ping)
					}
					dataSeen = append(dataSeen, got...)
				case <-time.After(10 * time.Second):
					t.Fatalf("no %q:\n%s", ping, out.String())
				}
				if _, err := server.Write([]byte(fmt.Sprintf("pong %d from crypto/tls\n", i))); err != nil {
					t.Fatal(err)
				}
			}
			// waitFor waits until the tap has read or written more.
			waitFor := func(what string, grew func(read, written int) bool) {
				t.Helper()
				deadline := time.Now().Add(10 * time.Second)
				for !grew(tap.lens()) {
					if time.Now().After(deadline) {
						t.Fatalf("no %s:\n%s", what, out.String())
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			exchange(1)
			_, w := tap.lens()
			io.WriteString(stdin, "K\n") // KeyUpdate, update_requested
			waitFor("KeyUpdate answer", func(_, written int) bool { return written > w })
			exchange(2)
			r, _ := tap.lens()
			io.WriteString(stdin, "k\n") // KeyUpdate, update_not_requested
			waitFor("KeyUpdate", func(read, _ int) bool { return read > r })
			exchange(3)
			tap.mu.Lock()
			clientRecords := bytes.Clone(tap.read[hsRead:])
			serverBytes := bytes.Clone(tap.written[hsWritten:])
			handshakeRecords := splitRecords(tap.written[:hsWritten])
			tap.mu.Unlock()
			if kl.client == nil || kl.server == nil {
				t.Fatal("no traffic secrets logged")
			}

			// The same, through this package.
			tickets := TicketsSent(s.id, kl.server, handshakeRecords)
			if tickets == 0 {
				t.Fatal("no session ticket among the handshake's records")
			}
			c, err := New(s.id, bytes.Clone(kl.client), bytes.Clone(kl.server), tickets)
			if err != nil {
				t.Fatal(err)
			}
			records := len(splitRecords(clientRecords))
			var ours, data, pending []byte
			answers := 0
			for i := 1; len(clientRecords) > 0; {
				n, plain, err := c.Open(clientRecords)
				if err != nil || n == 0 {
					t.Fatalf("record of %d bytes: %d, %v", len(clientRecords), n, err)
				}
				clientRecords = clientRecords[n:]
				if p := c.Pending(); len(p) > 0 {
					answers++
					ours = append(ours, p...)
				}
				data = append(data, plain...)
				pending = append(pending, plain...)
				for bytes.IndexByte(pending, '\n') >= 0 {
					pending = pending[bytes.IndexByte(pending, '\n')+1:]
					ours = c.Seal(ours, []byte(fmt.Sprintf("pong %d from crypto/tls\n", i)))
					i++
				}
			}
			if !bytes.Equal(data, dataSeen) {
				t.Fatalf("opened %q, crypto/tls read %q", data, dataSeen)
			}
			if answers != 1 {
				t.Fatalf("%d KeyUpdate answers, want 1", answers)
			}
			if !bytes.Equal(ours, serverBytes) {
				t.Fatalf("wrote\n% x\ncrypto/tls wrote\n% x", ours, serverBytes)
			}
			t.Logf("%s: %d records from openssl opened, %d bytes written identical to crypto/tls's, session tickets %d",
				s.name, records, len(serverBytes), tickets)
		})
	}
}

package e2e

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
)

// ClientHello returns the first flight a crypto/tls client with cfg sends:
// one TLS record holding its ClientHello (for tests that replay or stall
// handshakes).
func ClientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer b.Close()
	go func() {
		defer a.Close()
		_ = tls.Client(a, cfg).Handshake()
	}()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

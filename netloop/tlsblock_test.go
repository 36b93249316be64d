package netloop

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
)

// feedConn is the shape of memConn in loop mode over a real TCP socket: the
// test decides when ciphertext arrives, and Read says "would block" when
// none is buffered.
type feedConn struct {
	net.Conn
	in       []byte
	blocking bool
}

func (f *feedConn) Read(p []byte) (int, error) {
	if len(f.in) == 0 {
		if f.blocking {
			return f.Conn.Read(p)
		}
		return 0, errWouldBlock
	}
	n := copy(p, f.in)
	f.in = f.in[n:]
	return n, nil
}

// TestTLSSurvivesWouldBlock pins an undocumented crypto/tls behaviour the
// event loop relies on: after the handshake, a Read error whose Temporary()
// is true is returned to the caller without poisoning the connection, and a
// partially received record is kept until the rest arrives. If a Go upgrade
// changes this, this test fails before vehicles do.
func TestTLSSurvivesWouldBlock(t *testing.T) {
	certs, srvCfg := devServerTLS(t, t.TempDir(), vinA)
	cliCfg, err := vehicle.TLSFromDir(certs, vinA)
	if err != nil {
		t.Fatal(err)
	}
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		want := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB: several records
		clientDone := make(chan error, 1)
		go func() {
			cfg := cliCfg.Clone()
			cfg.MaxVersion = version
			c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
			if err != nil {
				clientDone <- err
				return
			}
			_, err = c.Write(want)
			clientDone <- err
			io.Copy(io.Discard, c)
		}()
		raw, err := ln.Accept()
		ln.Close()
		if err != nil {
			t.Fatal(err)
		}
		fc := &feedConn{Conn: raw, blocking: true}
		srv := tls.Server(fc, srvCfg)
		if err := srv.Handshake(); err != nil {
			t.Fatalf("handshake: %v", err)
		}
		fc.blocking = false
		if err := <-clientDone; err != nil {
			t.Fatal(err)
		}
		var got []byte
		buf := make([]byte, 32<<10)
		chunk := make([]byte, 7) // odd sizes split records everywhere
		wouldBlocks := 0
		for len(got) < len(want) {
			n, err := raw.Read(chunk)
			if err != nil {
				t.Fatalf("tcp read: %v", err)
			}
			fc.in = append(fc.in, chunk[:n]...)
			for {
				m, err := srv.Read(buf)
				got = append(got, buf[:m]...)
				if err != nil {
					var ne net.Error
					if !errors.As(err, &ne) || !ne.Temporary() {
						t.Fatalf("TLS %x: read error %v is not the temporary would-block", version, err)
					}
					wouldBlocks++
					break
				}
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("TLS %x: plaintext differs after %d would-blocks", version, wouldBlocks)
		}
		if wouldBlocks < 100 {
			t.Fatalf("TLS %x: only %d would-blocks; the test did not split records", version, wouldBlocks)
		}
		raw.Close()
	}
}

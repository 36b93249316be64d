package servercheck

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/messagetest"
	"github.com/fleet-telemetry/fleet-telemetry/internal/timefmt"
)

// pki is two unrelated CAs, each with an intermediate, and certificates
// they issue.
type pki struct {
	root, inter   *devca.CA
	root2, inter2 *devca.CA
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{}
	var err error
	if p.root, err = devca.NewNamed("Test Root"); err != nil {
		t.Fatal(err)
	}
	if p.inter, err = p.root.NewIntermediate("Test Intermediate"); err != nil {
		t.Fatal(err)
	}
	if p.root2, err = devca.NewNamed("Other Root"); err != nil {
		t.Fatal(err)
	}
	if p.inter2, err = p.root2.NewIntermediate("Other Intermediate"); err != nil {
		t.Fatal(err)
	}
	return p
}

// issue returns a certificate of ca's; hosts default to localhost and
// 127.0.0.1.
func issue(t *testing.T, ca *devca.CA, o devca.Options) tls.Certificate {
	t.Helper()
	if o.CommonName == "" {
		o.CommonName = "server"
	}
	if o.Hosts == nil {
		o.Hosts = []string{"localhost", "127.0.0.1"}
	}
	c, _, _, err := ca.Issue(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// selfSignedServer makes a server certificate signed by its own key.
func selfSignedServer(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "self"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func certs(cs ...any) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range cs {
		switch c := c.(type) {
		case tls.Certificate:
			out = append(out, c.Leaf)
		case *devca.CA:
			out = append(out, c.Cert)
		case *x509.Certificate:
			out = append(out, c)
		default:
			panic(c)
		}
	}
	return out
}

func TestDiagnose(t *testing.T) {
	p := newPKI(t)
	now := time.Now()
	leaf := issue(t, p.inter, devca.Options{})
	leaf2 := issue(t, p.inter2, devca.Options{})
	// Expired after the intermediate was made (an hour ago): the chain
	// is judged at a time all its certificates were valid.
	expired := issue(t, p.inter, devca.Options{NotBefore: now.Add(-50 * time.Minute), NotAfter: now.Add(-10 * time.Minute)})
	future := issue(t, p.inter, devca.Options{NotBefore: now.Add(24 * time.Hour), NotAfter: now.Add(48 * time.Hour)})
	soon := issue(t, p.inter, devca.Options{NotAfter: now.Add(5 * 24 * time.Hour)})
	wrongName := issue(t, p.inter, devca.Options{Hosts: []string{"telemetry.example.com"}})
	clientOnly := issue(t, p.inter, devca.Options{Hosts: []string{}}) // a vehicle's certificate
	direct := issue(t, p.root, devca.Options{})                       // no intermediate
	self := selfSignedServer(t)
	reissued, err := devca.NewNamed("Test Root") // same name, another key
	if err != nil {
		t.Fatal(err)
	}
	system2 := x509.NewCertPool()
	system2.AddCert(p.root2.Cert)

	for _, tc := range []struct {
		name     string
		served   []*x509.Certificate
		ca       []*x509.Certificate
		system   *x509.CertPool
		chain    int      // length of the verified chain; 0: does not verify
		problems []string // one substring per problem
		warnings []string
	}{
		{name: "good", served: certs(leaf, p.inter), ca: certs(p.root), chain: 3},
		{name: "good, root sent too", served: certs(leaf, p.inter, p.root), ca: certs(p.root), chain: 3},
		{name: "good, no intermediate", served: certs(direct), ca: certs(p.root), chain: 2},
		{name: "good, ca carries intermediate and root", served: certs(leaf, p.inter), ca: certs(p.inter, p.root), chain: 3},
		{name: "expired", served: certs(expired, p.inter), ca: certs(p.root), chain: 3,
			problems: []string{`the server certificate "CN=server" expired on ` + timefmt.Stamp(now.Add(-10*time.Minute)) + ", 10 minutes ago"}},
		{name: "not yet valid", served: certs(future, p.inter), ca: certs(p.root), chain: 3,
			problems: []string{`the server certificate "CN=server" is not valid before `}},
		{name: "expires soon", served: certs(soon, p.inter), ca: certs(p.root), chain: 3,
			warnings: []string{`the server certificate "CN=server" expires on `}},
		{name: "wrong name", served: certs(wrongName, p.inter), ca: certs(p.root), chain: 3,
			problems: []string{`wrong name: the server certificate is not valid for "localhost"; it names DNS:telemetry.example.com`}},
		{name: "incomplete chain", served: certs(leaf), ca: certs(p.root),
			problems: []string{`incomplete chain: the server sends only its own certificate, issued by "CN=Test Intermediate,O=fleet-telemetry dev CA", and the vehicle configuration's ca ("CN=Test Root,O=fleet-telemetry dev CA") does not hold that issuer`}},
		{name: "incomplete chain, ca carries the intermediate", served: certs(leaf), ca: certs(p.root, p.inter), chain: 2,
			problems: []string{`incomplete chain: the server does not send "CN=Test Intermediate,O=fleet-telemetry dev CA"; its certificate verifies only because the vehicle configuration's ca carries`}},
		{name: "partial chain", served: certs(leaf, p.inter), ca: certs(p.inter), chain: 2,
			warnings: []string{`partial chain: the ca anchors the chain at "CN=Test Intermediate,O=fleet-telemetry dev CA", an intermediate issued by "CN=Test Root,O=fleet-telemetry dev CA", not at a root`}},
		{name: "CA not carried", served: certs(leaf2, p.inter2), ca: certs(p.root),
			problems: []string{`a CA the vehicle configuration does not carry: the server's chain ends at "CN=Other Intermediate,O=fleet-telemetry dev CA", issued by "CN=Other Root,O=fleet-telemetry dev CA", which the ca does not hold (it holds "CN=Test Root,O=fleet-telemetry dev CA")`}},
		{name: "CA not carried, in the system roots", served: certs(leaf2, p.inter2), ca: certs(p.root), system: system2,
			problems: []string{`a CA the vehicle configuration does not carry: the server's chain verifies against this machine's system roots, up to "CN=Other Root,O=fleet-telemetry dev CA", but not against the ca`}},
		{name: "CA not carried, root sent", served: certs(leaf2, p.inter2, p.root2), ca: certs(p.root),
			problems: []string{`a CA the vehicle configuration does not carry: the server's chain ends at the root "CN=Other Root,O=fleet-telemetry dev CA"`}},
		{name: "CA re-issued under the same name", served: certs(leaf, p.inter), ca: certs(reissued),
			problems: []string{`the server's chain ends at "CN=Test Intermediate,O=fleet-telemetry dev CA", issued by "CN=Test Root,O=fleet-telemetry dev CA", which the ca does not hold`},
			warnings: []string{`the ca holds a certificate named "CN=Test Root,O=fleet-telemetry dev CA", but not the one that signed`}},
		{name: "self-signed", served: certs(self), ca: certs(p.root),
			problems: []string{`self-signed: the server certificate "CN=self" is issued by itself, and the vehicle configuration's ca does not carry it`}},
		{name: "self-signed, in the ca", served: certs(self), ca: certs(self), chain: 1,
			warnings: []string{"the server certificate is self-signed and trusted only because the ca carries this very certificate"}},
		{name: "an extra certificate", served: certs(leaf, p.inter, p.inter2), ca: certs(p.root), chain: 3,
			warnings: []string{`the server also sends "CN=Other Intermediate,O=fleet-telemetry dev CA", which is not part of its certificate's chain`}},
		{name: "a client certificate", served: certs(clientOnly, p.inter), ca: certs(p.root),
			problems: []string{`wrong name: the server certificate is not valid for "localhost"; it names no name in its subject alternative names (its common name "server"`,
				`the server certificate "CN=server" is not for server authentication (its extended key usage is client authentication)`}},
		{name: "empty ca", served: certs(leaf, p.inter), problems: []string{"the vehicle configuration's ca holds no certificate"}},
		{name: "nothing served", ca: certs(p.root), problems: []string{"the server sent no certificate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Diagnose(Input{Hostname: "localhost", Served: tc.served, CA: tc.ca, SystemRoots: tc.system, Now: now})
			messagetest.Match(t, "problem", d.Problems, tc.problems)
			messagetest.Match(t, "warning", d.Warnings, tc.warnings)
			if len(d.Chain) != tc.chain {
				t.Errorf("verified chain of %d, want %d", len(d.Chain), tc.chain)
			}
		})
	}
}

// serve accepts connections on 127.0.0.1 and hands each to handle.
func serve(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// serveTLS runs a crypto/tls server: it completes the handshake and
// reads until the client leaves.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	return serve(t, func(c net.Conn) {
		tc := tls.Server(c, cfg)
		if tc.Handshake() == nil {
			io.Copy(io.Discard, tc)
		}
	})
}

func TestCheckAgainstServers(t *testing.T) {
	p := newPKI(t)
	leaf := issue(t, p.inter, devca.Options{})
	leaf.Certificate = append(leaf.Certificate, p.inter.Cert.Raw) // the server sends its chain
	vehicle := issue(t, p.root2, devca.Options{CommonName: "5YJ3E1EA1KF000001", Hosts: []string{}})
	stranger := issue(t, p.root, devca.Options{CommonName: "5YJ3E1EA1KF000002", Hosts: []string{}})
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(p.root2.Cert)
	server := func(min, max uint16, auth tls.ClientAuthType) *tls.Config {
		return &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: min, MaxVersion: max, ClientAuth: auth, ClientCAs: clientCAs}
	}
	check := func(addr string, client *tls.Certificate) *Result {
		return Check(context.Background(), Options{Hostname: "localhost", Addr: addr, CA: certs(p.root), ClientCert: client,
			Timeout: 5 * time.Second, SystemRoots: x509.NewCertPool()})
	}

	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		name := tls.VersionName(v)
		t.Run(name+" without a client certificate", func(t *testing.T) {
			// RequireAnyClientCert: as the daemon asks.
			r := check(serveTLS(t, server(v, v, tls.RequireAnyClientCert)), nil)
			if !r.OK() || !r.ClientCertRequested || r.Version != v || len(r.Served) != 2 || len(r.Chain) != 3 {
				t.Fatalf("%+v", r)
			}
			if v == tls.VersionTLS12 && (r.HandshakeErr == nil || !messagetest.Contains(r.Notes, "without a client certificate the server ended the handshake")) {
				t.Errorf("TLS 1.2: the refusal is not noted: %+v", r)
			}
		})
		t.Run(name+" with a client certificate it accepts", func(t *testing.T) {
			r := check(serveTLS(t, server(v, v, tls.RequireAndVerifyClientCert)), &vehicle)
			if !r.OK() || !r.ClientCertAccepted {
				t.Fatalf("%+v", r)
			}
		})
		t.Run(name+" with a client certificate it refuses", func(t *testing.T) {
			r := check(serveTLS(t, server(v, v, tls.RequireAndVerifyClientCert)), &stranger)
			if r.OK() || r.ClientCertAccepted || !messagetest.Contains(r.Problems, "the server refused the client certificate: ") || len(r.Problems) != 1 {
				t.Fatalf("%+v", r)
			}
			if len(r.Chain) != 3 {
				t.Errorf("the server's chain was not checked: %+v", r)
			}
		})
		t.Run(name+" not asking for a client certificate", func(t *testing.T) {
			r := check(serveTLS(t, server(v, v, tls.NoClientCert)), nil)
			if r.OK() || !messagetest.Contains(r.Problems, "the server did not ask for a client certificate") || len(r.Problems) != 1 {
				t.Fatalf("%+v", r)
			}
		})
	}

	t.Run("a key that is not the certificate's", func(t *testing.T) {
		// The server signs its handshake with another key: the client
		// refuses the handshake after the certificates arrived.
		other := issue(t, p.inter, devca.Options{})
		bad := leaf
		bad.PrivateKey = other.PrivateKey
		cfg := server(tls.VersionTLS12, tls.VersionTLS13, tls.RequireAnyClientCert)
		cfg.Certificates = []tls.Certificate{bad}
		r := check(serveTLS(t, cfg), nil)
		if r.OK() || r.ClientCertRequested || len(r.Problems) != 1 ||
			!messagetest.Contains(r.Problems, "the handshake failed after the server sent its certificates: tls: invalid signature by the server certificate") || len(r.Chain) != 3 {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("TLS 1.1 only", func(t *testing.T) {
		r := check(serveTLS(t, server(tls.VersionTLS10, tls.VersionTLS11, tls.RequireAnyClientCert)), nil)
		if r.OK() || !messagetest.Contains(r.Problems, "refused the handshake before sending a certificate: remote error: tls: protocol version not supported (it offers no TLS version from 1.2 up") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("server alert", func(t *testing.T) {
		cfg := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return nil, errors.New("no") }}
		r := check(serveTLS(t, cfg), nil)
		if r.OK() || !messagetest.Contains(r.Problems, "refused the handshake before sending a certificate: remote error: tls: internal error") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("plain HTTP", func(t *testing.T) {
		addr := serve(t, func(c net.Conn) {
			c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
		})
		r := check(addr, nil)
		if r.OK() || len(r.Problems) != 1 || r.Problems[0] != addr+" does not speak TLS: it answered in plain HTTP" {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("not TLS", func(t *testing.T) {
		addr := serve(t, func(c net.Conn) { c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n")) })
		r := check(addr, nil)
		if r.OK() || !messagetest.Contains(r.Problems, `does not speak TLS: it answered with bytes that are not a TLS record ("SSH-2")`) {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("closes at once", func(t *testing.T) {
		r := check(serve(t, func(net.Conn) {}), nil)
		if r.OK() || !messagetest.Contains(r.Problems, "closed the connection during the handshake without sending a certificate") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("silent", func(t *testing.T) {
		done := make(chan struct{})
		addr := serve(t, func(c net.Conn) { <-done })
		defer close(done)
		start := time.Now()
		r := Check(context.Background(), Options{Hostname: "localhost", Addr: addr, CA: certs(p.root), Timeout: 300 * time.Millisecond})
		if r.OK() || !messagetest.Contains(r.Problems, "accepted the connection but sent no TLS handshake within 300ms") {
			t.Fatalf("%+v", r)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("took %v with a 300ms timeout", d)
		}
	})
	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		r := check(addr, nil)
		if r.OK() || len(r.Problems) != 1 || !strings.HasPrefix(r.Problems[0], "connection refused by "+addr) {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("does not resolve", func(t *testing.T) {
		r := Check(context.Background(), Options{Hostname: "no-such-host.invalid", Port: 443, CA: certs(p.root), Timeout: 5 * time.Second})
		if r.OK() || !messagetest.Contains(r.Problems, "no-such-host.invalid") || r.Addr != "no-such-host.invalid:443" {
			t.Fatalf("%+v", r)
		}
	})
}

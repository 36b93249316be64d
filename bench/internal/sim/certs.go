// Package sim simulates vehicles for the load generator: per-VIN client
// certificates minted from a CA key, realistic records, and mTLS WebSocket
// connections that check every ack against what they sent.
package sim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"strings"
	"sync"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/verifycache"
)

// Minter issues one client certificate per VIN, signed by the CA, all for
// the same ECDSA key (generating a key per VIN would dominate the cost).
type Minter struct {
	ca  *devca.CA
	key *ecdsa.PrivateKey
	// cache keeps certificates for VINs that reconnect (storm); idle runs
	// with 100k VINs switch it off to save memory.
	cache bool
	mu    sync.Mutex
	certs map[string]*tls.Certificate
	// verified remembers the server's chain once it verified, so the
	// bench's CPU goes to load rather than to re-verifying the same
	// certificate on every reconnect (a storm is bench-bound otherwise).
	verified *verifycache.Cache
	// Curves, when set, are the key exchanges the client offers (Go's
	// default offers the post-quantum X25519MLKEM768 hybrid first, which
	// the server then picks and which costs both sides more).
	Curves []tls.CurveID
}

// NewMinter loads the CA from PEM files.
func NewMinter(caCert, caKey string, cache bool) (*Minter, error) {
	ca, err := devca.Load(caCert, caKey)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return &Minter{ca: ca, key: key, cache: cache, certs: map[string]*tls.Certificate{},
		verified: verifycache.New(verifycache.Options{Roots: ca.Pool()})}, nil
}

// Cert returns vin's certificate, minting it when needed.
func (m *Minter) Cert(vin string) (*tls.Certificate, error) {
	if m.cache {
		m.mu.Lock()
		c := m.certs[vin]
		m.mu.Unlock()
		if c != nil {
			return c, nil
		}
	}
	cert, _, _, err := m.ca.IssueFor(devca.Options{CommonName: vin}, m.key)
	if err != nil {
		return nil, fmt.Errorf("mint certificate for %s: %w", vin, err)
	}
	cert.Leaf = nil // not needed by a client; saves memory per connection
	if m.cache {
		m.mu.Lock()
		m.certs[vin] = &cert
		m.mu.Unlock()
	}
	return &cert, nil
}

// TLSConfig is the client configuration for vin: it trusts the CA and
// presents vin's certificate, minted during the handshake. Session
// resumption is off unless cache is given, so every dial is a full
// handshake, like a vehicle that lost its session state. The server's
// chain is verified against the CA for serverName, through a cache of
// chains that verified before (crypto/tls still checks the server's
// handshake signature every time).
func (m *Minter) TLSConfig(vin, serverName string, cache tls.ClientSessionCache) *tls.Config {
	return &tls.Config{
		// Verified by VerifyConnection below, with the cache.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := m.verified.Verify(cs.PeerCertificates, serverName)
			return err
		},
		ServerName:         serverName,
		MinVersion:         tls.VersionTLS12,
		ClientSessionCache: cache,
		CurvePreferences:   m.Curves,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return m.Cert(vin)
		},
	}
}

// ParseCurves reads -client-curves: "" (Go's default), or a comma list of
// x25519mlkem768, x25519, p256, p384.
func ParseCurves(list string) ([]tls.CurveID, error) {
	if list == "" {
		return nil, nil
	}
	names := map[string]tls.CurveID{"x25519mlkem768": tls.X25519MLKEM768, "x25519": tls.X25519,
		"p256": tls.CurveP256, "p384": tls.CurveP384}
	var out []tls.CurveID
	for _, n := range strings.Split(list, ",") {
		id, ok := names[strings.ToLower(strings.TrimSpace(n))]
		if !ok {
			return nil, fmt.Errorf("unknown curve %q (x25519mlkem768, x25519, p256, p384)", n)
		}
		out = append(out, id)
	}
	return out, nil
}

// VIN is the bench's VIN for vehicle number i: 17 characters.
func VIN(i int) string { return fmt.Sprintf("5YJBENCH%09d", i) }

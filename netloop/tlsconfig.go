package netloop

import (
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"fmt"
	"os"

	"github.com/fleet-telemetry/fleet-telemetry/internal/verifycache"
)

//go:embed ca/tesla-prod-ca.pem
var teslaProdCA []byte

//go:embed ca/tesla-eng-ca.pem
var teslaEngCA []byte

// TLSOptions name the files a server's TLS configuration is built from.
type TLSOptions struct {
	// CertFile and KeyFile are the server certificate chain and key (PEM).
	CertFile, KeyFile string
	// CAFile, when set, adds a PEM bundle to the trusted client CAs (a
	// self-hosted fleet's or a test's own CA).
	CAFile string
	// UseEngCA trusts the embedded engineering bundle instead of production.
	UseEngCA bool
}

// NewTLSConfig loads the files and returns a server configuration that
// requires and verifies a client certificate, TLS 1.2 or newer.
func NewTLSConfig(o TLSOptions) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("netloop: load server certificate %s: %w", o.CertFile, err)
	}
	pool := x509.NewCertPool()
	bundle, name := teslaProdCA, "embedded production CA bundle"
	if o.UseEngCA {
		bundle, name = teslaEngCA, "embedded engineering CA bundle"
	}
	if !pool.AppendCertsFromPEM(bundle) {
		return nil, fmt.Errorf("netloop: %s holds no certificate", name)
	}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("netloop: read ca_file: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("netloop: ca_file %s holds no PEM certificate", o.CAFile)
		}
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS12,
		// WebSocket over HTTP/1.1 only.
		NextProtos: []string{"http/1.1"},
	}, nil
}

// serverConfig returns the configuration handshakes use: a copy of cfg
// (which requires and verifies client certificates against cfg.ClientCAs)
// that, unless cryptoTLSOnly, gives each handshake a configuration of its
// own whose key log feeds that connection (perConnConfig), so a TLS 1.3
// connection's record layer can take over after the handshake, and which,
// unless maxCached is negative,
// verifies client certificates itself through a verifycache.Cache: a
// vehicle that reconnects with the same certificate skips chain building
// and the CA signature check. crypto/tls still checks the vehicle's
// handshake signature. A failed verification is refused the same way, with
// a bad_certificate alert (crypto/tls's own verification would send
// unknown_ca or certificate_expired where they apply).
func serverConfig(cfg *tls.Config, maxCached int, cryptoTLSOnly bool) *tls.Config {
	out := cfg.Clone()
	if maxCached >= 0 {
		verifyThroughCache(out, cfg, maxCached)
	}
	if cryptoTLSOnly {
		return out
	}
	return perConnConfig(out)
}

// verifyThroughCache makes out verify client certificates against cfg's
// ClientCAs through a verifycache.Cache of maxCached chains.
func verifyThroughCache(out, cfg *tls.Config, maxCached int) {
	cache := verifycache.New(verifycache.Options{
		Roots:      cfg.ClientCAs,
		KeyUsages:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		MaxEntries: maxCached,
		Now:        cfg.Time,
	})
	out.ClientAuth = tls.RequireAnyClientCert
	next := cfg.VerifyConnection
	out.VerifyConnection = func(cs tls.ConnectionState) error {
		cached, err := cache.Verify(cs.PeerCertificates, "")
		if err != nil {
			verifyCacheMisses.Inc()
			return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
		}
		if cached {
			verifyCacheHits.Inc()
		} else {
			verifyCacheMisses.Inc()
		}
		if next != nil {
			return next(cs)
		}
		return nil
	}
}

package netloop

import (
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"fmt"
	"os"
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

// Package devca mints a development certificate authority, a server
// certificate and vehicle client certificates, so the daemon, its tests and
// the load generator run without real vehicle PKI.
//
// The CA's subject CN is "TeslaMotors", an issuer the identity rules map to
// vehicle_device, so certificates it signs behave like a vehicle's.
package devca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// IssuerCN is the dev CA's subject CN: an issuer that maps to vehicle_device.
const IssuerCN = "TeslaMotors"

// File names inside a dev certificate directory.
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
)

// CA is a loaded or freshly made certificate authority able to sign.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// CertPEM is Cert in PEM form, for a client's or server's trust pool.
	CertPEM []byte
}

// New makes a new self-signed CA valid for ten years, named IssuerCN.
func New() (*CA, error) { return NewNamed(IssuerCN) }

// NewNamed makes a CA with another subject CN (tests use one that maps to
// no client type).
func NewNamed(cn string) (*CA, error) { return newCA(cn, time.Now().AddDate(10, 0, 0), nil) }

// NewIntermediate makes an intermediate CA named cn, signed by ca and
// valid as long as ca is, that may sign end-entity certificates only (path
// length 0). A server certificate it issues verifies against ca only when
// the server also sends the intermediate after it.
func (ca *CA) NewIntermediate(cn string) (*CA, error) { return newCA(cn, ca.Cert.NotAfter, ca) }

// newCA makes a CA named cn, valid from an hour ago to notAfter, signed by
// parent; without a parent it is self-signed, with one it may sign
// end-entity certificates only (path length 0).
func newCA(cn string, notAfter time.Time, parent *CA) (*CA, error) {
	what := "CA"
	if parent != nil {
		what = fmt.Sprintf("intermediate %q", cn)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devca: generate %s key: %w", what, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"fleet-telemetry dev CA"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        parent != nil,
	}
	issuer, issuerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		issuer, issuerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, issuerKey)
	if err != nil {
		return nil, fmt.Errorf("devca: sign %s: %w", what, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("devca: parse %s: %w", what, err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der)}, nil
}

// Load reads a CA certificate and its key from PEM files.
func Load(certFile, keyFile string) (*CA, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("devca: load CA %s: %w", certFile, err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("devca: CA key %s cannot sign", keyFile)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("devca: parse CA %s: %w", certFile, err)
	}
	return &CA{Cert: cert, Key: signer, CertPEM: pemBlock("CERTIFICATE", pair.Certificate[0])}, nil
}

// Pool returns a certificate pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Options shape one issued certificate.
type Options struct {
	// CommonName is the subject CN: the VIN for a vehicle.
	CommonName string
	// OrganizationalUnits are the subject OUs (identity rules read them).
	OrganizationalUnits []string
	// ExtraKeyUsageOIDs are appended as extended key usages, in order.
	ExtraKeyUsageOIDs []asn1.ObjectIdentifier
	// NotBefore and NotAfter default to an hour ago and one year on.
	NotBefore, NotAfter time.Time
	// Hosts (DNS names or IPs) make it a server certificate.
	Hosts []string
}

// Issue signs a new ECDSA P-256 certificate and returns it as a tls
// certificate (leaf parsed) plus its PEM certificate and key.
func (ca *CA) Issue(o Options) (tls.Certificate, []byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("devca: generate key: %w", err)
	}
	return ca.IssueFor(o, key)
}

// IssueFor signs a certificate for an existing key (the load generator reuses
// one key for many VINs to mint certificates quickly).
func (ca *CA) IssueFor(o Options, key *ecdsa.PrivateKey) (tls.Certificate, []byte, []byte, error) {
	if o.NotBefore.IsZero() {
		o.NotBefore = time.Now().Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().AddDate(1, 0, 0)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: o.CommonName, OrganizationalUnit: o.OrganizationalUnits},
		NotBefore:    o.NotBefore,
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	tmpl.UnknownExtKeyUsage = o.ExtraKeyUsageOIDs
	for _, h := range o.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if len(o.Hosts) > 0 {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("devca: sign %q: %w", o.CommonName, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("devca: parse %q: %w", o.CommonName, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, nil, nil, fmt.Errorf("devca: marshal key: %w", err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	return cert, pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", keyDER), nil
}

// Dir is a dev certificate directory as `fleet-telemetry certs dev` writes it.
type Dir struct {
	// Path is the directory.
	Path string
}

// VehicleCertFile and VehicleKeyFile name a vehicle's files in a Dir.
func (d Dir) VehicleCertFile(vin string) string { return filepath.Join(d.Path, vin+".crt") }

// VehicleKeyFile names a vehicle's private key file in a Dir.
func (d Dir) VehicleKeyFile(vin string) string { return filepath.Join(d.Path, vin+".key") }

// File joins a name from this package's constants to the directory.
func (d Dir) File(name string) string { return filepath.Join(d.Path, name) }

// DefaultVINs are the vehicles `certs dev` makes certificates for by default.
var DefaultVINs = []string{"5YJ3E1EA1KF000001", "5YJ3E1EA1KF000002", "5YJ3E1EA1KF000003"}

// WriteDir creates dir with a new CA (or reuses the one already there), a
// server certificate for 127.0.0.1 and localhost, and one client certificate
// per VIN. Existing files are kept, so re-running it is safe.
func WriteDir(dir string, vins []string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("devca: create %s: %w", dir, err)
	}
	d := Dir{Path: dir}
	var ca *CA
	if exists(d.File(CACertFile)) && exists(d.File(CAKeyFile)) {
		var err error
		if ca, err = Load(d.File(CACertFile), d.File(CAKeyFile)); err != nil {
			return nil, err
		}
	} else {
		var err error
		if ca, err = New(); err != nil {
			return nil, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Key)
		if err != nil {
			return nil, fmt.Errorf("devca: marshal CA key: %w", err)
		}
		if err := writeFiles(d.File(CACertFile), ca.CertPEM, d.File(CAKeyFile), pemBlock("PRIVATE KEY", keyDER)); err != nil {
			return nil, err
		}
	}
	if !exists(d.File(ServerCertFile)) {
		_, certPEM, keyPEM, err := ca.Issue(Options{CommonName: "localhost", Hosts: []string{"127.0.0.1", "::1", "localhost"}})
		if err != nil {
			return nil, err
		}
		if err := writeFiles(d.File(ServerCertFile), certPEM, d.File(ServerKeyFile), keyPEM); err != nil {
			return nil, err
		}
	}
	for _, vin := range vins {
		if exists(d.VehicleCertFile(vin)) {
			continue
		}
		_, certPEM, keyPEM, err := ca.Issue(Options{CommonName: vin})
		if err != nil {
			return nil, err
		}
		if err := writeFiles(d.VehicleCertFile(vin), certPEM, d.VehicleKeyFile(vin), keyPEM); err != nil {
			return nil, err
		}
	}
	return ca, nil
}

func writeFiles(certFile string, certPEM []byte, keyFile string, keyPEM []byte) error {
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return fmt.Errorf("devca: write %s: %w", keyFile, err)
	}
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return fmt.Errorf("devca: write %s: %w", certFile, err)
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, os.ErrNotExist)
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		// crypto/rand never fails on Linux; a fixed serial is still valid.
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

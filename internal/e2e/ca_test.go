package e2e

import (
	"crypto/x509"
	"net"
	"testing"
)

// The intermediate NewCAChain mints verifies up to its root, and to no
// other.
func TestNewCAChain(t *testing.T) {
	root, inter := NewCAChain(t, "Chain Root", "Chain Intermediate")
	if inter.Cert.Subject.CommonName != "Chain Intermediate" || inter.Cert.Issuer.CommonName != "Chain Root" || !inter.Cert.IsCA {
		t.Fatalf("intermediate %s issued by %s (CA %v)", inter.Cert.Subject, inter.Cert.Issuer, inter.Cert.IsCA)
	}
	if _, err := inter.Cert.Verify(x509.VerifyOptions{Roots: root.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the intermediate does not verify under its root: %v", err)
	}
	other := NewCA(t, "Chain Root")
	if _, err := inter.Cert.Verify(x509.VerifyOptions{Roots: other.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		t.Error("the intermediate verifies under another root of the same name")
	}
}

// The port PortInUse returns cannot be bound while the test runs.
func TestPortInUse(t *testing.T) {
	addr := PortInUse(t)
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("%s could be bound again", addr)
	}
}

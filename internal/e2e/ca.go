package e2e

import "github.com/fleet-telemetry/fleet-telemetry/internal/devca"

// NewCA mints a root CA whose subject CN is cn (devca.NewNamed), failing
// the test on an error.
func NewCA(t TB, cn string) *devca.CA {
	t.Helper()
	ca, err := devca.NewNamed(cn)
	if err != nil {
		t.Fatalf("CA %q: %v", cn, err)
	}
	return ca
}

// NewCAChain mints a root CA named rootCN and an intermediate CA named
// interCN that it signs, failing the test on an error.
func NewCAChain(t TB, rootCN, interCN string) (root, inter *devca.CA) {
	t.Helper()
	root = NewCA(t, rootCN)
	inter, err := root.NewIntermediate(interCN)
	if err != nil {
		t.Fatalf("intermediate %q under %q: %v", interCN, rootCN, err)
	}
	return root, inter
}

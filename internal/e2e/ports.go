package e2e

import "net"

// PortInUse returns 127.0.0.1:<port> with a listener holding the port
// until the test ends, for tests of a bind that must fail.
func PortInUse(t TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// Package e2e is what drives the real daemon from outside, shared by the
// end-to-end tests (test/), the packages that run real peers for tests
// (brokertest, kfaketest, kinesistest) and the load generator (bench/):
// the daemon's /metrics read with Prometheus' own text parser, vehicles
// that send and wait for acks, free ports, and the one rule for something
// a test needs that this machine lacks. It imports no sink package (sink
// tests use it); the configs the tests write are config.Config values.
package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
)

// TB is the part of testing.TB the helpers use (the bench links this
// package without the testing package).
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Cleanup(func())
}

// UnderCI reports whether the tests run under CI: the environment
// variable CI is "true". That is what the CI systems set (GitHub Actions,
// GitLab CI, CircleCI, Travis, Buildkite) before .ci/run runs make test,
// and what the README and every test-support package mean by CI. Under CI a
// missing tool fails the test instead of skipping it: .ci/run installs
// them all, so a skip there would hide a broken install.
func UnderCI() bool { return os.Getenv("CI") == "true" }

// Unavailable ends a test that needs something this machine lacks: it is
// skipped, saying what and why, or failed under CI.
func Unavailable(t TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if UnderCI() {
		t.Fatalf("%s; CI=true: .ci/run must provide it", msg)
	}
	t.Skipf("%s; skipping (under CI=true this fails)", msg)
}

// NeedTool returns the path of an external program (from PATH, else
// /usr/sbin or /usr/bin, where Debian puts daemons), or ends the test as
// Unavailable naming the Debian package that has it.
func NeedTool(t TB, name, debianPackage string) string {
	t.Helper()
	if p := ToolPath(name); p != "" {
		return p
	}
	Unavailable(t, "%s is not installed (Debian package %s)", name, debianPackage)
	return ""
}

// ToolPath is the path of an external program as NeedTool finds it, or "".
func ToolPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// FreePort returns a TCP port that was free a moment ago on 127.0.0.1.
func FreePort(t TB) int {
	t.Helper()
	p, err := PickPort()
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	return p
}

// PickPort returns a TCP port that was free a moment ago on 127.0.0.1 and
// is none of avoid.
func PickPort(avoid ...int) (int, error) {
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !slices.Contains(avoid, port) {
			return port, nil
		}
	}
}

package test

// The configs the end-to-end tests write: config.Config values, written
// in the reference's file format by config.Marshal.

import (
	"os"
	"testing"

	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
)

// baseConfig is what every test's config starts from: 127.0.0.1 on a free
// port (port 0), JSON logs at info (the tests read them), the default
// namespace, the server certificate and CA of the devca directory certs,
// the spool in spoolDir. It routes nothing yet.
func baseConfig(certs, spoolDir string) *config.Config {
	d := devca.Dir{Path: certs}
	return &config.Config{
		Host: "127.0.0.1", Port: 0, LogLevel: "info", JSONLogEnable: true,
		Namespace: config.DefaultNamespace,
		TLS: config.TLS{
			ServerCert: d.File(devca.ServerCertFile), ServerKey: d.File(devca.ServerKeyFile),
			CAFile: d.File(devca.CACertFile),
		},
		Spool: config.Spool{Dir: spoolDir},
	}
}

// allTypes routes every record type to dispatchers.
func allTypes(dispatchers ...string) map[string][]string {
	return map[string][]string{"V": dispatchers, "alerts": dispatchers, "errors": dispatchers, "connectivity": dispatchers}
}

// writeConfigFile writes c to path.
func writeConfigFile(t *testing.T, path string, c *config.Config) {
	t.Helper()
	b, err := config.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// editConfig loads the config file at path, lets edit change it and writes
// it back (the keys it left out are written with their defaults, which
// mean the same).
func editConfig(t *testing.T, path string, edit func(*config.Config)) {
	t.Helper()
	c, _, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	edit(c)
	writeConfigFile(t, path, c)
}

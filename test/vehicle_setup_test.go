package test

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
)

// TestVehicleSetup follows the vehicle side of the setup against the
// daemon: vehicle-config makes the vehicle configuration from the CA
// file, then check-server connects to the daemon as a vehicle would while
// the daemon serves, in turn (each a SIGHUP reload), a good chain, an
// expired certificate, one for another name, its certificate without the
// intermediate, and a chain from a CA the configuration does not carry.
func TestVehicleSetup(t *testing.T) {
	dir := t.TempDir()
	configPath, certs := writeConfig(t, dir)
	dev := devca.Dir{Path: certs}

	root, inter := e2e.NewCAChain(t, "Vehicle Setup Root", "Vehicle Setup Intermediate")
	elsewhere, elsewhereInter := e2e.NewCAChain(t, "Elsewhere Root", "Elsewhere Intermediate")
	write := func(name string, parts ...[]byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, bytes.Join(parts, nil), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	rootFile := write("root.pem", root.CertPEM)
	rootAndInterFile := write("root-and-intermediate.pem", root.CertPEM, inter.CertPEM)
	elsewhereFile := write("elsewhere-root.pem", elsewhere.CertPEM)
	noRoots := write("no-roots.pem")
	noRootsDir := filepath.Join(dir, "no-roots")
	os.Mkdir(noRootsDir, 0o700)
	// The machine's roots, for telling a CA missing from the vehicle
	// configuration from a broken chain: none, unless a case says so.
	isolated := []string{"SSL_CERT_FILE=" + noRoots, "SSL_CERT_DIR=" + noRootsDir}

	serverCert, serverKey := filepath.Join(dir, "server-chain.pem"), filepath.Join(dir, "server.key")
	issue := func(ca *devca.CA, o devca.Options) (certPEM, keyPEM []byte) {
		t.Helper()
		if o.Hosts == nil {
			o.Hosts = []string{"localhost", "127.0.0.1"}
		}
		o.CommonName = "telemetry server"
		_, certPEM, keyPEM, err := ca.Issue(o)
		if err != nil {
			t.Fatal(err)
		}
		return certPEM, keyPEM
	}
	leafPEM, leafKey := issue(inter, devca.Options{})
	write("server-chain.pem", leafPEM, inter.CertPEM)
	write("server.key", leafKey)
	editConfig(t, configPath, func(c *config.Config) {
		c.TLS = config.TLS{ServerCert: serverCert, ServerKey: serverKey, CAFile: dev.File(devca.CACertFile)}
	})
	d := startDaemon(t, configPath)
	_, port, _ := net.SplitHostPort(d.addr)

	reloads := 0
	serve := func(keyPEM []byte, chain ...[]byte) {
		t.Helper()
		write("server-chain.pem", chain...)
		write("server.key", keyPEM)
		reloads++
		d.cmd.Process.Signal(syscall.SIGHUP)
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(d.logText(), "reloaded TLS certificates") < reloads {
			if time.Now().After(deadline) {
				t.Fatalf("no reload %d in the logs:\n%s", reloads, d.logText())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// The vehicle configuration, from the root's file.
	out, errs, code := runBinary(t, dir, binary, "vehicle-config", "-hostname", "localhost", "-port", port, "-ca", rootFile,
		"-fields", "VehicleSpeed:10,Location:30,BatteryLevel:60", "-alert-types", "service")
	if code != 0 || errs != "" {
		t.Fatalf("vehicle-config: exit %d\n%s%s", code, out, errs)
	}
	var vc struct {
		Hostname   string                            `json:"hostname"`
		Port       int                               `json:"port"`
		CA         string                            `json:"ca"`
		Fields     map[string]map[string]json.Number `json:"fields"`
		AlertTypes []string                          `json:"alert_types"`
	}
	if err := json.Unmarshal([]byte(out), &vc); err != nil {
		t.Fatalf("vehicle-config printed no JSON: %v\n%s", err, out)
	}
	if vc.Hostname != "localhost" || port != strconv.Itoa(vc.Port) || vc.CA != string(root.CertPEM) ||
		len(vc.Fields) != 3 || vc.Fields["Location"]["interval_seconds"] != "30" || len(vc.AlertTypes) != 1 || vc.AlertTypes[0] != "service" {
		t.Fatalf("vehicle configuration:\n%s", out)
	}
	vcFile := write("vehicle-config.json", []byte(out))
	out, errs, code = runBinary(t, dir, binary, "vehicle-config", "-check", vcFile)
	if code != 0 || out != "vehicle configuration ok\n" || errs != "" {
		t.Fatalf("vehicle-config -check on its own output: exit %d\n%s%s", code, out, errs)
	}
	// One with the intermediate in its ca too.
	out, errs, code = runBinary(t, dir, binary, "vehicle-config", "-hostname", "localhost", "-port", port, "-ca", rootAndInterFile, "-fields", "VehicleSpeed:10")
	if code != 0 {
		t.Fatalf("vehicle-config: exit %d\n%s%s", code, out, errs)
	}
	vcWithInter := write("vehicle-config-with-intermediate.json", []byte(out))

	check := func(t *testing.T, env []string, args ...string) (string, string, int) {
		t.Helper()
		out, errs, code := runBinaryEnv(t, dir, env, binary, append([]string{"check-server"}, args...)...)
		t.Logf("check-server %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
		return out, errs, code
	}
	wantProblems := func(t *testing.T, out, errs string, code int, problems ...string) {
		t.Helper()
		if code != 1 || strings.Contains(out, "ok: ") {
			t.Errorf("exit %d, want 1 and no ok", code)
		}
		if n := strings.Count(errs, "\n  "); n != len(problems) {
			t.Errorf("%d problems, want %d", n, len(problems))
		}
		for _, p := range problems {
			if !strings.Contains(errs, p) {
				t.Errorf("stderr does not say %q", p)
			}
		}
	}
	rootName := `"CN=Vehicle Setup Root,O=fleet-telemetry dev CA"`
	interName := `"CN=Vehicle Setup Intermediate,O=fleet-telemetry dev CA"`

	t.Run("good", func(t *testing.T) {
		out, errs, code := check(t, isolated, "-config", vcFile)
		for _, want := range []string{
			"server       localhost:" + port + ", hostname localhost, TLS 1.3, ",
			"subject      CN=telemetry server\n",
			"issuer       CN=Vehicle Setup Intermediate,O=fleet-telemetry dev CA\n",
			"(expires in ",
			"names        DNS:localhost, IP:127.0.0.1\n",
			`sent chain   2 certificate(s): "CN=telemetry server" <- ` + interName + "\n",
			`verified     "CN=telemetry server" <- ` + interName + ` <- ` + rootName + " (from ca)\n",
			"client cert  asked for, none presented",
			"ok: a vehicle with this configuration trusts localhost\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("stdout does not say %q", want)
			}
		}
		if code != 0 || errs != "" {
			t.Errorf("exit %d, stderr %q", code, errs)
		}
		// With a vehicle's certificate the daemon accepts; the address
		// given with -connect, the configuration given as flags.
		out, _, code = check(t, isolated, "-hostname", "localhost", "-ca", rootFile, "-connect", d.addr,
			"-cert", dev.VehicleCertFile(vins[0]), "-key", dev.VehicleKeyFile(vins[0]))
		if code != 0 || !strings.Contains(out, "server       "+d.addr+", hostname localhost") || !strings.Contains(out, "client cert  asked for, presented and accepted") {
			t.Errorf("with a vehicle certificate: exit %d", code)
		}
	})

	t.Run("expired", func(t *testing.T) {
		now := time.Now()
		certPEM, keyPEM := issue(inter, devca.Options{NotBefore: now.Add(-50 * time.Minute), NotAfter: now.Add(-10 * time.Minute)})
		serve(keyPEM, certPEM, inter.CertPEM)
		out, errs, code := check(t, isolated, "-config", vcFile)
		wantProblems(t, out, errs, code, `the server certificate "CN=telemetry server" expired on `)
		if !strings.Contains(out, "(EXPIRED)") {
			t.Error("stdout does not mark the certificate EXPIRED")
		}
	})

	t.Run("wrong name", func(t *testing.T) {
		certPEM, keyPEM := issue(inter, devca.Options{Hosts: []string{"telemetry.example.com", "192.0.2.10"}})
		serve(keyPEM, certPEM, inter.CertPEM)
		out, errs, code := check(t, isolated, "-config", vcFile)
		wantProblems(t, out, errs, code, `wrong name: the server certificate is not valid for "localhost"; it names DNS:telemetry.example.com, IP:192.0.2.10`)
	})

	t.Run("incomplete chain", func(t *testing.T) {
		certPEM, keyPEM := issue(inter, devca.Options{})
		serve(keyPEM, certPEM) // without the intermediate
		out, errs, code := check(t, isolated, "-config", vcFile)
		wantProblems(t, out, errs, code, `incomplete chain: the server sends only its own certificate, issued by "CN=Vehicle Setup Intermediate,O=fleet-telemetry dev CA", and the vehicle configuration's ca (`+rootName+`) does not hold that issuer`)
		if !strings.Contains(out, "sent chain   1 certificate(s)") || !strings.Contains(out, "verified     no:") {
			t.Error("stdout does not show one certificate sent and no verified chain")
		}
		// A ca holding the intermediate verifies it: still incomplete,
		// as only vehicles that already hold the intermediate can.
		out, errs, code = check(t, isolated, "-config", vcWithInter)
		wantProblems(t, out, errs, code, `incomplete chain: the server does not send `+interName+`; its certificate verifies only because the vehicle configuration's ca carries `+interName)
	})

	t.Run("CA not in the vehicle configuration", func(t *testing.T) {
		certPEM, keyPEM := issue(elsewhereInter, devca.Options{})
		serve(keyPEM, certPEM, elsewhereInter.CertPEM)
		out, errs, code := check(t, isolated, "-config", vcFile)
		wantProblems(t, out, errs, code, `a CA the vehicle configuration does not carry: the server's chain ends at "CN=Elsewhere Intermediate,O=fleet-telemetry dev CA", issued by "CN=Elsewhere Root,O=fleet-telemetry dev CA", which the ca does not hold (it holds `+rootName+`)`)
		// When this machine trusts that root, the check says so.
		out, errs, code = check(t, []string{"SSL_CERT_FILE=" + elsewhereFile, "SSL_CERT_DIR=" + noRootsDir}, "-config", vcFile)
		wantProblems(t, out, errs, code, `a CA the vehicle configuration does not carry: the server's chain verifies against this machine's system roots, up to "CN=Elsewhere Root,O=fleet-telemetry dev CA", but not against the ca`)
	})

	t.Run("refused", func(t *testing.T) {
		d.stop(t)
		out, errs, code := check(t, isolated, "-config", vcFile, "-timeout", "5s")
		wantProblems(t, out, errs, code, "connection refused by localhost:"+port)
	})
}

// TestVehicleConfigTypos: a misspelt field is an error naming the closest
// names, and nothing is printed on stdout; -check names every problem of
// a file.
func TestVehicleConfigTypos(t *testing.T) {
	dir := t.TempDir()
	root := e2e.NewCA(t, "Typo Root")
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, root.CertPEM, 0o600)
	out, errs, code := runBinary(t, dir, binary, "vehicle-config", "-hostname", "t.example.com", "-ca", caFile, "-fields", "VehicleSped:10,batterylevel:60,Location:30")
	if code != 1 || out != "" {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
	for _, want := range []string{
		"2 problem(s)",
		`"VehicleSped" is not a field name; did you mean VehicleSpeed?`,
		`"batterylevel" is not a field name; did you mean BatteryLevel?`,
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr does not say %q:\n%s", want, errs)
		}
	}

	file := filepath.Join(dir, "vehicle.json")
	os.WriteFile(file, []byte(`{"hostname": "https://t.example.com", "port": 0, "ca": "not PEM",
		"fields": {"VehicleSpeed": {"interval_seconds": 0}, "Locaton": {"interval_seconds": 30}}, "exp": 1}`), 0o600)
	out, errs, code = runBinary(t, dir, binary, "vehicle-config", "-check", file)
	if code != 1 || out != "" {
		t.Fatalf("-check: exit %d, stdout %q", code, out)
	}
	for _, want := range []string{
		"6 problem(s)", `hostname "https://t.example.com" holds a URL scheme`, "port 0 is out of range",
		"ca holds no PEM certificate", "fields.VehicleSpeed.interval_seconds is 0", `"Locaton" is not a field name; did you mean Location?`,
		"exp 1 (1970-01-01 00:00:01 UTC) is in the past",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("-check: stderr does not say %q:\n%s", want, errs)
		}
	}
	out, _, code = runBinary(t, dir, binary, "vehicle-config", "-list-fields")
	if code != 0 || !strings.Contains(out, "\nVehicleSpeed\n") || strings.Contains(out, "Deprecated") {
		t.Errorf("-list-fields: exit %d\n%s", code, out)
	}
}

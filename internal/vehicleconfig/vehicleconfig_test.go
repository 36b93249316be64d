package vehicleconfig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/messagetest"
	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// caPEM makes a self-signed certificate valid from notBefore to notAfter.
func caPEM(t *testing.T, cn string, notBefore, notAfter time.Time, isCA bool) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter,
		BasicConstraintsValid: true, IsCA: isCA,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestFieldNames(t *testing.T) {
	names := FieldNames()
	if want := len(pb.Field_value) - 4; len(names) != want { // Unknown, Deprecated_1..3
		t.Fatalf("%d names, want %d", len(names), want)
	}
	if !slices.IsSorted(names) {
		t.Error("names are not sorted")
	}
	for _, n := range []string{"VehicleSpeed", "Location", "BatteryLevel", "Soc", "SelfDrivingMilesSinceReset"} {
		if !slices.Contains(names, n) || !IsField(n) {
			t.Errorf("%s is not a field", n)
		}
	}
	for _, n := range []string{"Unknown", "Deprecated_1", "Deprecated_2", "Deprecated_3", "vehiclespeed", ""} {
		if slices.Contains(names, n) || IsField(n) {
			t.Errorf("%q is a field", n)
		}
	}
}

func TestSuggest(t *testing.T) {
	for _, tc := range []struct {
		typo  string
		first string // "" : no suggestion
	}{
		{"VehicleSped", "VehicleSpeed"},
		{"vehiclespeed", "VehicleSpeed"}, // letter case
		{"Locaton", "Location"},
		{"BatteryLvl", "BatteryLevel"},
		{"Odometr", "Odometer"},
		{"Gaer", "Gear"},
		{"ChargeAmp", "ChargeAmps"},
		{"TpmsPressure", "TpmsPressureFl"}, // a prefix of several
		{"xyzzy", ""},
		{"", ""},
	} {
		got := Suggest(tc.typo, 3)
		if len(got) > 3 {
			t.Errorf("Suggest(%q) = %v: more than 3", tc.typo, got)
		}
		if tc.first == "" {
			if len(got) != 0 {
				t.Errorf("Suggest(%q) = %v, want none", tc.typo, got)
			}
			continue
		}
		if len(got) == 0 || got[0] != tc.first {
			t.Errorf("Suggest(%q) = %v, want %s first", tc.typo, got, tc.first)
		}
	}
}

func TestDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"a", "", 1}, {"kitten", "sitting", 3}, {"gear", "gaer", 2}, {"été", "ete", 2}} {
		if d := distance(tc.a, tc.b); d != tc.d {
			t.Errorf("distance(%q, %q) = %d, want %d", tc.a, tc.b, d, tc.d)
		}
	}
}

func TestBuild(t *testing.T) {
	now := time.Now() // devca's certificates are valid from an hour ago
	root, err := devca.NewNamed("Build Test Root")
	if err != nil {
		t.Fatal(err)
	}
	// Text around the certificate (as openssl x509 -text writes it) is
	// dropped; the certificate is kept as PEM.
	file := "Certificate:\n    Data: ...\n" + string(root.CertPEM)
	out, r := Build(Options{
		Hostname: "telemetry.example.com", CAPEM: []byte(file),
		Fields:     "VehicleSpeed:10, Location:30,BatteryLevel:60",
		AlertTypes: []string{"service"}, Exp: now.Add(24 * time.Hour).Unix(), Now: now,
	})
	if !r.OK() || len(r.Warnings) != 0 {
		t.Fatalf("report %+v", r)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	want := map[string]any{
		"hostname": "telemetry.example.com",
		"port":     float64(443),
		"ca":       string(root.CertPEM),
		"fields": map[string]any{
			"VehicleSpeed": map[string]any{"interval_seconds": float64(10)},
			"Location":     map[string]any{"interval_seconds": float64(30)},
			"BatteryLevel": map[string]any{"interval_seconds": float64(60)},
		},
		"alert_types": []any{"service"},
		"exp":         float64(now.Add(24 * time.Hour).Unix()),
	}
	if a, b := mustJSON(t, got), mustJSON(t, want); a != b {
		t.Fatalf("built\n%s\nwant\n%s", a, b)
	}
	if !strings.HasSuffix(string(out), "}\n") || !strings.Contains(string(out), "\n  \"hostname\"") {
		t.Errorf("not indented, newline-terminated JSON:\n%s", out)
	}
	// What Build makes, Check passes.
	if r := Check(out, now); !r.OK() || len(r.Warnings) > 0 {
		t.Errorf("Check on Build's output: %+v", r)
	}

	// Without -exp and -alert-types: neither key; another port.
	out, r = Build(Options{Hostname: "t.example", Port: 8443, CAPEM: root.CertPEM, Fields: "Gear:1", Now: now})
	if !r.OK() {
		t.Fatalf("report %+v", r)
	}
	var cfg map[string]any
	json.Unmarshal(out, &cfg)
	if _, ok := cfg["exp"]; ok {
		t.Errorf("exp without -exp:\n%s", out)
	}
	if _, ok := cfg["alert_types"]; ok {
		t.Errorf("alert_types without -alert-types:\n%s", out)
	}
	if cfg["port"] != float64(8443) {
		t.Errorf("port %v", cfg["port"])
	}
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBuildNamesEveryProblem: one run lists each problem, nothing is
// printed.
func TestBuildNamesEveryProblem(t *testing.T) {
	expired := caPEM(t, "Old Root", now.AddDate(-2, 0, 0), now.AddDate(0, -1, 0), true)
	out, r := Build(Options{
		Hostname: "https://telemetry.example.com", Port: 70000, CAPEM: []byte(expired),
		Fields:     "VehicleSped:10,BatteryLevel:0,Locaton:x,Gear,Odometer:5,Odometer:6,Deprecated_1:5",
		AlertTypes: []string{"service", ""}, Exp: now.Add(-time.Hour).Unix(), Now: now,
	})
	if out != nil {
		t.Errorf("output despite problems:\n%s", out)
	}
	for _, want := range []string{
		`hostname "https://telemetry.example.com" holds a URL scheme`,
		"port 70000 is out of range",
		`ca certificate "CN=Old Root" expired on 2026-05-01 12:00:00 UTC`,
		`"VehicleSped" is not a field name; did you mean VehicleSpeed?`,
		"fields.BatteryLevel.interval_seconds is 0: it must be 1 or more seconds",
		`"Locaton" is not a field name; did you mean Location?`,
		`Locaton interval "x" is not a whole number of seconds`,
		`"Gear" has no interval: give Name:seconds, like Gear:10`,
		"Odometer is given twice",
		"Deprecated_1 is a placeholder in the Field enum",
		"alert_types holds an empty name",
		"is in the past: the configuration has expired",
	} {
		if !messagetest.Contains(r.Problems, want) {
			t.Errorf("no problem says %q:\n%s", want, strings.Join(r.Problems, "\n"))
		}
	}
	if len(r.Problems) != 12 {
		t.Errorf("%d problems, want 12:\n%s", len(r.Problems), strings.Join(r.Problems, "\n"))
	}

	// Nothing given: each missing part is named.
	_, r = Build(Options{Now: now})
	for _, want := range []string{"hostname is empty", "no ca given", "no fields given"} {
		if !messagetest.Contains(r.Problems, want) {
			t.Errorf("no problem says %q:\n%s", want, strings.Join(r.Problems, "\n"))
		}
	}
}

func TestCheck(t *testing.T) {
	good := caPEM(t, "Root", now.AddDate(-1, 0, 0), now.AddDate(5, 0, 0), true)
	soon := caPEM(t, "Soon Root", now.AddDate(-1, 0, 0), now.AddDate(0, 0, 10), true)
	future := caPEM(t, "Future Root", now.AddDate(0, 0, 1), now.AddDate(5, 0, 0), true)
	leaf := caPEM(t, "leaf", now.AddDate(-1, 0, 0), now.AddDate(1, 0, 0), false)
	js := func(v string) string { b, _ := json.Marshal(v); return string(b) }
	base := func(extra string) string {
		return `{"hostname": "t.example.com", "port": 443, "ca": ` + js(good) + `, "fields": {"VehicleSpeed": {"interval_seconds": 10}}` + extra + `}`
	}
	for _, tc := range []struct {
		name     string
		file     string
		problems []string // each a substring of one problem; none: ok
		warnings []string
	}{
		{"good", base(`, "alert_types": ["service"], "exp": ` + `1893456000`), nil, nil},
		{"no port is 443", `{"hostname": "t.example.com", "ca": ` + js(good) + `, "fields": {"Soc": {"interval_seconds": 1}}}`, nil, nil},
		{"more field settings", `{"hostname": "t.example.com", "ca": ` + js(good) + `, "fields": {"Soc": {"interval_seconds": 60, "minimum_delta": 0.5, "resend_interval_seconds": 3600}}}`, nil, nil},
		{"not JSON", `{"hostname": "t.example.com",` + "\n" + `  "port": 443,,}`, []string{"not valid JSON: invalid character ',' looking for beginning of object key string (line 2, column 15)"}, nil},
		{"empty file", ``, []string{"the file is empty"}, nil},
		{"a list", `[1]`, []string{"the file holds a list, not a JSON object"}, nil},
		{"two values", `{} {}`, []string{"more than one value"}, nil},
		{"nothing", `{}`, []string{"hostname is missing", "ca is missing", "fields is missing"}, nil},
		{"wrong types", `{"hostname": 7, "port": "443", "ca": [], "fields": [], "alert_types": "service", "exp": 1.5}`, []string{
			"hostname must be a string, not a number", `port must be a whole number from 1 to 65535, not "443"`,
			"ca must be a string of PEM text, not a list", "fields must be an object", `alert_types must be a list of strings like ["service"], not "service"`,
			"exp must be a whole number of Unix seconds, not 1.5"}, nil},
		{"bad hostname", `{"hostname": "t.example.com:443", "port": 0, "ca": ` + js(good) + `, "fields": {"Soc": {"interval_seconds": 1}}}`,
			[]string{`hostname "t.example.com:443" holds a port: give "t.example.com" as hostname and 443 as port`, "port 0 is out of range"}, nil},
		{"hostname path", strings.Replace(base(""), "t.example.com", "t.example.com/ws", 1), []string{`holds a path`}, nil},
		{"hostname label", strings.Replace(base(""), "t.example.com", "t_x.example.com", 1), []string{`"t_x" is not a valid label`}, nil},
		{"hostname IP", strings.Replace(base(""), "t.example.com", "192.0.2.7", 1), nil, nil},
		{"fields", `{"hostname": "t.example.com", "ca": ` + js(good) + `, "fields": {
			"VehicleSped": {"interval_seconds": 10}, "BatteryLevel": {"interval_seconds": 0}, "Gear": {"interval_seconds": "10"},
			"Odometer": {}, "Location": 10, "Soc": {"interval_seconds": 5, "minimum_delta": -1, "resend_interval_seconds": -2, "intervall": 3},
			"Unknown": {"interval_seconds": 1}}}`, []string{
			`"VehicleSped" is not a field name; did you mean VehicleSpeed?`,
			"fields.BatteryLevel.interval_seconds is 0",
			`fields.Gear.interval_seconds must be a whole number of seconds, not "10"`,
			"fields.Odometer has no interval_seconds",
			`fields.Location must be an object like {"interval_seconds": 10}, not 10`,
			"fields.Soc.minimum_delta must be a number of 0 or more, not -1",
			"fields.Soc.resend_interval_seconds is -2: it must be 0 or more seconds",
			"Unknown is a placeholder in the Field enum"},
			[]string{"fields.Soc.intervall is not a setting this check knows"}},
		{"empty fields", `{"hostname": "t.example.com", "ca": ` + js(good) + `, "fields": {}}`, []string{"fields is empty"}, nil},
		{"ca not PEM", strings.Replace(base(""), js(good), `"MIIB..."`, 1), []string{"ca holds no PEM certificate"}, nil},
		{"ca escaped twice", strings.Replace(base(""), js(good), js(strings.ReplaceAll(good, "\n", `\n`)), 1), []string{`the two characters \n where line breaks belong`}, nil},
		{"ca with a key", strings.Replace(base(""), js(good), js(good+"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 1),
			[]string{`ca: PEM block 2 is "PRIVATE KEY", not a CERTIFICATE: a private key must never go into a vehicle configuration`}, nil},
		{"ca trailing text", strings.Replace(base(""), js(good), js(good+"junk\n"), 1), []string{`ca: text after PEM block 1 is not PEM: "junk"`}, nil},
		{"ca broken certificate", strings.Replace(base(""), js(good), js("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), 1),
			[]string{"ca: certificate 1 does not parse", "ca holds no certificate"}, nil},
		{"ca dates", strings.Replace(base(""), js(good), js(good+soon+future+leaf), 1),
			[]string{`ca certificate "CN=Future Root" is not valid before 2026-06-02 12:00:00 UTC`},
			[]string{`ca certificate "CN=Soon Root" expires on 2026-06-11 12:00:00 UTC, in 10 days`, `ca certificate "CN=leaf" is not a CA certificate`}},
		{"exp", base(`, "exp": 1700000000000`), []string{"exp 1700000000000 looks like milliseconds: it is Unix seconds (1700000000)"}, nil},
		{"exp past", base(`, "exp": 1700000000`), []string{"exp 1700000000 (2023-11-14 22:13:20 UTC) is in the past"}, nil},
		{"alert types", base(`, "alert_types": ["service", "service", "customer", 3]`), []string{"alert_types must be a list of strings"}, nil},
		{"alert types warnings", base(`, "alert_types": ["service", "service", "customer"]`), nil,
			[]string{`alert_types lists "service" twice`, `alert_types "customer": the reference server's documentation recommends "service" only`}},
		{"unknown key", base(`, "prefer_typed": true`), nil, []string{`"prefer_typed" is not a key this check knows`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Check([]byte(tc.file), now)
			messagetest.Match(t, "problem", r.Problems, tc.problems)
			messagetest.Match(t, "warning", r.Warnings, tc.warnings)
		})
	}
}

func TestParse(t *testing.T) {
	root, _ := devca.NewNamed("Parse Root")
	b, _ := json.Marshal(map[string]any{"hostname": "t.example.com", "ca": string(root.CertPEM), "fields": map[string]any{}})
	cfg, err := Parse(b)
	if err != nil || cfg.Hostname != "t.example.com" || cfg.Port != DefaultPort || cfg.CA != string(root.CertPEM) {
		t.Fatalf("Parse = %+v, %v", cfg, err)
	}
	for file, want := range map[string]string{
		`{"port": 443}`:                  "no hostname and no ca",
		`{"hostname": "h", "ca": 7}`:     "cannot unmarshal number",
		`{"hostname": "h"`:               "not valid JSON",
		`{"hostname": "h", "ca": "x"} x`: "not valid JSON",
	} {
		if _, err := Parse([]byte(file)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s) = %v, want %q", file, err, want)
		}
	}
}

package netloop

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/testkit"
)

func oid(last ...int) asn1.ObjectIdentifier {
	return append(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 49279, 2}, last...)
}

func issue(t *testing.T, issuerCN string, o devca.Options) *x509.Certificate {
	t.Helper()
	ca, err := devca.NewNamed(issuerCN)
	if err != nil {
		t.Fatal(err)
	}
	cert, _, _, err := ca.Issue(o)
	if err != nil {
		t.Fatal(err)
	}
	return cert.Leaf
}

func TestIdentityRules(t *testing.T) {
	cases := []struct {
		name     string
		issuer   string
		opts     devca.Options
		wantType string
		wantID   string
		wantErr  error
	}{
		{"TeslaMotors issuer", "TeslaMotors", devca.Options{CommonName: "5YJ3E1EA1KF000001"}, "vehicle_device", "5YJ3E1EA1KF000001", nil},
		{"Tesla Issuing CA", "Tesla Issuing CA", devca.Options{CommonName: "VIN1"}, "vehicle_device", "VIN1", nil},
		{"dots become dashes", "TeslaMotors", devca.Options{CommonName: "a.b.c"}, "vehicle_device", "a-b-c", nil},
		{"Products CA", "Tesla Motors Products CA", devca.Options{CommonName: "VIN2"}, "vehicle_device", "VIN2", nil},
		{"Products CA board", "Tesla Motors Products CA", devca.Options{CommonName: "VIN3", OrganizationalUnits: []string{"Tesla Motors SN"}}, "vehicle_board_device", "VIN3", nil},
		{"Products CA board OU not first", "Tesla Motors Products CA", devca.Options{CommonName: "VIN3", OrganizationalUnits: []string{"x", "Tesla Motors SN"}}, "vehicle_device", "VIN3", nil},
		{"OID prod vehicle", "Tesla Motors Product Issuing CA", devca.Options{CommonName: "V4", ExtraKeyUsageOIDs: []asn1.ObjectIdentifier{oid(5, 1)}}, "vehicle_device", "V4", nil},
		{"OID eng board", "Tesla Motors GF3 Product Issuing CA", devca.Options{CommonName: "V5", ExtraKeyUsageOIDs: []asn1.ObjectIdentifier{oid(4, 11)}}, "vehicle_board_device", "V5", nil},
		{"OID energy", "Tesla Energy Product Issuing CA", devca.Options{CommonName: "E1", ExtraKeyUsageOIDs: []asn1.ObjectIdentifier{oid(5, 2)}}, "energy_device", "E1", nil},
		{"OID das / service / robotics", "Tesla Product Access Issuing CA", devca.Options{CommonName: "D1", ExtraKeyUsageOIDs: []asn1.ObjectIdentifier{oid(5, 12)}}, "das_device", "D1", nil},
		{"OID vehicle_service", "Tesla GF Berlin Product Access Issuing CA", devca.Options{CommonName: "S1", ExtraKeyUsageOIDs: []asn1.ObjectIdentifier{oid(5, 14)}}, "vehicle_service", "S1", nil},
		{"OID das_service", "Tesla GF Austin Product Access Issuing CA", devca.Options{CommonName: "S2", ExtraKeyUsageOIDs: []asn1.ObjectIdentifier{oid(4, 15)}}, "das_service", "S2", nil},
		{"OID energy_service", "Tesla China Product Access Issuing CA", devca.Options{CommonName: "S3", ExtraKeyUsageOIDs: []asn1.ObjectIdentifier{oid(5, 16)}}, "energy_service", "S3", nil},
		{"OID robotics", "Tesla GF0 Product Access Issuing CA", devca.Options{CommonName: "R1", ExtraKeyUsageOIDs: []asn1.ObjectIdentifier{oid(5, 28)}}, "robotics_device", "R1", nil},
		{"first known OID decides", "Tesla Motors Product RSA Issuing CA", devca.Options{CommonName: "V6", ExtraKeyUsageOIDs: []asn1.ObjectIdentifier{{1, 2, 3}, oid(5, 2), oid(5, 1)}}, "energy_device", "V6", nil},
		{"Wi-Fi EAP refused", "Tesla Motors Product Issuing CA", devca.Options{CommonName: "W1", ExtraKeyUsageOIDs: []asn1.ObjectIdentifier{oid(5, 1, 1), oid(5, 1)}}, "", "", ErrExcludedOID},
		{"excluded OID after a known one does not refuse", "Tesla Motors Product Issuing CA", devca.Options{CommonName: "W2", ExtraKeyUsageOIDs: []asn1.ObjectIdentifier{oid(5, 1), oid(5, 1, 1)}}, "vehicle_device", "W2", nil},
		{"solar inverter OU", "Tesla Energy GF0 Product Issuing CA", devca.Options{CommonName: "SI", OrganizationalUnits: []string{"Solar Inverter"}, ExtraKeyUsageOIDs: []asn1.ObjectIdentifier{oid(5, 2)}}, "solar_inverter_device", "SI", nil},
		{"wall connector OU", "Tesla Energy GF0 Product Issuing CA", devca.Options{CommonName: "WC", OrganizationalUnits: []string{"Gen3 Wall Connector"}, ExtraKeyUsageOIDs: []asn1.ObjectIdentifier{oid(5, 2)}}, "wall_connector_device", "WC", nil},
		{"OID issuer without a known OID", "Tesla Motors GF0 Product Issuing CA", devca.Options{CommonName: "N1", ExtraKeyUsageOIDs: []asn1.ObjectIdentifier{oid(5, 99)}}, "", "", ErrUnknownIssuer},
		{"OID under another arc", "Tesla Motors GF0 Product Issuing CA", devca.Options{CommonName: "N2", ExtraKeyUsageOIDs: []asn1.ObjectIdentifier{oid(6, 1)}}, "", "", ErrUnknownIssuer},
		{"unknown issuer", "Some Other CA", devca.Options{CommonName: "X1"}, "", "", ErrUnknownIssuer},
		{"no CN", "TeslaMotors", devca.Options{}, "", "", ErrNoDeviceID},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id, err := IdentityFromCertificate(issue(t, c.issuer, c.opts))
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("got %+v, %v; want error %v", id, err, c.wantErr)
				}
				return
			}
			if err != nil || id.ClientType != c.wantType || id.DeviceID != c.wantID || id.SenderID != c.wantType+"."+c.wantID {
				t.Fatalf("got %+v, %v; want type %s id %s", id, err, c.wantType, c.wantID)
			}
			if !id.MatchesSender([]byte(id.SenderID)) || !id.MatchesSender([]byte(id.DeviceID)) || id.MatchesSender([]byte("other."+id.DeviceID)) {
				t.Fatal("MatchesSender disagrees with the rule")
			}
		})
	}
}

func TestEmbeddedBundlesLoad(t *testing.T) {
	for name, pem := range map[string][]byte{"prod": teslaProdCA, "eng": teslaEngCA} {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			t.Fatalf("%s bundle holds no certificate", name)
		}
	}
}

func TestEngineeringBundleReplacesProduction(t *testing.T) {
	certs := t.TempDir()
	if _, err := devca.WriteDir(certs, nil); err != nil {
		t.Fatal(err)
	}
	d := devca.Dir{Path: certs}
	subjects := func(eng bool) map[string]bool {
		cfg, err := NewTLSConfig(TLSOptions{CertFile: d.File(devca.ServerCertFile), KeyFile: d.File(devca.ServerKeyFile), UseEngCA: eng})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		//lint:ignore SA1019 the subjects are what this test compares
		for _, raw := range cfg.ClientCAs.Subjects() {
			var name pkix.RDNSequence
			if _, err := asn1.Unmarshal(raw, &name); err != nil {
				t.Fatal(err)
			}
			var n pkix.Name
			n.FillFromRDNSequence(&name)
			out[n.CommonName] = true
		}
		return out
	}
	prod, eng := subjects(false), subjects(true)
	// "Tesla Issuing CA" is only in the production bundle.
	if !prod["Tesla Issuing CA"] || eng["Tesla Issuing CA"] {
		t.Fatalf("prod has it: %v, eng has it: %v", prod["Tesla Issuing CA"], eng["Tesla Issuing CA"])
	}
	if !eng["Tesla Motors Product Issuing CA"] {
		t.Fatal("engineering bundle lacks its product issuing CA")
	}
}

func TestQuietHandshakeErrorsStillCounted(t *testing.T) {
	for _, quiet := range []bool{false, true} {
		var logs testkit.LockedBuffer
		e := newTestEnv(t, allTopics, func(o *Options) {
			o.QuietHandshakeErrors = quiet
			o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		})
		cfg := e.clientTLS(t, vinA)
		cfg.Certificates = nil
		before := refusedHandshakeFailed.Get()
		if c, err := tls.Dial("tcp", e.addr(), cfg); err == nil {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			c.Read(make([]byte, 1))
			c.Close()
		}
		waitFor(t, func() bool { return refusedHandshakeFailed.Get() > before })
		// The worker counts the failure, then logs it: wait for the line
		// rather than read the log the moment the count moves.
		logged := func() bool { return strings.Contains(logs.String(), "tls handshake failed") }
		if !quiet {
			waitFor(t, logged)
		} else {
			time.Sleep(200 * time.Millisecond)
			if logged() {
				t.Fatal("QuietHandshakeErrors is set, but the failed handshake was logged")
			}
		}
	}
}

package netloop

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"

	"github.com/fleet-telemetry/fleet-telemetry/proto/record"
)

// Identity is who a connection is, derived from its verified client
// certificate. The VIN written into every record comes from here, never from
// the payload.
type Identity struct {
	// DeviceID is the leaf's subject CN with every '.' replaced by '-' (the VIN
	// for vehicles).
	DeviceID string
	// ClientType is the device class, e.g. "vehicle_device".
	ClientType string
	// SenderID is "<ClientType>.<DeviceID>", what envelopes carry.
	SenderID string
}

// MatchesSender reports whether an envelope's sender_id belongs to this
// identity: the full sender id or the bare device id.
func (id *Identity) MatchesSender(senderID []byte) bool {
	return record.SenderIDMatches(senderID, id.ClientType, id.DeviceID)
}

// ErrUnknownIssuer is returned for a certificate whose issuer CN maps to no
// client type (the chain verified, but the issuer is not a device CA).
var ErrUnknownIssuer = errors.New("issuer maps to no client type")

// ErrExcludedOID is returned for a certificate carrying an extended key usage
// that must not open a telemetry connection (Wi-Fi EAP).
var ErrExcludedOID = errors.New("excluded extended key usage")

// ErrNoDeviceID is returned for a certificate without a subject CN.
var ErrNoDeviceID = errors.New("certificate has no subject common name")

// Issuers whose certificates are vehicles whatever their key usages.
var vehicleIssuers = map[string]bool{
	"TeslaMotors":              true,
	"Tesla Issuing CA":         true,
	"Tesla Motors Products CA": true,
}

// Issuers whose certificates carry their device class as an extended key
// usage OID.
var oidIssuers = map[string]bool{
	"Tesla Motors Product Issuing CA":           true,
	"Tesla Motors Product RSA Issuing CA":       true,
	"Tesla Motors GF3 Product Issuing CA":       true,
	"Tesla Motors GF3 Product RSA Issuing CA":   true,
	"Tesla Energy Product Issuing CA":           true,
	"Tesla Energy GF0 Product Issuing CA":       true,
	"Tesla Motors GF0 Product Issuing CA":       true,
	"Tesla Motors GF Austin Product Issuing CA": true,
	"Tesla Motors GF Berlin Product Issuing CA": true,
	"Tesla Product Access Issuing CA":           true,
	"Tesla China Product Access Issuing CA":     true,
	"Tesla GF0 Product Access Issuing CA":       true,
	"Tesla GF3 Product Access Issuing CA":       true,
	"Tesla GF Austin Product Access Issuing CA": true,
	"Tesla GF Berlin Product Access Issuing CA": true,
}

// teslaOIDPrefix is 1.3.6.1.4.1.49279.2; the next arc is 4 (engineering) or
// 5 (production), the one after it the device class.
var teslaOIDPrefix = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 49279, 2}

var oidClientTypes = map[int]string{
	1:  "vehicle_device",
	11: "vehicle_board_device",
	2:  "energy_device",
	12: "das_device",
	14: "vehicle_service",
	15: "das_service",
	16: "energy_service",
	28: "robotics_device",
}

// wifiEAPOID is refused: those certificates are for Wi-Fi, not telemetry.
var wifiEAPOID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 49279, 2, 5, 1, 1}

// IdentityFromCertificate applies the reference's identity rules to a
// verified leaf certificate.
func IdentityFromCertificate(cert *x509.Certificate) (Identity, error) {
	cn := cert.Subject.CommonName
	if cn == "" {
		return Identity{}, ErrNoDeviceID
	}
	clientType, err := clientTypeOf(cert)
	if err != nil {
		return Identity{}, err
	}
	id := Identity{DeviceID: strings.ReplaceAll(cn, ".", "-"), ClientType: clientType}
	id.SenderID = clientType + "." + id.DeviceID
	return id, nil
}

func clientTypeOf(cert *x509.Certificate) (string, error) {
	issuer := cert.Issuer.CommonName
	ous := cert.Subject.OrganizationalUnit
	if vehicleIssuers[issuer] {
		if issuer == "Tesla Motors Products CA" && len(ous) > 0 && ous[0] == "Tesla Motors SN" {
			return "vehicle_board_device", nil
		}
		return "vehicle_device", nil
	}
	if !oidIssuers[issuer] {
		return "", fmt.Errorf("%w: %q", ErrUnknownIssuer, issuer)
	}
	clientType := ""
	for _, oid := range cert.UnknownExtKeyUsage {
		if oid.Equal(wifiEAPOID) {
			return "", fmt.Errorf("%w: %s", ErrExcludedOID, oid)
		}
		if t, ok := oidClientType(oid); ok {
			clientType = t
			break
		}
	}
	if clientType == "" {
		return "", fmt.Errorf("%w: %q has no device-class key usage", ErrUnknownIssuer, issuer)
	}
	for _, ou := range ous {
		switch ou {
		case "Solar Inverter":
			return "solar_inverter_device", nil
		case "Gen3 Wall Connector":
			return "wall_connector_device", nil
		}
	}
	return clientType, nil
}

// oidClientType maps 1.3.6.1.4.1.49279.2.{4,5}.N to a client type.
func oidClientType(oid asn1.ObjectIdentifier) (string, bool) {
	if len(oid) != len(teslaOIDPrefix)+2 {
		return "", false
	}
	for i, arc := range teslaOIDPrefix {
		if oid[i] != arc {
			return "", false
		}
	}
	if env := oid[len(teslaOIDPrefix)]; env != 4 && env != 5 {
		return "", false
	}
	t, ok := oidClientTypes[oid[len(teslaOIDPrefix)+1]]
	return t, ok
}

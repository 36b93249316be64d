package vehicleconfig

import (
	"testing"
	"time"
)

// FuzzCheck: any bytes give a report or an error, never a panic; a file
// Parse accepts has a hostname and a ca.
func FuzzCheck(f *testing.F) {
	f.Add([]byte(`{"hostname": "t.example.com", "port": 443, "ca": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "fields": {"VehicleSpeed": {"interval_seconds": 10}}, "alert_types": ["service"], "exp": 1893456000}`))
	f.Add([]byte(`{"hostname": "a:1", "port": 1e400, "ca": "", "fields": {"Soc": {"interval_seconds": 9223372036854775808, "minimum_delta": "x"}}, "exp": -1}`))
	f.Add([]byte(`[{"hostname": null}]`))
	f.Add([]byte(`{"fields": {"VehicleSped": 1, "Deprecated_2": {}}, "ca": "\\n"}`))
	at := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := Check(data, at)
		if cfg, err := Parse(data); err == nil {
			if cfg.Hostname == "" || cfg.CA == "" || cfg.Port == 0 {
				t.Fatalf("Parse accepted %q as %+v", data, cfg)
			}
		} else if r.OK() {
			t.Fatalf("Check passed %q, Parse refused it: %v", data, err)
		}
	})
}

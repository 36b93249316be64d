package test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
)

// TestHostileStalledHandshakes holds ten times as many stalled handshakes
// as the daemon has handshake slots — first peers that send the start of
// a ClientHello (a record header announcing 16 KiB) and nothing more, then
// peers that send a whole ClientHello and never their second flight — and
// measures a real vehicle's full dial (TCP, TLS, WebSocket upgrade)
// meanwhile: it must stay fast.
func TestHostileStalledHandshakes(t *testing.T) {
	setup := relWriteConfig(t, t.TempDir(), relConfig{Edit: func(c *config.Config) {
		c.HandshakeTimeout = config.NewDuration(20 * time.Second)
	}})
	d := startDaemon(t, setup.ConfigPath)
	m := setup.metrics(t)
	slots := int(m["fleet_tls_handshake_slots"])
	if slots <= 0 {
		t.Fatalf("fleet_tls_handshake_slots = %v", m["fleet_tls_handshake_slots"])
	}
	cfg, err := vehicle.TLSFromDir(setup.Certs, relVINs[0])
	if err != nil {
		t.Fatal(err)
	}
	idle := m["fleet_connections_open"]
	for _, stall := range []struct {
		name  string
		first []byte
	}{
		{"16 03 01 40 00 and nothing more", []byte{0x16, 0x03, 0x01, 0x40, 0x00}},
		{"a whole ClientHello, no second flight", e2e.ClientHello(t, cfg)},
	} {
		t.Run(stall.name, func(t *testing.T) {
			deadline := time.Now().Add(10 * time.Second)
			for setup.metrics(t)["fleet_connections_open"] > idle {
				if time.Now().After(deadline) {
					t.Fatal("the previous stalled connections are still open")
				}
				time.Sleep(20 * time.Millisecond)
			}
			stalled := make([]net.Conn, 0, 10*slots)
			defer func() {
				for _, c := range stalled {
					c.Close()
				}
			}()
			for range 10 * slots {
				c, err := net.Dial("tcp", d.addr)
				if err != nil {
					t.Fatal(err)
				}
				stalled = append(stalled, c)
				if _, err := c.Write(stall.first); err != nil {
					t.Fatal(err)
				}
			}
			deadline = time.Now().Add(10 * time.Second)
			for setup.metrics(t)["fleet_connections_open"] < idle+float64(10*slots) {
				if time.Now().After(deadline) {
					t.Fatal("the daemon did not take the stalled connections")
				}
				time.Sleep(20 * time.Millisecond)
			}
			var took []time.Duration
			for i := range 10 {
				start := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				c, err := vehicle.Dial(ctx, vehicle.Config{Addr: d.addr, TLS: cfg})
				cancel()
				if err != nil {
					t.Fatalf("dial %d with %d stalled handshakes held: %v (after %s)", i, 10*slots, err, time.Since(start).Round(time.Millisecond))
				}
				took = append(took, time.Since(start))
				tx := fmt.Sprintf("stall-%d", i)
				c.Send(newRecord(relVINs[0], "V", tx))
				r, err := c.ReadReply(5 * time.Second)
				c.Close()
				if err != nil || !r.Ack || r.TxID != tx {
					t.Fatalf("record on dial %d: %+v %v", i, r, err)
				}
			}
			slices.Sort(took)
			t.Logf("%d stalled connections held (%d handshake slots); 10 vehicle dials (TCP+TLS+upgrade): min %s, median %s, max %s; daemon handshake memory %.0f KiB",
				10*slots, slots, took[0].Round(time.Microsecond), took[5].Round(time.Microsecond), took[9].Round(time.Microsecond),
				setup.metrics(t)["fleet_tls_handshake_bytes"]/1024)
			if took[5] > 100*time.Millisecond {
				t.Errorf("median vehicle dial %s with stalled handshakes held, want under 100 ms", took[5])
			}
		})
	}
	if !d.alive() {
		t.Fatalf("the daemon died:\n%s", d.logText())
	}
}

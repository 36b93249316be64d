package test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleet-telemetry/fleet-telemetry/internal/brokertest"
	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

func natsConn(t *testing.T, addr string) *natsgo.Conn {
	t.Helper()
	nc, err := natsgo.Connect("nats://"+addr, natsgo.MaxReconnects(-1), natsgo.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// The real daemon with the fork's "nats" section publishes every acked V
// record to tesla_telemetry.<VIN>.data and connectivity records to
// tesla_telemetry.<VIN>.connectivity, the payload the dispatched protobuf
// with the certificate's VIN; a NATS subscriber reads them.
func TestNATSEndToEnd(t *testing.T) {
	b := brokertest.NATS(t, false)
	sub := natsConn(t, b.Addr)
	onData, rec := newTxSet(), brokertest.NewReceived()
	if _, err := sub.Subscribe("tesla_telemetry.>", func(m *natsgo.Msg) {
		parts := strings.Split(m.Subject, ".")
		if len(parts) != 3 {
			rec.Stray(m.Subject)
			return
		}
		switch parts[2] {
		case "data":
			tx, vin, err := taggedTx(m.Data)
			if err != nil || vin != parts[1] {
				rec.Stray(m.Subject)
				return
			}
			onData.add(tx)
		case "connectivity":
			var p pb.VehicleConnectivity
			if protoUnmarshal(m.Data, &p) != nil || p.GetVin() != parts[1] {
				rec.Stray(m.Subject)
				return
			}
			rec.Connectivity(p.GetVin())
		default:
			rec.Stray(m.Subject)
		}
	}); err != nil {
		t.Fatal(err)
	}
	sub.Flush()
	setup := sinkConfig(t, map[string][]string{"V": {"nats", "logger"}, "connectivity": {"nats"}}, func(c *config.Config) {
		c.NATS = &config.NATS{URL: "nats://" + b.Addr, Name: "fleet-telemetry"}
		c.ReliableAckSources = map[string]string{"V": "nats"}
	})
	d := startDaemon(t, setup.ConfigPath)
	want := e2e.SendAcked(t, d.addr, setup.Certs, vins, 10, func(vin string, i int) *envelope.StreamMessage {
		return taggedRecord(vin, fmt.Sprintf("%s-V-%d", vin, i))
	})
	if missing, dup := onData.wait(want, 30*time.Second); missing > 0 || dup > 0 {
		t.Fatalf("%d of %d acked records missing, %d duplicates\n%s", missing, len(want), dup, d.logText())
	}
	rec.Check(t, vins, 5*time.Second)
	m := setup.metrics(t)
	if got := m[`nats_produce_total{record_type="V"}`]; got != float64(len(want)) {
		t.Errorf("nats_produce_total{V} = %v, want %d", got, len(want))
	}
	d.stop(t)
}

// TestNATSOutageJetStream keeps three vehicles sending while nats-server
// (JetStream on, file storage) is stopped for 4 s and started again. With
// "jetstream": true the sink passes a record only once its PubAck came, so
// every record acked to a vehicle is in the stream afterwards.
func TestNATSOutageJetStream(t *testing.T) {
	b := brokertest.NATS(t, true)
	js, err := jetstream.New(natsConn(t, b.Addr))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "TELEMETRY",
		Subjects: []string{"tesla_telemetry.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	setup := sinkConfig(t, map[string][]string{"V": {"nats"}}, func(c *config.Config) {
		c.NATS = &config.NATS{URL: "nats://" + b.Addr, JetStream: true}
	})
	d, out := outageUnderLoad(t, setup, b, "nats")
	acked := out.acked
	reader := natsConn(t, b.Addr)
	js, err = jetstream.New(reader)
	if err != nil {
		t.Fatal(err)
	}
	var missing, dup int
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		inStream := newTxSet()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		c, err := js.OrderedConsumer(ctx, "TELEMETRY", jetstream.OrderedConsumerConfig{})
		if err == nil {
			for {
				batch, err := c.FetchNoWait(1000)
				if err != nil {
					break
				}
				n := 0
				for m := range batch.Messages() {
					n++
					if tx, _, err := taggedTx(m.Data()); err == nil {
						inStream.add(tx)
					}
				}
				if n == 0 {
					break
				}
			}
		}
		cancel()
		if missing, dup = inStream.wait(acked, 0); missing == 0 || time.Now().After(deadline) {
			break
		}
	}
	m := setup.metrics(t)
	t.Logf("nats-server stopped for %s: %d records acked meanwhile, %d in all; max lag %.0f; %d missing from the stream, %d duplicates; nats_err=%.0f fleet_forwarder_retries_total{nats}=%.0f",
		out.took, out.during, len(acked), out.lagMax, missing, dup, m["nats_err"], m[`fleet_forwarder_retries_total{forwarder="nats"}`])
	if missing > 0 {
		t.Fatalf("%d of %d acked records are not in the stream\n%s\nserver:\n%s", missing, len(acked), d.logText(), b.Log())
	}
	d.stop(t)
}

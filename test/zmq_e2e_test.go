package test

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/brokertest"
	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

// The real daemon binds its PUB socket where the "zmq" section says, and
// an independent subscriber (pyzmq on libzmq) reads every acked V record as
// two frames, "tesla_telemetry_V" and the dispatched protobuf with the
// certificate's VIN, and the vehicles' connectivity records under
// "tesla_telemetry_connectivity".
func TestZMQEndToEnd(t *testing.T) {
	port := e2e.FreePort(t)
	setup := sinkConfig(t, map[string][]string{"V": {"zmq", "logger"}, "connectivity": {"zmq"}}, func(c *config.Config) {
		c.ZMQ = &config.ZMQ{Addr: fmt.Sprintf("tcp://127.0.0.1:%d", port)}
	})
	d := startDaemon(t, setup.ConfigPath)
	sub := brokertest.StartZMQSubscriber(t, fmt.Sprintf("tcp://127.0.0.1:%d", port))
	probe := e2e.Dial(t, d.addr, setup.Certs, vins[0])
	if _, ok := sub.Join(15*time.Second, func(i int) {
		e2e.SendAndAck(t, probe, []*envelope.StreamMessage{taggedRecord(vins[0], fmt.Sprintf("probe-%d", i))})
	}); !ok {
		t.Fatalf("the subscriber got no probe in 15s (libzmq %s)\n%s", sub.LibzmqVersion, d.logText())
	}
	want := e2e.SendAcked(t, d.addr, setup.Certs, vins[1:], 10, func(vin string, i int) *envelope.StreamMessage {
		return taggedRecord(vin, fmt.Sprintf("%s-V-%d", vin, i))
	})
	// The subscriber holds every message so far: sort them all again on
	// each look.
	var got *txSet
	var rec *brokertest.Received
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got, rec = newTxSet(), brokertest.NewReceived()
		for _, m := range sub.Messages() {
			if len(m) != 2 {
				rec.Stray(fmt.Sprintf("%d frames", len(m)))
				continue
			}
			switch string(m[0]) {
			case "tesla_telemetry_V":
				tx, vin, err := taggedTx(m[1])
				if err != nil || !strings.Contains(tx, vin) && !strings.HasPrefix(tx, "probe-") {
					rec.Stray(fmt.Sprintf("V %q from %s (%v)", tx, vin, err))
				}
				got.add(tx)
			case "tesla_telemetry_connectivity":
				var p pb.VehicleConnectivity
				if err := protoUnmarshal(m[1], &p); err != nil {
					rec.Stray("connectivity: " + err.Error())
				}
				rec.Connectivity(p.GetVin())
			default:
				rec.Stray("topic " + string(m[0]))
			}
		}
		missing, _ := got.wait(want, 0)
		if missing == 0 && rec.Connected(vins[1:]) || time.Now().After(deadline) {
			break
		}
	}
	if missing, dup := got.wait(want, 0); missing > 0 || dup > 0 {
		t.Fatalf("%d of %d acked records missing, %d duplicates\n%s", missing, len(want), dup, d.logText())
	}
	rec.Check(t, vins[1:], 0)
	m := setup.metrics(t)
	if m[`zmq_publish_total{record_type="V"}`] < float64(len(want)) || m[`zmq_publish_total_bytes{record_type="V"}`] == 0 {
		t.Errorf("zmq_publish_total{V} = %v", m[`zmq_publish_total{record_type="V"}`])
	}
	d.stop(t)
}

// A zmq address that cannot be bound stops the start, naming it.
func TestZMQBindErrorStopsStart(t *testing.T) {
	addr := "tcp://" + e2e.PortInUse(t)
	setup := sinkConfig(t, map[string][]string{"V": {"zmq"}}, func(c *config.Config) {
		c.ZMQ = &config.ZMQ{Addr: addr}
	})
	out, err := exec.Command(binary, "-config", setup.ConfigPath).CombinedOutput()
	if err == nil || !strings.Contains(string(out), addr) {
		t.Fatalf("daemon with a zmq address in use: err %v, output does not name %s:\n%s", err, addr, out)
	}
}

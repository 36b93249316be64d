package test

import (
	"fmt"
	"net"
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
	// A SUB socket receives only once its subscription reached the PUB:
	// probe until one arrives.
	probe := e2e.Dial(t, d.addr, setup.Certs, vins[0])
	for i := 0; len(sub.Messages()) == 0; i++ {
		if i == 300 {
			t.Fatalf("the subscriber got no probe in 15s (libzmq %s)\n%s", sub.LibzmqVersion, d.logText())
		}
		e2e.SendAndAck(t, probe, []*envelope.StreamMessage{taggedRecord(vins[0], fmt.Sprintf("probe-%d", i))})
		time.Sleep(50 * time.Millisecond)
	}
	want := map[string]bool{}
	for _, vin := range vins[1:] {
		c := e2e.Dial(t, d.addr, setup.Certs, vin)
		var ms []*envelope.StreamMessage
		for i := range 10 {
			tx := fmt.Sprintf("%s-V-%d", vin, i)
			ms = append(ms, taggedRecord(vin, tx))
			want[tx] = true
		}
		e2e.SendAndAck(t, c, ms)
	}
	got := newTxSet()
	var connected map[string]bool
	var bad []string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got, connected, bad = newTxSet(), map[string]bool{}, nil
		for _, m := range sub.Messages() {
			if len(m) != 2 {
				bad = append(bad, fmt.Sprintf("%d frames", len(m)))
				continue
			}
			switch string(m[0]) {
			case "tesla_telemetry_V":
				tx, vin, err := taggedTx(m[1])
				if err != nil || !strings.Contains(tx, vin) && !strings.HasPrefix(tx, "probe-") {
					bad = append(bad, fmt.Sprintf("V %q from %s (%v)", tx, vin, err))
				}
				got.add(tx)
			case "tesla_telemetry_connectivity":
				var p pb.VehicleConnectivity
				if err := protoUnmarshal(m[1], &p); err != nil {
					bad = append(bad, "connectivity: "+err.Error())
				}
				connected[p.GetVin()] = true
			default:
				bad = append(bad, "topic "+string(m[0]))
			}
		}
		missing, _ := got.wait(want, 0)
		if missing == 0 && len(connected) >= 2 || time.Now().After(deadline) {
			break
		}
	}
	if missing, dup := got.wait(want, 0); missing > 0 || dup > 0 || len(bad) > 0 {
		t.Fatalf("%d of %d acked records missing, %d duplicates, unexpected %v\n%s", missing, len(want), dup, bad, d.logText())
	}
	for _, vin := range vins[1:] {
		if !connected[vin] {
			t.Errorf("no connectivity record for %s (got %v)", vin, connected)
		}
	}
	m := setup.metrics(t)
	if m[`zmq_publish_total{record_type="V"}`] < float64(len(want)) || m[`zmq_publish_total_bytes{record_type="V"}`] == 0 {
		t.Errorf("zmq_publish_total{V} = %v", m[`zmq_publish_total{record_type="V"}`])
	}
	d.stop(t)
}

// A zmq address that cannot be bound stops the start, naming it.
func TestZMQBindErrorStopsStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := "tcp://" + ln.Addr().String()
	setup := sinkConfig(t, map[string][]string{"V": {"zmq"}}, func(c *config.Config) {
		c.ZMQ = &config.ZMQ{Addr: addr}
	})
	out, err := exec.Command(binary, "-config", setup.ConfigPath).CombinedOutput()
	if err == nil || !strings.Contains(string(out), addr) {
		t.Fatalf("daemon with a zmq address in use: err %v, output does not name %s:\n%s", err, addr, out)
	}
}

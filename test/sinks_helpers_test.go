package test

// Helpers of the MQTT, Redis, ZMQ and NATS end-to-end tests: V records
// tagged with their txid (those sinks carry no txid header, so a consumer
// finds the record by its VehicleName datum), a vehicle load that sends
// them, and a wait on a consumer's set of received txids.

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/fleet-telemetry/fleet-telemetry/internal/brokertest"
	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

// taggedPayload is a V payload of datums realistic datums (keys 1..datums)
// plus VehicleName = tx.
func taggedPayload(vin, tx string, datums int) *pb.Payload {
	rngMu.Lock()
	p := vehicle.NewPayloadV(rng, "SPOOFED0000000000", datums, time.Now())
	rngMu.Unlock()
	p.Data = append(p.Data, &pb.Datum{Key: pb.Field_VehicleName, Value: &pb.Value{Value: &pb.Value_StringValue{StringValue: tx}}})
	return p
}

// taggedRecord is a V record whose VehicleName datum is its txid.
func taggedRecord(vin, tx string) *envelope.StreamMessage {
	b, err := proto.Marshal(taggedPayload(vin, tx, 8))
	if err != nil {
		panic(err)
	}
	return &envelope.StreamMessage{
		TxID: []byte(tx), Topic: []byte("V"), MessageID: []byte(tx),
		CreatedAt: uint32(time.Now().Unix()), SenderID: []byte("vehicle_device." + vin), Payload: b,
	}
}

// taggedTx returns the VehicleName of a dispatched V payload (protobuf),
// and its VIN.
func taggedTx(payload []byte) (tx, vin string, err error) {
	var p pb.Payload
	if err := proto.Unmarshal(payload, &p); err != nil {
		return "", "", err
	}
	for _, d := range p.GetData() {
		if d.GetKey() == pb.Field_VehicleName {
			tx = d.GetValue().GetStringValue()
		}
	}
	return tx, p.GetVin(), nil
}

// startTaggedLoad keeps each of vins sending tagged V records, one at a
// time, waiting for every ack.
func startTaggedLoad(t *testing.T, addr, certs string, vins []string, interval time.Duration) *e2e.Load {
	t.Helper()
	return e2e.StartLoad(t, addr, certs, vins, e2e.LoadOptions{Interval: interval, ReplyTimeout: 30 * time.Second,
		Record: func(vin string, i int) *envelope.StreamMessage {
			return taggedRecord(vin, fmt.Sprintf("load-%s-%06d", vin, i))
		}})
}

// txSet is what a consumer received: txid → copies.
type txSet struct {
	mu  sync.Mutex
	got map[string]int
}

func newTxSet() *txSet { return &txSet{got: map[string]int{}} }

func (s *txSet) add(tx string) {
	s.mu.Lock()
	s.got[tx]++
	s.mu.Unlock()
}

func (s *txSet) snapshot() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.got))
	for k, v := range s.got {
		out[k] = v
	}
	return out
}

// wait waits until every txid of want was received; it returns how many
// are still missing when timeout passes (0: all arrived) and the
// duplicates.
func (s *txSet) wait(want map[string]bool, timeout time.Duration) (missing, dup int) {
	deadline := time.Now().Add(timeout)
	for {
		got := s.snapshot()
		lost, d := lostAndDup(want, got)
		if len(lost) == 0 || time.Now().After(deadline) {
			return len(lost), d
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sinkConfig writes a config routing records to the given dispatchers,
// edited by section (which sets the sink's section), /metrics on a free
// port.
func sinkConfig(t *testing.T, records map[string][]string, section func(*config.Config)) relSetup {
	t.Helper()
	return relWriteConfig(t, t.TempDir(), relConfig{Records: records, Edit: section})
}

// protoUnmarshal decodes a payload the test built.
func protoUnmarshal(b []byte, m proto.Message) error { return proto.Unmarshal(b, m) }

// brokerOutage is what outageUnderLoad saw.
type brokerOutage struct {
	acked  map[string]bool // txids the vehicles got acks for, in all
	during int             // acks received while the broker was down
	took   time.Duration   // how long it was down
	lagMax float64         // the forwarder's largest lag meanwhile
}

// outageUnderLoad starts the daemon on setup, sends tagged records from
// three vehicles, stops broker b for 4 s (reading the forwarder's lag),
// starts it again and stops the load 2 s later. A vehicle error fails the
// test, and so does no record acked during the outage: the spool should
// absorb it.
func outageUnderLoad(t *testing.T, setup relSetup, b *brokertest.Broker, forwarder string) (*daemon, brokerOutage) {
	t.Helper()
	d := startDaemon(t, setup.ConfigPath)
	load := startTaggedLoad(t, d.addr, setup.Certs, relVINs[:3], 10*time.Millisecond)
	time.Sleep(2 * time.Second)
	from := time.Now()
	b.Stop()
	var o brokerOutage
	for time.Since(from) < 4*time.Second {
		o.lagMax = max(o.lagMax, setup.metrics(t)[`fleet_forwarder_lag_records{forwarder="`+forwarder+`"}`])
		time.Sleep(250 * time.Millisecond)
	}
	to := time.Now()
	b.Start()
	time.Sleep(2 * time.Second)
	load.Halt()
	var errs []error
	o.acked, o.during, errs = load.Snapshot(from, to)
	o.took = to.Sub(from).Round(time.Millisecond)
	for _, err := range errs {
		t.Errorf("vehicle: %v", err)
	}
	if o.during == 0 {
		t.Fatalf("no record acked while the %s broker was down: the spool should absorb the outage", forwarder)
	}
	return d, o
}

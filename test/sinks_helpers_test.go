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
// time, waiting for every ack (the loadGen of the Kafka tests).
func startTaggedLoad(t *testing.T, addr, certs string, vins []string, interval time.Duration) *loadGen {
	t.Helper()
	g := &loadGen{acked: map[string]time.Time{}, stop: make(chan struct{})}
	for _, vin := range vins {
		c := dial(t, addr, certs, vin)
		g.stopped.Add(1)
		go func() {
			defer g.stopped.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-g.stop:
					return
				case <-tick.C:
				}
				tx := fmt.Sprintf("load-%s-%06d", vin, i)
				if err := c.Send(taggedRecord(vin, tx)); err != nil {
					g.fail(fmt.Errorf("%s: send %s: %w", vin, tx, err))
					return
				}
				r, err := c.ReadReply(30 * time.Second)
				if err != nil {
					g.fail(fmt.Errorf("%s: reply for %s: %w", vin, tx, err))
					return
				}
				if !r.Ack || r.TxID != tx {
					g.fail(fmt.Errorf("%s: got %+v, want the ack of %s", vin, r, tx))
					return
				}
				g.mu.Lock()
				g.acked[tx] = time.Now()
				g.mu.Unlock()
			}
		}()
	}
	return g
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
// with extra top-level keys (the sink's section), /metrics on a free port.
func sinkConfig(t *testing.T, records map[string][]string, extra map[string]any) relSetup {
	t.Helper()
	return relWriteConfig(t, t.TempDir(), relConfig{Records: records, Extra: extra})
}

// protoUnmarshal decodes a payload the test built.
func protoUnmarshal(b []byte, m proto.Message) error { return proto.Unmarshal(b, m) }

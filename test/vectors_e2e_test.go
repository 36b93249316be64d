package test

import (
	"encoding/base64"
	"encoding/json"
	"maps"
	"os"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
	"github.com/fleet-telemetry/fleet-telemetry/test/kfakebroker/kfaketest"
)

// referenceVector is one golden case recorded from the reference server
// (proto/testdata/reference-vectors.json): a frame as a vehicle sent it,
// the reference's reply, and what it produced to its sinks.
type referenceVector struct {
	Name               string            `json:"name"`
	CertVIN            string            `json:"cert_vin"`
	FrameB64           string            `json:"frame_b64"`
	Topic              string            `json:"topic"`
	TxID               string            `json:"txid"`
	Outcome            string            `json:"outcome"` // "ack" or "error"
	DispatchedProtoB64 string            `json:"dispatched_proto_b64"`
	HeadersStatic      map[string]string `json:"headers_static"`
}

// TestReferenceVectorsEndToEnd sends the reference's recorded frames, byte
// for byte, through the daemon over mTLS and WebSocket: each gets the
// reply the reference gave (ack with txid and topic, or "incorrect message
// format"), and each acked one reaches Kafka, read back by kcat, keyed by
// the certificate's VIN, with the reference's headers and a value equal to
// what the reference produced.
func TestReferenceVectorsEndToEnd(t *testing.T) {
	kfaketest.RequireKcat(t)
	raw, err := os.ReadFile("../proto/testdata/reference-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vectors []referenceVector
	if err := json.Unmarshal(raw, &vectors); err != nil {
		t.Fatal(err)
	}
	if len(vectors) == 0 {
		t.Fatal("no reference vectors")
	}
	broker := kfaketest.Start(t, buildBroker(t), kfaketest.Options{Partitions: 3})
	configPath, certs, _, _ := kafkaDaemonConfig(t, t.TempDir(), broker.Addr, []string{"kafka"})
	d := startDaemon(t, configPath)

	acked := map[string]referenceVector{} // txid → vector
	for _, v := range vectors {
		frame, err := base64.StdEncoding.DecodeString(v.FrameB64)
		if err != nil {
			t.Fatalf("%s: frame_b64: %v", v.Name, err)
		}
		c := e2e.Dial(t, d.addr, certs, v.CertVIN)
		if err := c.WriteFrame(ws.OpBinary, true, frame); err != nil {
			t.Fatal(err)
		}
		r, err := c.ReadReply(10 * time.Second)
		if err != nil {
			t.Fatalf("%s: no reply: %v", v.Name, err)
		}
		switch v.Outcome {
		case "ack":
			if !r.Ack || r.TxID != v.TxID || r.Topic != v.Topic {
				t.Fatalf("%s: reply %+v, the reference acked txid %q topic %q", v.Name, r, v.TxID, v.Topic)
			}
			acked[v.TxID] = v
		case "error":
			if r.Ack || r.TxID != v.TxID || r.Text != "incorrect message format" {
				t.Fatalf("%s: reply %+v, the reference answered txid %q with \"incorrect message format\"", v.Name, r, v.TxID)
			}
		default:
			t.Fatalf("%s: unknown outcome %q", v.Name, v.Outcome)
		}
		c.Close()
	}
	// Each acked frame again, from a vehicle whose certificate is another
	// VIN than the frame's sender_id: acked, and dispatched under the
	// certificate's VIN (the reference's "does not allow spoofing": a
	// Kafka message keyed by the certificate's device id).
	spoofed := map[string]referenceVector{} // txid → vector
	for _, v := range vectors {
		if v.Outcome != "ack" {
			continue
		}
		frame, _ := base64.StdEncoding.DecodeString(v.FrameB64)
		vin := vins[1]
		if vin == v.CertVIN {
			vin = vins[2]
		}
		c := e2e.Dial(t, d.addr, certs, vin)
		if err := c.WriteFrame(ws.OpBinary, true, frame); err != nil {
			t.Fatal(err)
		}
		r, err := c.ReadReply(10 * time.Second)
		if err != nil {
			t.Fatalf("%s from %s: no reply: %v", v.Name, vin, err)
		}
		if !r.Ack || r.TxID != v.TxID || r.Topic != v.Topic {
			t.Fatalf("%s from %s: reply %+v, want an ack with txid %q topic %q", v.Name, vin, r, v.TxID, v.Topic)
		}
		v.CertVIN = vin
		v.HeadersStatic = maps.Clone(v.HeadersStatic)
		if _, ok := v.HeadersStatic["vin"]; ok {
			v.HeadersStatic["vin"] = vin
		}
		spoofed[v.TxID] = v
		c.Close()
	}

	topics := map[string]bool{}
	for _, v := range acked {
		topics[v.Topic] = true
	}
	got := map[string]kfaketest.Message{}      // txid → the frame's own vehicle's message
	gotSpoof := map[string]kfaketest.Message{} // txid → the other vehicle's
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < len(acked) || len(gotSpoof) < len(spoofed) {
		if time.Now().After(deadline) {
			t.Fatalf("after 30s %d of %d acked vectors and %d of %d sent from another certificate in Kafka\n%s",
				len(got), len(acked), len(gotSpoof), len(spoofed), d.logText())
		}
		time.Sleep(300 * time.Millisecond)
		for topic := range topics {
			msgs, err := kfaketest.ReadTopic(broker.Addr, "tesla_telemetry_"+topic)
			if err != nil {
				continue // not created yet
			}
			for _, m := range msgs {
				tx, _ := m.Header("txid")
				if v, ok := acked[tx]; ok && m.Key == v.CertVIN {
					got[tx] = m
				} else if v, ok := spoofed[tx]; ok && m.Key == v.CertVIN {
					gotSpoof[tx] = m
				} else if ok {
					t.Fatalf("%s: a Kafka message keyed %q, want %q or %q", v.Name, m.Key, acked[tx].CertVIN, v.CertVIN)
				}
			}
		}
	}
	checkVector(t, acked, got)
	checkVector(t, spoofed, gotSpoof)
	d.stop(t)
}

// checkVector compares the Kafka messages of acked vectors with what the
// reference produced, its vin set to the certificate's VIN.
func checkVector(t *testing.T, acked map[string]referenceVector, got map[string]kfaketest.Message) {
	t.Helper()
	for tx, v := range acked {
		m := got[tx]
		if m.Key != v.CertVIN {
			t.Errorf("%s: key %q, want the certificate's VIN %q", v.Name, m.Key, v.CertVIN)
		}
		for k, want := range v.HeadersStatic {
			if h, _ := m.Header(k); h != want {
				t.Errorf("%s: header %s = %q, the reference wrote %q", v.Name, k, h, want)
			}
		}
		wantBytes, err := base64.StdEncoding.DecodeString(v.DispatchedProtoB64)
		if err != nil {
			t.Fatalf("%s: dispatched_proto_b64: %v", v.Name, err)
		}
		want, gotMsg := messageFor(t, v.Topic), messageFor(t, v.Topic)
		if err := proto.Unmarshal(wantBytes, want); err != nil {
			t.Fatalf("%s: the reference's value does not decode: %v", v.Name, err)
		}
		vin := want.ProtoReflect().Descriptor().Fields().ByName("vin")
		want.ProtoReflect().Set(vin, protoreflect.ValueOfString(v.CertVIN))
		if err := proto.Unmarshal(m.Value, gotMsg); err != nil {
			t.Fatalf("%s: Kafka value does not decode as %s: %v", v.Name, v.Topic, err)
		}
		if !proto.Equal(want, gotMsg) {
			t.Errorf("%s from %s: Kafka value differs from the reference's\n got: %v\nwant: %v", v.Name, v.CertVIN, gotMsg, want)
		}
	}
}

// messageFor returns an empty message of the type a record of topic carries.
func messageFor(t *testing.T, topic string) proto.Message {
	t.Helper()
	switch topic {
	case "V":
		return &pb.Payload{}
	case "alerts":
		return &pb.VehicleAlerts{}
	case "errors":
		return &pb.VehicleErrors{}
	case "connectivity":
		return &pb.VehicleConnectivity{}
	}
	t.Fatalf("no message type for topic %q", topic)
	return nil
}

// Package record handles the protobuf records vehicles send, as they flow
// through the daemon: a cheap hot-path check that decides ack versus error
// reply (Validate), then, off the hot path, the reference server's
// transforms and the bytes handed to the sinks (Transform, MarshalProto,
// MarshalJSON). It also builds the connectivity records the server itself
// emits (NewConnectivity).
package record

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

// Topics (record types) the server knows, as sent in the envelope.
const (
	TopicV            = "V"
	TopicAlerts       = "alerts"
	TopicErrors       = "errors"
	TopicConnectivity = "connectivity"
)

var (
	// ErrUnknownTopic is returned for a topic with no schema.
	ErrUnknownTopic = errors.New("unknown topic")
	// ErrInvalidPayload is wrapped by errors for payloads that are not valid
	// protobuf for their topic (the reference answers these with
	// "incorrect message format").
	ErrInvalidPayload = errors.New("invalid payload")
)

// newMessage returns an empty message for topic, or nil when unknown.
func newMessage(topic string) proto.Message {
	switch topic {
	case TopicV:
		return &pb.Payload{}
	case TopicAlerts:
		return &pb.VehicleAlerts{}
	case TopicErrors:
		return &pb.VehicleErrors{}
	case TopicConnectivity:
		return &pb.VehicleConnectivity{}
	}
	return nil
}

// Transform fully decodes payload, stamps vin (the certificate's VIN, never
// the one inside the payload) and applies the reference server's transforms:
// for V, a string Location becomes a location_value and scientific-notation
// strings become fixed decimals; for alerts, timestamps sent in epoch
// milliseconds are normalised. It accepts exactly the payloads Validate
// accepts. The result owns its memory (payload may be reused afterwards).
// Transform does not call Validate; callers run it first on the hot path.
func Transform(topic, vin string, payload []byte) (proto.Message, error) {
	m := newMessage(topic)
	if m == nil {
		return nil, fmt.Errorf("record: topic %q: %w", topic, ErrUnknownTopic)
	}
	// proto.Unmarshal, not vtproto's UnmarshalVT: it is what the reference
	// runs, and UnmarshalVT rejects known fields sent with another wire
	// type and drops unknown fields inside Timestamps, which would change
	// the dispatched bytes. Both cost about the same here (allocation-bound).
	if err := proto.Unmarshal(payload, m); err != nil {
		return nil, fmt.Errorf("record: decode %q payload: %w: %w", topic, ErrInvalidPayload, err)
	}
	switch msg := m.(type) {
	case *pb.Payload:
		msg.Vin = vin
		transformLocation(msg)
		transformScientificNotation(msg)
	case *pb.VehicleAlerts:
		msg.Vin = vin
		for _, a := range msg.Alerts {
			a.StartedAt = normaliseAlertTime(a.StartedAt)
			a.EndedAt = normaliseAlertTime(a.EndedAt)
		}
	case *pb.VehicleErrors:
		msg.Vin = vin
	case *pb.VehicleConnectivity:
		msg.Vin = vin
	}
	return m, nil
}

// MarshalProto returns the protobuf bytes dispatched to the sinks:
// proto.Marshal, as the reference runs. The generated MarshalVT is not used
// here: it drops a negative zero in proto3 float and double fields (it
// tests v != 0 where proto.Marshal tests the bits) and unknown fields
// inside Timestamps, so its bytes can differ from the reference's. Records
// in canonical form skip this entirely (AppendDispatched).
func MarshalProto(m proto.Message) ([]byte, error) {
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("record: marshal %T: %w", m, err)
	}
	return b, nil
}

// jsonOptions give the reference's transmit_decoded_records form: enum
// names, and every field present even when unset.
var jsonOptions = protojson.MarshalOptions{EmitUnpopulated: true}

// MarshalJSON returns the record's JSON form (protojson, enum names,
// unpopulated fields emitted). It fails, as the reference does, on values
// protojson cannot represent, such as a Timestamp outside years 1-9999.
func MarshalJSON(m proto.Message) ([]byte, error) {
	b, err := jsonOptions.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("record: marshal %T as JSON: %w", m, err)
	}
	return b, nil
}

// NewConnectivity returns the encoded connectivity record the server emits
// when a vehicle connects or disconnects.
func NewConnectivity(vin, connectionID string, status pb.ConnectivityEvent, createdAt time.Time, networkInterface string) ([]byte, error) {
	m := &pb.VehicleConnectivity{
		Vin:              vin,
		ConnectionId:     connectionID,
		Status:           status,
		CreatedAt:        timestamppb.New(createdAt),
		NetworkInterface: networkInterface,
	}
	b, err := m.MarshalVT()
	if err != nil {
		return nil, fmt.Errorf("record: marshal connectivity record: %w", err)
	}
	return b, nil
}

// SenderIDMatches reports whether an envelope's sender_id belongs to the
// connection: either "<clientType>.<deviceID>" or the bare deviceID. It does
// not allocate.
func SenderIDMatches(senderID []byte, clientType, deviceID string) bool {
	if string(senderID) == deviceID {
		return true
	}
	n := len(clientType)
	return len(senderID) == n+1+len(deviceID) &&
		string(senderID[:n]) == clientType && senderID[n] == '.' &&
		string(senderID[n+1:]) == deviceID
}

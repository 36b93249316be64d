package vehicle

import (
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

// PayloadV builds a realistic V record: datums fields cycling through
// string, int, long, float, double, bool, location and enum values.
func PayloadV(rng *rand.Rand, vin string, datums int, createdAt time.Time) []byte {
	b, err := NewPayloadV(rng, vin, datums, createdAt).MarshalVT()
	if err != nil {
		panic(fmt.Sprintf("vehicle: marshal a payload we built: %v", err)) // cannot happen for a valid message
	}
	return b
}

// NewPayloadV is PayloadV's message, for callers that shape it further
// (the bench pads its strings to a target size).
func NewPayloadV(rng *rand.Rand, vin string, datums int, createdAt time.Time) *pb.Payload {
	p := &pb.Payload{CreatedAt: timestamppb.New(createdAt), Vin: vin}
	for i := range datums {
		d := &pb.Datum{Key: pb.Field(1 + i%200)}
		switch i % 8 {
		case 0:
			d.Value = &pb.Value{Value: &pb.Value_StringValue{StringValue: fmt.Sprintf("value-%d-%d", i, rng.IntN(100000))}}
		case 1:
			d.Value = &pb.Value{Value: &pb.Value_IntValue{IntValue: rng.Int32N(100000)}}
		case 2:
			d.Value = &pb.Value{Value: &pb.Value_LongValue{LongValue: rng.Int64N(1 << 40)}}
		case 3:
			d.Value = &pb.Value{Value: &pb.Value_FloatValue{FloatValue: rng.Float32() * 1000}}
		case 4:
			d.Value = &pb.Value{Value: &pb.Value_DoubleValue{DoubleValue: rng.Float64() * 100}}
		case 5:
			d.Value = &pb.Value{Value: &pb.Value_BooleanValue{BooleanValue: rng.IntN(2) == 1}}
		case 6:
			d.Value = &pb.Value{Value: &pb.Value_LocationValue{LocationValue: &pb.LocationValue{
				Latitude: 37 + rng.Float64(), Longitude: -122 - rng.Float64()}}}
		case 7:
			d.Value = &pb.Value{Value: &pb.Value_ShiftStateValue{ShiftStateValue: pb.ShiftState(1 + rng.IntN(4))}}
		}
		p.Data = append(p.Data, d)
	}
	return p
}

// PayloadAlerts builds an alerts record.
func PayloadAlerts(vin string, createdAt time.Time) []byte {
	p := &pb.VehicleAlerts{Vin: vin, CreatedAt: timestamppb.New(createdAt), Alerts: []*pb.VehicleAlert{{
		Name: "BMS_a066_w_fault", StartedAt: timestamppb.New(createdAt.Add(-time.Minute)),
		Audiences: []pb.Audience{pb.Audience_Customer},
	}}}
	b, _ := p.MarshalVT()
	return b
}

// PayloadErrors builds an errors record.
func PayloadErrors(vin string, createdAt time.Time) []byte {
	p := &pb.VehicleErrors{Vin: vin, CreatedAt: timestamppb.New(createdAt), Errors: []*pb.VehicleError{{
		Name: "config_error", Body: "field not supported", CreatedAt: timestamppb.New(createdAt),
		Tags: map[string]string{"field": "Foo"},
	}}}
	b, _ := p.MarshalVT()
	return b
}

// PayloadConnectivity builds a connectivity record.
func PayloadConnectivity(vin, connectionID string, createdAt time.Time) []byte {
	p := &pb.VehicleConnectivity{Vin: vin, ConnectionId: connectionID, Status: pb.ConnectivityEvent_CONNECTED,
		CreatedAt: timestamppb.New(createdAt), NetworkInterface: "wifi"}
	b, _ := p.MarshalVT()
	return b
}

// Payload builds a record of the given type.
func Payload(rng *rand.Rand, topic, vin string, createdAt time.Time) []byte {
	switch topic {
	case "alerts":
		return PayloadAlerts(vin, createdAt)
	case "errors":
		return PayloadErrors(vin, createdAt)
	case "connectivity":
		return PayloadConnectivity(vin, fmt.Sprintf("conn-%d", rng.Int64()), createdAt)
	}
	return PayloadV(rng, vin, 20, createdAt)
}

// PayloadWithString builds a V record holding one string datum of s (for
// size-limit tests).
func PayloadWithString(vin, s string) []byte {
	p := &pb.Payload{Vin: vin, Data: []*pb.Datum{{Key: pb.Field_VehicleName, Value: &pb.Value{Value: &pb.Value_StringValue{StringValue: s}}}}}
	b, _ := p.MarshalVT()
	return b
}

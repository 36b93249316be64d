package record

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

// sciOracle is the reference's pattern, used only to check isScientific.
var sciOracle = regexp.MustCompile(`^[+-]?(\d*\.\d+|\d+\.\d*)([eE][+-]?\d+)$`)

func TestIsScientific(t *testing.T) {
	for _, s := range []string{
		"1e-3", "-2.5E+2", "2.5e2", ".5e1", "5.e1", "+1.0E-7", "76.25", "", ".", ".e1", "1.5e", "1.5e+",
		"1.5e+1x", "x1.5e1", "１.5e1", "1.5E1\n", "--1.5e1", "1.5ee1", "0.0e0", "1_0.5e1",
	} {
		if got, want := isScientific(s), sciOracle.MatchString(s); got != want {
			t.Errorf("isScientific(%q) = %v, regexp says %v", s, got, want)
		}
	}
}

func datum(key pb.Field, v *pb.Value) *pb.Datum { return &pb.Datum{Key: key, Value: v} }

func str(s string) *pb.Value { return &pb.Value{Value: &pb.Value_StringValue{StringValue: s}} }

func TestTransformV(t *testing.T) {
	in := &pb.Payload{
		Vin: "SPOOFED",
		Data: []*pb.Datum{
			datum(pb.Field_Soc, str("-2.5E+2")),
			datum(pb.Field_PackVoltage, str("1e-3")),
			datum(pb.Field_PackCurrent, str("1.0e100")), // out of float32 range: kept
			datum(pb.Field_Location, str("(37.412374 N, 122.145867 W)")),
			datum(pb.Field_Location, str("(1 S, 2 E)")), // only the first Location is converted
			datum(pb.Field_Odometer, str("3.14159e0")),
			datum(pb.Field_VehicleName, str("(1 X, 2 E)")),
		},
	}
	raw, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Transform(TopicV, "5YJ3E1EA1KF000001", raw)
	if err != nil {
		t.Fatalf("Transform: %v", err)
	}
	p := m.(*pb.Payload)
	if p.Vin != "5YJ3E1EA1KF000001" {
		t.Errorf("vin = %q", p.Vin)
	}
	wantStr := map[int]string{0: "-250.00000", 1: "1e-3", 2: "1.0e100", 4: "(1 S, 2 E)", 5: "3.14159", 6: "(1 X, 2 E)"}
	for i, want := range wantStr {
		if got := p.Data[i].GetValue().GetStringValue(); got != want {
			t.Errorf("datum %d = %q, want %q", i, got, want)
		}
	}
	loc := p.Data[3].GetValue().GetLocationValue()
	if loc.GetLatitude() != 37.412374 || loc.GetLongitude() != -122.145867 {
		t.Errorf("location = %v", loc)
	}
	// The reference formats with fmt's %.5f; FormatFloat must agree.
	for _, f := range []float64{-250, 1e-9, -1e-9, 3.14159, 1e30, 0.000005, -0.000005} {
		if got, want := strconv.FormatFloat(f, 'f', 5, 64), fmt.Sprintf("%.5f", f); got != want {
			t.Errorf("FormatFloat(%v) = %q, %%.5f = %q", f, got, want)
		}
	}
}

func TestTransformAlerts(t *testing.T) {
	in := &pb.VehicleAlerts{Alerts: []*pb.VehicleAlert{
		{Name: "a", StartedAt: &timestamppb.Timestamp{Seconds: 1700000000, Nanos: 5}},
		{Name: "b", StartedAt: &timestamppb.Timestamp{Seconds: 1700000000123, Nanos: 7}, EndedAt: &timestamppb.Timestamp{Seconds: maxDurationSeconds}},
		{Name: "c", EndedAt: &timestamppb.Timestamp{Seconds: maxDurationSeconds - 1}},
	}}
	raw, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Transform(TopicAlerts, "VIN", raw)
	if err != nil {
		t.Fatal(err)
	}
	a := m.(*pb.VehicleAlerts)
	check := func(name string, ts *timestamppb.Timestamp, sec int64, nanos int32) {
		t.Helper()
		if ts.GetSeconds() != sec || ts.GetNanos() != nanos {
			t.Errorf("%s = %v, want %d.%09d", name, ts, sec, nanos)
		}
	}
	check("a.started", a.Alerts[0].StartedAt, 1700000000, 5)
	if a.Alerts[0].EndedAt != nil {
		t.Errorf("a.ended = %v, want unset", a.Alerts[0].EndedAt)
	}
	check("b.started", a.Alerts[1].StartedAt, 1700000000, 123000000)
	check("b.ended", a.Alerts[1].EndedAt, maxDurationSeconds/1000, int32(maxDurationSeconds%1000)*1e6)
	check("c.ended", a.Alerts[2].EndedAt, maxDurationSeconds-1, 0)
	if a.Vin != "VIN" {
		t.Errorf("vin = %q", a.Vin)
	}
}

func TestValidate(t *testing.T) {
	good, _ := proto.Marshal(&pb.Payload{Data: []*pb.Datum{datum(pb.Field_Soc, str("1"))}})
	badUTF8, _ := proto.Marshal(&pb.Payload{Data: []*pb.Datum{datum(pb.Field_Soc, str("ok"))}})
	badUTF8[len(badUTF8)-1] = 0xff
	// Known field 3 (vin, a string) sent as a varint: proto.Unmarshal keeps
	// it as an unknown field, so the reference acks it.
	wrongWire := protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 7)
	// Packed and unpacked repeated enums are both valid for audiences.
	packed := protowire.AppendTag(nil, 2, protowire.BytesType)
	packed = protowire.AppendBytes(packed, []byte{1, 2, 3})
	unpacked := protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 2)
	alerts := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), append(packed, unpacked...))
	bigField := protowire.AppendVarint(protowire.AppendTag(nil, protowire.MaxValidNumber, protowire.VarintType), 1)
	tooBig := protowire.AppendVarint(protowire.AppendVarint(nil, uint64(protowire.MaxValidNumber+1)<<3), 1)
	group := protowire.AppendTag(protowire.AppendTag(nil, 9, protowire.StartGroupType), 9, protowire.EndGroupType)
	strayEnd := protowire.AppendTag(nil, 9, protowire.EndGroupType)

	for _, tc := range []struct {
		name, topic string
		payload     []byte
	}{
		{"good", TopicV, good}, {"bad utf8", TopicV, badUTF8}, {"wrong wire type", TopicV, wrongWire},
		{"packed audiences", TopicAlerts, alerts}, {"max field number", TopicErrors, bigField},
		{"field number too big", TopicErrors, tooBig}, {"unknown group", TopicConnectivity, group},
		{"stray end group", TopicConnectivity, strayEnd}, {"truncated", TopicV, good[:len(good)-1]},
		{"empty", TopicV, nil}, {"reference bad", TopicV, []byte{0x0a, 0xff, 0xff, 0xff}},
	} {
		ref := proto.Unmarshal(tc.payload, newMessage(tc.topic))
		_, err := Validate([]byte(tc.topic), tc.payload)
		if (err == nil) != (ref == nil) {
			t.Errorf("%s: Validate = %v, proto.Unmarshal = %v", tc.name, err, ref)
		}
		if err != nil && !errors.Is(err, ErrInvalidPayload) {
			t.Errorf("%s: %v does not wrap ErrInvalidPayload", tc.name, err)
		}
		if err == nil {
			if _, terr := Transform(tc.topic, "VIN", tc.payload); terr != nil {
				t.Errorf("%s: Transform after Validate ok: %v", tc.name, terr)
			}
		}
	}
	if _, err := Validate([]byte("metrics"), good); !errors.Is(err, ErrUnknownTopic) {
		t.Errorf("Validate(metrics) = %v, want ErrUnknownTopic", err)
	}
	if _, err := Transform("nope", "VIN", good); !errors.Is(err, ErrUnknownTopic) {
		t.Errorf("Transform(nope) = %v, want ErrUnknownTopic", err)
	}
}

func TestSenderIDMatches(t *testing.T) {
	for _, tc := range []struct {
		sender string
		want   bool
	}{
		{"vehicle_device.VIN1", true}, {"VIN1", true}, {"vehicle_device.VIN2", false},
		{"vehicle_deviceXVIN1", false}, {"energy_device.VIN1", false}, {"", false}, {"vehicle_device.", false},
	} {
		if got := SenderIDMatches([]byte(tc.sender), "vehicle_device", "VIN1"); got != tc.want {
			t.Errorf("SenderIDMatches(%q) = %v", tc.sender, got)
		}
	}
}

func TestValidateZeroAllocs(t *testing.T) {
	payload := benchPayload(t)
	topic := []byte(TopicV)
	if n := testing.AllocsPerRun(200, func() {
		if _, err := Validate(topic, payload); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Validate allocs = %v, want 0", n)
	}
}

// benchPayload is a realistic V record: 20 datums mixing every common value
// type, about 512 bytes encoded.
func benchPayload(t testing.TB) []byte {
	t.Helper()
	p := &pb.Payload{
		CreatedAt: &timestamppb.Timestamp{Seconds: 1700000000, Nanos: 123000000},
		Vin:       "5YJ3E1EA1KF000001",
		Data: []*pb.Datum{
			datum(pb.Field_VehicleName, str("Model 3 Long Range Dual Motor All-Wheel Drive (Highland) - Midnight Silver Metallic, 20in Uberturbine Wheels")),
			datum(pb.Field_Soc, &pb.Value{Value: &pb.Value_DoubleValue{DoubleValue: 76.25}}),
			datum(pb.Field_Odometer, &pb.Value{Value: &pb.Value_FloatValue{FloatValue: 12345.5}}),
			datum(pb.Field_EstBatteryRange, &pb.Value{Value: &pb.Value_IntValue{IntValue: 231}}),
			datum(pb.Field_ScheduledChargingStartTime, &pb.Value{Value: &pb.Value_LongValue{LongValue: 1700003600}}),
			datum(pb.Field_Location, &pb.Value{Value: &pb.Value_LocationValue{LocationValue: &pb.LocationValue{Latitude: 37.412374, Longitude: -122.145867}}}),
			datum(pb.Field_DetailedChargeState, &pb.Value{Value: &pb.Value_DetailedChargeStateValue{DetailedChargeStateValue: pb.DetailedChargeStateValue_DetailedChargeStateCharging}}),
			datum(pb.Field_Gear, &pb.Value{Value: &pb.Value_ShiftStateValue{ShiftStateValue: pb.ShiftState_ShiftStateD}}),
			datum(pb.Field_DoorState, &pb.Value{Value: &pb.Value_DoorValue{DoorValue: &pb.Doors{DriverFront: true, TrunkRear: true}}}),
			datum(pb.Field_Locked, &pb.Value{Value: &pb.Value_BooleanValue{BooleanValue: true}}),
			datum(pb.Field_SentryMode, &pb.Value{Value: &pb.Value_SentryModeStateValue{SentryModeStateValue: pb.SentryModeState_SentryModeStateArmed}}),
			datum(pb.Field_PackVoltage, str("402.125")),
			datum(pb.Field_PackCurrent, str("-12.5")),
			datum(pb.Field_Location, str("(37.412374 S, 122.145867 E)")),
			datum(pb.Field_VehicleSpeed, &pb.Value{Value: &pb.Value_DoubleValue{DoubleValue: 64.5}}),
			datum(pb.Field_InsideTemp, &pb.Value{Value: &pb.Value_FloatValue{FloatValue: 21.5}}),
			datum(pb.Field_OutsideTemp, &pb.Value{Value: &pb.Value_FloatValue{FloatValue: 12.25}}),
			datum(pb.Field_TpmsPressureFl, &pb.Value{Value: &pb.Value_Invalid{Invalid: true}}),
			datum(pb.Field_Version, str("2024.44.25.3 4a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e")),
			datum(pb.Field_ChargeLimitSoc, &pb.Value{Value: &pb.Value_IntValue{IntValue: 80}}),
		},
	}
	b, err := proto.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Data) != 20 || len(b) < 480 || len(b) > 560 {
		t.Fatalf("bench payload has %d datums, %d bytes; want 20, ~512", len(p.Data), len(b))
	}
	return b
}

// TestMarshalProtoKeepsTimestampUnknowns covers a fuzz finding: vtproto's
// Timestamp code drops unknown fields, proto.Marshal (the reference) keeps
// them, so MarshalProto must fall back for such records.
func TestMarshalProtoKeepsTimestampUnknowns(t *testing.T) {
	ts := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1700000000)
	ts = protowire.AppendVarint(protowire.AppendTag(ts, 6, protowire.VarintType), 48)
	payload := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), ts)
	m, err := Transform(TopicErrors, "VIN", payload)
	if err != nil {
		t.Fatal(err)
	}
	b, err := MarshalProto(m)
	if err != nil {
		t.Fatal(err)
	}
	back := &pb.VehicleErrors{}
	if err := proto.Unmarshal(b, back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(back, m) || len(back.CreatedAt.ProtoReflect().GetUnknown()) == 0 {
		t.Fatalf("Timestamp unknown fields lost: %v", back)
	}
}

// Validate counts the reference's signals in the same walk: a V record's
// datums, an alerts record's alerts, none for other types.
func TestValidateCountsSignals(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 20} {
		p := vehicle.PayloadV(rng, testVIN, n, time.Now())
		if got, err := Validate([]byte(TopicV), p); err != nil || got != n {
			t.Errorf("V with %d datums: %d signals, %v", n, got, err)
		}
	}
	alerts := &pb.VehicleAlerts{Alerts: []*pb.VehicleAlert{{Name: "a"}, {Name: "b"}}, Vin: testVIN}
	ab, _ := alerts.MarshalVT()
	if got, err := Validate([]byte(TopicAlerts), ab); err != nil || got != 2 {
		t.Errorf("alerts with 2 alerts: %d signals, %v", got, err)
	}
	if got, err := Validate([]byte(TopicErrors), vehicle.PayloadErrors(testVIN, time.Now())); err != nil || got != 0 {
		t.Errorf("errors record: %d signals, %v; want 0", got, err)
	}
}

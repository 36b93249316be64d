package mqtt

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

const testVIN = "5YJ3E1EA1KF000001"

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// encodeOne encodes a V record holding one datum of v and returns its one
// publish's payload.
func encodeOne(t *testing.T, v *pb.Value) string {
	t.Helper()
	p := &pb.Payload{Data: []*pb.Datum{{Key: pb.Field_VehicleSpeed, Value: v}}}
	msgs, refused, err := Encode("V", testVIN, "telemetry", marshal(t, p))
	if err != nil || len(refused) > 0 || len(msgs) != 1 {
		t.Fatalf("Encode: msgs %v refused %v err %v", msgs, refused, err)
	}
	if want := "telemetry/" + testVIN + "/v/VehicleSpeed"; msgs[0].Topic != want {
		t.Fatalf("topic %q, want %q", msgs[0].Topic, want)
	}
	return string(msgs[0].Payload)
}

// The scalar and message members, with what encoding/json writes for them.
func TestDatumValueScalarsAndMessages(t *testing.T) {
	cases := []struct {
		name string
		v    *pb.Value
		want string
	}{
		{"string", &pb.Value{Value: &pb.Value_StringValue{StringValue: "a<b>&\u2028\"\\"}}, `"a\u003cb\u003e\u0026\u2028\"\\"`},
		{"string empty", &pb.Value{Value: &pb.Value_StringValue{}}, `""`},
		{"int", &pb.Value{Value: &pb.Value_IntValue{IntValue: -5}}, `-5`},
		{"int zero", &pb.Value{Value: &pb.Value_IntValue{}}, `0`},
		{"long", &pb.Value{Value: &pb.Value_LongValue{LongValue: math.MaxInt64}}, `9223372036854775807`},
		{"float", &pb.Value{Value: &pb.Value_FloatValue{FloatValue: 1.1}}, `1.1`},
		{"float large", &pb.Value{Value: &pb.Value_FloatValue{FloatValue: 1e21}}, `1e+21`},
		{"float small", &pb.Value{Value: &pb.Value_FloatValue{FloatValue: 1e-7}}, `1e-7`},
		{"float negative zero", &pb.Value{Value: &pb.Value_FloatValue{FloatValue: float32(math.Copysign(0, -1))}}, `-0`},
		{"double", &pb.Value{Value: &pb.Value_DoubleValue{DoubleValue: 0.1}}, `0.1`},
		{"double integral", &pb.Value{Value: &pb.Value_DoubleValue{DoubleValue: 42}}, `42`},
		{"bool", &pb.Value{Value: &pb.Value_BooleanValue{BooleanValue: true}}, `true`},
		{"bool false", &pb.Value{Value: &pb.Value_BooleanValue{}}, `false`},
		{"invalid", &pb.Value{Value: &pb.Value_Invalid{Invalid: true}}, `null`},
		{"invalid false", &pb.Value{Value: &pb.Value_Invalid{}}, `null`},
		{"location", &pb.Value{Value: &pb.Value_LocationValue{LocationValue: &pb.LocationValue{Latitude: 37.5, Longitude: -122.25}}}, `{"latitude":37.5,"longitude":-122.25}`},
		{"location zero", &pb.Value{Value: &pb.Value_LocationValue{LocationValue: &pb.LocationValue{}}}, `{"latitude":0,"longitude":0}`},
		{"doors", &pb.Value{Value: &pb.Value_DoorValue{DoorValue: &pb.Doors{DriverFront: true, PassengerRear: true, TrunkRear: true}}},
			`{"DriverFront":true,"DriverRear":false,"PassengerFront":false,"PassengerRear":true,"TrunkFront":false,"TrunkRear":true}`},
		{"doors empty", &pb.Value{Value: &pb.Value_DoorValue{DoorValue: &pb.Doors{}}},
			`{"DriverFront":false,"DriverRear":false,"PassengerFront":false,"PassengerRear":false,"TrunkFront":false,"TrunkRear":false}`},
		{"time", &pb.Value{Value: &pb.Value_TimeValue{TimeValue: &pb.Time{Hour: 8, Minute: 5, Second: 3}}}, `"08:05:03"`},
		{"time empty", &pb.Value{Value: &pb.Value_TimeValue{TimeValue: &pb.Time{}}}, `"00:00:00"`},
		{"time out of range", &pb.Value{Value: &pb.Value_TimeValue{TimeValue: &pb.Time{Hour: 123, Minute: -1, Second: 7}}}, `"123:-1:07"`},
		{"tire location", &pb.Value{Value: &pb.Value_TireLocationValue{TireLocationValue: &pb.TireLocation{FrontLeft: true, SemiRearAxleRight_2: true}}},
			`{"front_left":true,"semi_rear_axle_right_2":true}`},
		{"tire location empty", &pb.Value{Value: &pb.Value_TireLocationValue{TireLocationValue: &pb.TireLocation{}}}, `{}`},
		{"empty value", &pb.Value{}, `{}`},
		{"no value", nil, `{}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := encodeOne(t, c.v); got != c.want {
				t.Errorf("got %s, want %s", got, c.want)
			}
		})
	}
}

// namedEnumFields are the Value members the reference writes with the
// enum's String method: a number the schema does not know becomes a JSON
// string of its decimal digits. Every other enum member becomes a JSON
// number then.
var namedEnumFields = map[string]bool{
	"shift_state_value": true, "lane_assist_level_value": true, "scheduled_charging_mode_value": true,
	"sentry_mode_state_value": true, "speed_assist_level_value": true, "bms_state_value": true,
	"buckle_status_value": true, "car_type_value": true, "charge_port_value": true,
	"charge_port_latch_value": true, "drive_inverter_state_value": true, "hvil_status_value": true,
	"window_state_value": true, "seat_fold_position_value": true, "tractor_air_status_value": true,
	"follow_distance_value": true, "forward_collision_sensitivity_value": true,
	"guest_mode_mobile_access_value": true, "trailer_air_status_value": true,
	"detailed_charge_state_value": true,
}

// Every enum member of Value, with a known number (its name), zero (the
// zero name: a oneof member is set even at zero) and a number the schema
// does not know.
func TestDatumValueEveryEnumMember(t *testing.T) {
	fields := (&pb.Value{}).ProtoReflect().Descriptor().Fields()
	enums := 0
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.Kind() != protoreflect.EnumKind {
			continue
		}
		enums++
		for _, n := range []protoreflect.EnumNumber{0, 1, 9999} {
			v := &pb.Value{}
			v.ProtoReflect().Set(fd, protoreflect.ValueOfEnum(n))
			got := encodeOne(t, v)
			var want string
			if d := fd.Enum().Values().ByNumber(n); d != nil {
				want = `"` + string(d.Name()) + `"`
			} else if namedEnumFields[string(fd.Name())] {
				want = `"9999"`
			} else {
				want = `9999`
			}
			if got != want {
				t.Errorf("%s = %d: got %s, want %s", fd.Name(), n, got, want)
			}
		}
	}
	if enums < 40 {
		t.Fatalf("only %d enum members in Value", enums)
	}
	for name := range namedEnumFields {
		if fields.ByName(protoreflect.Name(name)) == nil {
			t.Errorf("%s is not a Value member", name)
		}
	}
	// Spot checks with literal names.
	for _, c := range []struct {
		v    *pb.Value
		want string
	}{
		{&pb.Value{Value: &pb.Value_ShiftStateValue{ShiftStateValue: pb.ShiftState_ShiftStateD}}, `"ShiftStateD"`},
		{&pb.Value{Value: &pb.Value_ChargingValue{ChargingValue: pb.ChargingState_ChargeStateCharging}}, `"ChargeStateCharging"`},
		{&pb.Value{Value: &pb.Value_HvacPowerValue{HvacPowerValue: pb.HvacPowerState_HvacPowerStateOn}}, `"HvacPowerStateOn"`},
	} {
		if got := encodeOne(t, c.v); got != c.want {
			t.Errorf("got %s, want %s", got, c.want)
		}
	}
}

// Every member of Value is covered by one of the tests above: a member
// added to the schema fails here until its form is decided.
func TestDatumValueCoversEveryMember(t *testing.T) {
	covered := map[string]bool{
		"string_value": true, "int_value": true, "long_value": true, "float_value": true, "double_value": true,
		"boolean_value": true, "invalid": true, "location_value": true, "door_value": true, "time_value": true,
		"tire_location_value": true,
	}
	fields := (&pb.Value{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.Kind() == protoreflect.EnumKind {
			continue // TestDatumValueEveryEnumMember
		}
		if !covered[string(fd.Name())] {
			t.Errorf("Value member %s (%d, %s) has no test", fd.Name(), fd.Number(), fd.Kind())
		}
	}
}

// Every publish's payload is valid JSON that decodes to what was sent.
func TestDatumValueRoundTrips(t *testing.T) {
	var v any
	for _, s := range []string{"plain", "quote\" backslash\\ tab\t nl\n", "\x00\x1f", "日本語", "<script>"} {
		got := encodeOne(t, &pb.Value{Value: &pb.Value_StringValue{StringValue: s}})
		if err := json.Unmarshal([]byte(got), &v); err != nil || v != s {
			t.Errorf("%q: %s decodes to %v (%v)", s, got, v, err)
		}
	}
}

func TestVTopicsLastWinsAndOrder(t *testing.T) {
	p := &pb.Payload{
		CreatedAt: timestamppb.New(time.Unix(1700000000, 0)),
		Data: []*pb.Datum{
			{Key: pb.Field_VehicleName, Value: &pb.Value{Value: &pb.Value_StringValue{StringValue: "first"}}},
			{Key: pb.Field(9999), Value: &pb.Value{Value: &pb.Value_IntValue{IntValue: 7}}},
			{Key: pb.Field_Soc, Value: &pb.Value{Value: &pb.Value_DoubleValue{DoubleValue: 80.5}}},
			{Key: pb.Field_VehicleName, Value: &pb.Value{Value: &pb.Value_StringValue{StringValue: "last"}}},
		},
	}
	msgs, refused, err := Encode("V", testVIN, "base/x", marshal(t, p))
	if err != nil || len(refused) > 0 {
		t.Fatal(err, refused)
	}
	want := []Message{
		{"base/x/" + testVIN + "/v/VehicleName", []byte(`"last"`)},
		{"base/x/" + testVIN + "/v/9999", []byte(`7`)},
		{"base/x/" + testVIN + "/v/Soc", []byte(`80.5`)},
	}
	if len(msgs) != len(want) {
		t.Fatalf("got %d messages: %v", len(msgs), msgs)
	}
	for i := range want {
		if msgs[i].Topic != want[i].Topic || string(msgs[i].Payload) != string(want[i].Payload) {
			t.Errorf("message %d: %s %s, want %s %s", i, msgs[i].Topic, msgs[i].Payload, want[i].Topic, want[i].Payload)
		}
	}
	// An empty V record publishes nothing.
	if msgs, _, err := Encode("V", testVIN, "b", nil); err != nil || len(msgs) != 0 {
		t.Fatalf("empty payload: %v %v", msgs, err)
	}
}

// The payload's own VIN is never used: the certificate's is.
func TestVINFromCertificate(t *testing.T) {
	p := &pb.Payload{Vin: "SPOOFED", Data: []*pb.Datum{{Key: pb.Field_Soc, Value: &pb.Value{Value: &pb.Value_IntValue{IntValue: 1}}}}}
	msgs, _, err := Encode("V", testVIN, "t", marshal(t, p))
	if err != nil || len(msgs) != 1 || msgs[0].Topic != "t/"+testVIN+"/v/Soc" {
		t.Fatalf("%v %v", msgs, err)
	}
}

func ts(sec int64) *timestamppb.Timestamp { return &timestamppb.Timestamp{Seconds: sec, Nanos: 999} }

func TestAlerts(t *testing.T) {
	p := &pb.VehicleAlerts{Alerts: []*pb.VehicleAlert{
		{Name: "A", StartedAt: ts(1700000000), Audiences: []pb.Audience{pb.Audience_Customer, pb.Audience(42)}},
		{Name: "B"}, // no StartedAt: never current
		{Name: "A", StartedAt: ts(1700000100), EndedAt: ts(1700000200)},
		{Name: "A", StartedAt: ts(1700000100), Audiences: []pb.Audience{pb.Audience_Service}}, // a tie keeps the first
		{Name: "C", StartedAt: ts(0)},
	}}
	msgs, refused, err := Encode("alerts", testVIN, "t", marshal(t, p))
	if err != nil || len(refused) > 0 {
		t.Fatal(err, refused)
	}
	base := "t/" + testVIN + "/alerts/"
	a1 := `{"Audiences":["Customer","42"],"StartedAt":"2023-11-14T22:13:20Z"}`
	a2 := `{"Audiences":null,"EndedAt":"2023-11-14T22:16:40Z","StartedAt":"2023-11-14T22:15:00Z"}`
	a3 := `{"Audiences":["Service"],"StartedAt":"2023-11-14T22:15:00Z"}`
	want := []Message{
		{base + "A/current", []byte(a2)},
		{base + "C/current", []byte(`{"Audiences":null,"StartedAt":"1970-01-01T00:00:00Z"}`)},
		{base + "A/history", []byte("[" + a1 + "," + a2 + "," + a3 + "]")},
		{base + "B/history", []byte(`[{"Audiences":null}]`)},
		{base + "C/history", []byte(`[{"Audiences":null,"StartedAt":"1970-01-01T00:00:00Z"}]`)},
	}
	if len(msgs) != len(want) {
		t.Fatalf("got %d messages: %q", len(msgs), msgs)
	}
	for i := range want {
		if msgs[i].Topic != want[i].Topic || string(msgs[i].Payload) != string(want[i].Payload) {
			t.Errorf("message %d:\n got %s %s\nwant %s %s", i, msgs[i].Topic, msgs[i].Payload, want[i].Topic, want[i].Payload)
		}
	}
}

// Alert times sent in epoch milliseconds are normalised first (the
// reference's transform), so they publish as the right date.
func TestAlertMillisecondTimes(t *testing.T) {
	p := &pb.VehicleAlerts{Alerts: []*pb.VehicleAlert{{Name: "A", StartedAt: &timestamppb.Timestamp{Seconds: 1700000000123}}}}
	msgs, _, err := Encode("alerts", testVIN, "t", marshal(t, p))
	if err != nil || len(msgs) != 2 {
		t.Fatal(msgs, err)
	}
	if want := `{"Audiences":null,"StartedAt":"2023-11-14T22:13:20Z"}`; string(msgs[0].Payload) != want {
		t.Fatalf("got %s, want %s", msgs[0].Payload, want)
	}
}

func TestErrors(t *testing.T) {
	p := &pb.VehicleErrors{Errors: []*pb.VehicleError{
		{Name: "config_error", Body: "field <x>", CreatedAt: ts(1700000000), Tags: map[string]string{"z": "1", "a": "2"}},
		{Name: "bare"},
		{Name: "config_error", Body: "again"},
	}}
	msgs, refused, err := Encode("errors", testVIN, "t", marshal(t, p))
	if err != nil || len(refused) > 0 {
		t.Fatal(err, refused)
	}
	base := "t/" + testVIN + "/errors/"
	want := []Message{
		{base + "config_error", []byte(`{"Body":"field \u003cx\u003e","CreatedAt":"2023-11-14T22:13:20Z","Tags":{"a":"2","z":"1"}}`)},
		{base + "bare", []byte(`{"Body":"","Tags":null}`)},
		{base + "config_error", []byte(`{"Body":"again","Tags":null}`)},
	}
	if len(msgs) != len(want) {
		t.Fatalf("got %q", msgs)
	}
	for i := range want {
		if msgs[i].Topic != want[i].Topic || string(msgs[i].Payload) != string(want[i].Payload) {
			t.Errorf("message %d:\n got %s %s\nwant %s %s", i, msgs[i].Topic, msgs[i].Payload, want[i].Topic, want[i].Payload)
		}
	}
}

func TestConnectivity(t *testing.T) {
	for _, c := range []struct {
		m    *pb.VehicleConnectivity
		want string
	}{
		{&pb.VehicleConnectivity{ConnectionId: "c-1", Status: pb.ConnectivityEvent_CONNECTED, CreatedAt: ts(1700000000), NetworkInterface: "wifi"},
			`{"ConnectionId":"c-1","CreatedAt":"2023-11-14T22:13:20Z","Status":"CONNECTED"}`},
		{&pb.VehicleConnectivity{Status: pb.ConnectivityEvent(7)}, `{"ConnectionId":"","CreatedAt":"1970-01-01T00:00:00Z","Status":"7"}`},
	} {
		msgs, _, err := Encode("connectivity", testVIN, "t", marshal(t, c.m))
		if err != nil || len(msgs) != 1 {
			t.Fatal(msgs, err)
		}
		if msgs[0].Topic != "t/"+testVIN+"/connectivity" || string(msgs[0].Payload) != c.want {
			t.Errorf("got %s %s, want %s", msgs[0].Topic, msgs[0].Payload, c.want)
		}
	}
}

// A value JSON cannot hold, and a topic MQTT forbids, are left out and
// reported; the record's other publishes go out.
func TestRefusals(t *testing.T) {
	p := &pb.Payload{Data: []*pb.Datum{
		{Key: pb.Field_Soc, Value: &pb.Value{Value: &pb.Value_DoubleValue{DoubleValue: math.NaN()}}},
		{Key: pb.Field_Odometer, Value: &pb.Value{Value: &pb.Value_FloatValue{FloatValue: float32(math.Inf(1))}}},
		{Key: pb.Field_VehicleSpeed, Value: &pb.Value{Value: &pb.Value_IntValue{IntValue: 3}}},
	}}
	msgs, refused, err := Encode("V", testVIN, "t", marshal(t, p))
	if err != nil || len(msgs) != 1 || len(refused) != 2 {
		t.Fatalf("msgs %q refused %v err %v", msgs, refused, err)
	}
	for _, r := range refused {
		if !errors.Is(r, ErrRefused) {
			t.Errorf("%v does not wrap ErrRefused", r)
		}
	}
	a := &pb.VehicleAlerts{Alerts: []*pb.VehicleAlert{
		{Name: "sport/+", StartedAt: ts(1)}, {Name: "x#"}, {Name: "nul\x00"},
		{Name: strings.Repeat("n", maxTopicBytes)}, {Name: "ok/with/levels", StartedAt: ts(1)},
	}}
	msgs, refused, err = Encode("alerts", testVIN, "t", marshal(t, a))
	if err != nil {
		t.Fatal(err)
	}
	// "sport/+" current and history, "x#", "nul" and the long one
	// history: 5 refused; "ok/with/levels" current and history published.
	// (Invalid UTF-8 never gets here: proto3 decoding refuses it.)
	if len(msgs) != 2 || len(refused) != 5 {
		t.Fatalf("msgs %d refused %d: %v", len(msgs), len(refused), refused)
	}
	for _, m := range msgs {
		if !strings.Contains(m.Topic, "ok/with/levels") {
			t.Errorf("published %q", m.Topic)
		}
	}
}

func TestUndecodable(t *testing.T) {
	if _, _, err := Encode("V", testVIN, "t", []byte{0xff, 0xff}); err == nil {
		t.Fatal("a payload that is not protobuf encoded")
	}
	if _, _, err := Encode("nope", testVIN, "t", nil); err == nil {
		t.Fatal("an unknown record type encoded")
	}
}

// FuzzEncode feeds arbitrary payload bytes: Encode never panics, and every
// publish it returns has an allowed topic and a payload that is JSON.
func FuzzEncode(f *testing.F) {
	f.Add("V", marshal(f, &pb.Payload{Data: []*pb.Datum{{Key: pb.Field_Soc, Value: &pb.Value{Value: &pb.Value_TireLocationValue{TireLocationValue: &pb.TireLocation{RearLeft: true}}}}}}))
	f.Add("alerts", marshal(f, &pb.VehicleAlerts{Alerts: []*pb.VehicleAlert{{Name: "a", StartedAt: ts(1), Audiences: []pb.Audience{3, 9}}}}))
	f.Add("errors", marshal(f, &pb.VehicleErrors{Errors: []*pb.VehicleError{{Name: "e", Tags: map[string]string{"k": "v"}}}}))
	f.Add("connectivity", marshal(f, &pb.VehicleConnectivity{ConnectionId: "c"}))
	f.Fuzz(func(t *testing.T, recordType string, payload []byte) {
		msgs, refused, err := Encode(recordType, testVIN, "t", payload)
		if err != nil && (len(msgs) > 0 || len(refused) > 0) {
			t.Fatalf("messages with an error: %v", err)
		}
		for _, m := range msgs {
			if err := checkTopic(m.Topic); err != nil {
				t.Fatalf("published a refused topic: %v", err)
			}
			if !json.Valid(m.Payload) {
				t.Fatalf("%s: payload is not JSON: %q", m.Topic, m.Payload)
			}
		}
		for _, r := range refused {
			if !errors.Is(r, ErrRefused) {
				t.Fatalf("refusal %v does not wrap ErrRefused", r)
			}
		}
	})
}

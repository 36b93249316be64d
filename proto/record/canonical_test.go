package record

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

const testVIN = "5YJ3E1EA1KF000001"

// slowDispatch is what the reference does: decode, transform, proto.Marshal.
func slowDispatch(t testing.TB, vin string, payload []byte) ([]byte, CreatedAt) {
	t.Helper()
	m, err := Transform(TopicV, vin, payload)
	if err != nil {
		t.Fatalf("Transform: %v", err)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("proto.Marshal: %v", err)
	}
	var c CreatedAt
	if ts := m.(*pb.Payload).GetCreatedAt(); ts != nil {
		c = CreatedAt{Seconds: ts.GetSeconds(), Nanos: ts.GetNanos(), Present: true}
	}
	return b, c
}

// checkDispatched runs the fast path on payload and, when it is taken,
// requires the reference's bytes and created_at. It reports whether the
// fast path was taken.
func checkDispatched(t testing.TB, vin string, payload []byte) bool {
	t.Helper()
	prefix := []byte("prefix")
	out, created, ok := AppendDispatched(prefix[:len(prefix):len(prefix)], TopicV, vin, payload)
	if !bytes.HasPrefix(out, prefix) {
		t.Fatalf("AppendDispatched lost dst's contents")
	}
	if !ok {
		if len(out) != len(prefix) {
			t.Fatalf("AppendDispatched declined but appended %d bytes", len(out)-len(prefix))
		}
		return false
	}
	want, wantCreated := slowDispatch(t, vin, payload)
	if got := out[len(prefix):]; !bytes.Equal(got, want) {
		t.Fatalf("fast path bytes differ from decode+transform+proto.Marshal\npayload %x\nfast    %x\nslow    %x", payload, got, want)
	}
	if created != wantCreated {
		t.Fatalf("created_at = %+v, want %+v", created, wantCreated)
	}
	return true
}

// randomPayload builds a Payload with every kind of value, edge values
// included (zeros inside oneofs, negative zero, NaN, negative enums).
func randomPayload(rng *rand.Rand) *pb.Payload {
	p := &pb.Payload{}
	if rng.IntN(4) > 0 {
		p.CreatedAt = &timestamppb.Timestamp{Seconds: rng.Int64N(4e9) - 1e9, Nanos: rng.Int32N(1e9)}
		if rng.IntN(8) == 0 {
			p.CreatedAt = &timestamppb.Timestamp{}
		}
	}
	if rng.IntN(3) == 0 {
		p.Vin = "IN-PAYLOAD-VIN"
	}
	p.IsResend = rng.IntN(3) == 0
	floats := []float64{0, math.Copysign(0, -1), math.NaN(), math.Inf(1), 1.5, -2.25e10}
	for range rng.IntN(30) {
		d := &pb.Datum{Key: pb.Field(rng.IntN(300))}
		if d.Key == pb.Field_Location {
			d.Key = pb.Field_Odometer
		}
		switch rng.IntN(12) {
		case 0:
			d.Value = &pb.Value{Value: &pb.Value_StringValue{StringValue: []string{"", "abc", "héllo", "1.5", "-2e5"}[rng.IntN(5)]}}
		case 1:
			d.Value = &pb.Value{Value: &pb.Value_IntValue{IntValue: []int32{0, -1, math.MinInt32, 7}[rng.IntN(4)]}}
		case 2:
			d.Value = &pb.Value{Value: &pb.Value_LongValue{LongValue: []int64{0, -1, math.MaxInt64, 1 << 40}[rng.IntN(4)]}}
		case 3:
			d.Value = &pb.Value{Value: &pb.Value_FloatValue{FloatValue: float32(floats[rng.IntN(len(floats))])}}
		case 4:
			d.Value = &pb.Value{Value: &pb.Value_DoubleValue{DoubleValue: floats[rng.IntN(len(floats))]}}
		case 5:
			d.Value = &pb.Value{Value: &pb.Value_BooleanValue{BooleanValue: rng.IntN(2) == 1}}
		case 6:
			d.Value = &pb.Value{Value: &pb.Value_LocationValue{LocationValue: &pb.LocationValue{
				Latitude: floats[rng.IntN(len(floats))], Longitude: floats[rng.IntN(len(floats))]}}}
		case 7:
			d.Value = &pb.Value{Value: &pb.Value_ShiftStateValue{ShiftStateValue: pb.ShiftState(rng.IntN(6) - 1)}}
		case 8:
			d.Value = &pb.Value{Value: &pb.Value_DoorValue{DoorValue: &pb.Doors{DriverFront: rng.IntN(2) == 1, TrunkRear: rng.IntN(2) == 1}}}
		case 9:
			d.Value = &pb.Value{Value: &pb.Value_TimeValue{TimeValue: &pb.Time{Hour: rng.Int32N(24), Minute: rng.Int32N(60)}}}
		case 10:
			d.Value = &pb.Value{}
		}
		p.Data = append(p.Data, d)
	}
	return p
}

// TestAppendDispatchedTakesWhatProtoMarshalWrites: proto.Marshal's output
// (what vehicles send) always takes the fast path, with the reference's
// bytes.
func TestAppendDispatchedTakesWhatProtoMarshalWrites(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		b, err := proto.Marshal(randomPayload(rng))
		if err != nil {
			t.Fatal(err)
		}
		vin := testVIN
		if i%10 == 0 {
			vin = ""
		}
		if !checkDispatched(t, vin, b) {
			t.Fatalf("fast path declined canonical payload %x", b)
		}
	}
}

// TestAppendDispatchedDeclines lists inputs proto.Marshal would rewrite or
// the reference would transform; each must take the slow path.
func TestAppendDispatchedDeclines(t *testing.T) {
	datum := func(key pb.Field, v *pb.Value) []byte {
		b, _ := proto.Marshal(&pb.Payload{Data: []*pb.Datum{{Key: key, Value: v}}})
		return b
	}
	ts, _ := proto.Marshal(&pb.Payload{CreatedAt: &timestamppb.Timestamp{Seconds: 5}})
	cases := map[string][]byte{
		"unknown field":         protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1),
		"fields out of order":   append(protowire.AppendVarint(protowire.AppendTag(nil, 4, protowire.VarintType), 1), ts...),
		"non-minimal tag":       {0xa0, 0x00, 0x01},
		"non-minimal length":    {0x12, 0x82, 0x00, 0x08, 0x05},
		"implicit zero written": protowire.AppendVarint(protowire.AppendTag(nil, 4, protowire.VarintType), 0),
		"bool not 0 or 1":       protowire.AppendVarint(protowire.AppendTag(nil, 4, protowire.VarintType), 2),
		"singular field twice":  append(append([]byte{}, ts...), ts...),
		"wrong wire type":       protowire.AppendFixed32(protowire.AppendTag(nil, 4, protowire.Fixed32Type), 1),
		"location string":       datum(pb.Field_Location, &pb.Value{Value: &pb.Value_StringValue{StringValue: "junk"}}),
		"scientific notation":   datum(pb.Field_Soc, &pb.Value{Value: &pb.Value_StringValue{StringValue: "1.5E+2"}}),
		// A Value with both int_value and long_value set.
		"oneof set twice": {0x0a, 0x08, 0x08, 0x01, 0x12, 0x04, 0x10, 0x01, 0x18, 0x02},
		// int_value -1 written in 5 bytes (proto.Marshal writes 10).
		"int32 not sign-extended":     {0x0a, 0x08, 0x12, 0x06, 0x10, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"implicit zero double (+0.0)": datumLocationZero(),
	}
	for name, payload := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Validate([]byte(TopicV), payload); err != nil {
				t.Fatalf("test input is not a valid record: %v", err)
			}
			if checkDispatched(t, testVIN, payload) {
				t.Fatalf("fast path taken for %x", payload)
			}
		})
	}
	if _, _, ok := AppendDispatched(nil, TopicAlerts, testVIN, nil); ok {
		t.Fatalf("fast path taken for an alerts record")
	}
}

// datumLocationZero is a LocationValue with latitude +0.0 written out.
func datumLocationZero() []byte {
	loc := protowire.AppendFixed64(protowire.AppendTag(nil, 1, protowire.Fixed64Type), 0)
	val := protowire.AppendBytes(protowire.AppendTag(nil, 7, protowire.BytesType), loc)
	d := protowire.AppendBytes(protowire.AppendTag(protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 5), 2, protowire.BytesType), val)
	return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), d)
}

// TestMarshalProtoKeepsNegativeZero pins the reason MarshalProto is
// proto.Marshal and not MarshalVT.
func TestMarshalProtoKeepsNegativeZero(t *testing.T) {
	m := &pb.Payload{Data: []*pb.Datum{{Key: pb.Field_Location, Value: &pb.Value{Value: &pb.Value_LocationValue{
		LocationValue: &pb.LocationValue{Latitude: math.Copysign(0, -1), Longitude: 1}}}}}}
	got, err := MarshalProto(m)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := proto.Marshal(m)
	if !bytes.Equal(got, want) {
		t.Fatalf("MarshalProto = %x, proto.Marshal = %x", got, want)
	}
}

// FuzzAppendDispatched: for any valid V payload, the fast path either
// declines or produces exactly the reference's bytes.
func FuzzAppendDispatched(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 8 {
		b, _ := proto.Marshal(randomPayload(rng))
		f.Add(b, testVIN)
	}
	f.Add(benchPayload(f), "")
	f.Add(datumLocationZero(), testVIN)
	f.Fuzz(func(t *testing.T, payload []byte, vin string) {
		if _, err := Validate([]byte(TopicV), payload); err != nil {
			if _, _, ok := AppendDispatched(nil, TopicV, vin, payload); ok {
				t.Fatalf("fast path accepted an invalid payload")
			}
			return
		}
		// A VIN that is not UTF-8 cannot come from a certificate, and
		// proto.Marshal refuses it.
		if !utf8.ValidString(vin) {
			return
		}
		checkDispatched(t, vin, payload)
	})
}

// canonicalBenchPayload is benchPayload as proto.Marshal writes it, less
// its string Location datum (which the reference transforms, so it takes
// the slow path): the form vehicles send and the fast path takes.
func canonicalBenchPayload(b testing.TB) []byte {
	var p pb.Payload
	if err := proto.Unmarshal(benchPayload(b), &p); err != nil {
		b.Fatal(err)
	}
	kept := p.Data[:0]
	for _, d := range p.Data {
		if d.GetKey() == pb.Field_Location && d.GetValue().GetStringValue() != "" {
			continue
		}
		kept = append(kept, d)
	}
	p.Data = kept
	out, err := proto.Marshal(&p)
	if err != nil {
		b.Fatal(err)
	}
	if !checkDispatched(b, testVIN, out) {
		b.Fatal("fast path declined the benchmark payload")
	}
	return out
}

func BenchmarkAppendDispatched(b *testing.B) {
	payload := canonicalBenchPayload(b)
	dst := make([]byte, 0, 2*len(payload))
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if _, _, ok := AppendDispatched(dst[:0], TopicV, testVIN, payload); !ok {
			b.Fatal("fast path declined")
		}
	}
}

// BenchmarkSlowDispatch is the path AppendDispatched replaces.
func BenchmarkSlowDispatch(b *testing.B) {
	payload := canonicalBenchPayload(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		m, err := Transform(TopicV, testVIN, payload)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := MarshalProto(m); err != nil {
			b.Fatal(err)
		}
	}
}

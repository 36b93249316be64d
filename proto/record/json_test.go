package record

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

const jsonTestVIN = "5YJ3E1EA1KF000001"

// sameJSONValue reports whether two JSON documents hold the same values
// (key order and spacing aside).
func sameJSONValue(t testing.TB, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("fast-path JSON does not parse: %v\n%s", err, a)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("protojson output does not parse: %v\n%s", err, b)
	}
	return reflect.DeepEqual(va, vb)
}

// slowJSON is the path AppendDispatchedJSON replaces.
func slowJSON(vin string, payload []byte) ([]byte, error) {
	m, err := Transform(TopicV, vin, payload)
	if err != nil {
		return nil, err
	}
	return MarshalJSON(m)
}

// randomValue sets one random member of Value's oneof, whatever its kind:
// every member appears across a few hundred payloads.
func randomValue(rng *rand.Rand) *pb.Value {
	v := &pb.Value{}
	m := v.ProtoReflect()
	od := m.Descriptor().Oneofs().Get(0)
	fd := od.Fields().Get(rng.IntN(od.Fields().Len()))
	m.Set(fd, randomScalar(rng, m, fd))
	return v
}

func randomScalar(rng *rand.Rand, m protoreflect.Message, fd protoreflect.FieldDescriptor) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(rng.IntN(2) == 1)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(rng.Uint32()))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(rng.Uint64()) >> rng.IntN(64))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(rng.Uint32())
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(rng.Uint64())
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(randomFloat(rng)))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(randomFloat(rng))
	case protoreflect.StringKind:
		// Not in scientific notation: that needs the reference's transform
		// (the slow path).
		return protoreflect.ValueOfString([]string{"", "plain", "quote\" back\\slash", "ctl\x01\x1f\n\t\r\b\f", "ünïcødé ✓ 𝄞", "<&>\u2028"}[rng.IntN(6)])
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte{byte(rng.Uint32()), 0, 0xff})
	case protoreflect.EnumKind:
		// Known values, and now and then a number the schema does not name.
		vals := fd.Enum().Values()
		if rng.IntN(8) == 0 {
			return protoreflect.ValueOfEnum(protoreflect.EnumNumber(1000 + rng.IntN(5)))
		}
		return protoreflect.ValueOfEnum(vals.Get(rng.IntN(vals.Len())).Number())
	case protoreflect.MessageKind:
		sub := m.NewField(fd).Message()
		fields := sub.Descriptor().Fields()
		for i := 0; i < fields.Len(); i++ {
			if f := fields.Get(i); rng.IntN(3) > 0 && f.Message() == nil && !f.IsList() {
				sub.Set(f, randomScalar(rng, sub, f))
			}
		}
		return protoreflect.ValueOfMessage(sub)
	}
	panic(fmt.Sprintf("no random value for %v", fd.Kind()))
}

func randomFloat(rng *rand.Rand) float64 {
	switch rng.IntN(12) {
	case 0:
		return math.NaN()
	case 1:
		return math.Inf(1 - 2*rng.IntN(2))
	case 2:
		return 0
	case 3:
		return math.Copysign(0, -1)
	case 4:
		return (rng.Float64() - 0.5) * 1e-9 // exponent form
	case 5:
		return (rng.Float64() - 0.5) * 1e25
	case 6:
		return 1e-6
	case 7:
		return 1e21
	}
	return (rng.Float64() - 0.5) * math.Pow(10, float64(rng.IntN(12)))
}

func randomTimestamp(rng *rand.Rand) *timestamppb.Timestamp {
	switch rng.IntN(6) {
	case 0:
		return nil
	case 1:
		return &timestamppb.Timestamp{Seconds: rng.Int64N(2e9)}
	case 2:
		return &timestamppb.Timestamp{Seconds: rng.Int64N(2e9), Nanos: int32(rng.IntN(1000)) * 1e6}
	case 3:
		return &timestamppb.Timestamp{Seconds: rng.Int64N(2e9), Nanos: int32(rng.IntN(1e6)) * 1e3}
	case 4:
		return &timestamppb.Timestamp{Seconds: minTimestampSeconds + rng.Int64N(1e9), Nanos: int32(rng.IntN(1e9))}
	}
	return &timestamppb.Timestamp{Seconds: maxTimestampSeconds - rng.Int64N(1e9), Nanos: int32(rng.IntN(1e9))}
}

// randomPayloadBytes is a V payload as a vehicle encodes it, with values of
// every kind the schema has.
func randomPayloadBytes(t testing.TB, rng *rand.Rand) []byte {
	p := &pb.Payload{CreatedAt: randomTimestamp(rng), IsResend: rng.IntN(2) == 1}
	if rng.IntN(2) == 0 {
		p.Vin = "SPOOFED0000000000"
	}
	for range rng.IntN(30) {
		d := &pb.Datum{Key: pb.Field(1 + rng.IntN(200))}
		if rng.IntN(20) > 0 {
			d.Value = randomValue(rng)
		}
		if d.Key == pb.Field_Location {
			d.Key = pb.Field_Odometer // a string there takes the location transform
		}
		p.Data = append(p.Data, d)
	}
	b, err := proto.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The fast path gives protojson's values for every kind of field the V
// schema has (all of Value's members, unknown enum numbers, NaN and the
// infinities, floats in exponent form, escapes, timestamps at the ends of
// protojson's range, unset fields), with the certificate's VIN.
func TestAppendDispatchedJSONMatchesProtojson(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	fast := 0
	const n = 3000
	for i := range n {
		payload := randomPayloadBytes(t, rng)
		want, err := slowJSON(jsonTestVIN, payload)
		if err != nil {
			t.Fatalf("payload %d: slow path: %v", i, err)
		}
		got, created, ok := AppendDispatchedJSON([]byte("prefix"), jsonTestVIN, payload)
		if !ok {
			continue
		}
		fast++
		if string(got[:6]) != "prefix" {
			t.Fatalf("payload %d: dst not appended to: %q", i, got)
		}
		if !sameJSONValue(t, got[6:], want) {
			t.Fatalf("payload %d: fast path JSON differs from protojson's\n fast: %s\nslow: %s", i, got[6:], want)
		}
		var p pb.Payload
		if err := proto.Unmarshal(payload, &p); err != nil {
			t.Fatal(err)
		}
		if p.CreatedAt != nil && created.Valid() && created.UnixMilli() != p.CreatedAt.AsTime().UnixMilli() {
			t.Fatalf("payload %d: created %d ms, payload says %v", i, created.UnixMilli(), p.CreatedAt.AsTime())
		}
	}
	// Only payloads that need the reference's transforms may take the slow
	// path, and the generator avoids them.
	if fast < n*99/100 {
		t.Fatalf("only %d of %d payloads took the fast path", fast, n)
	}
}

// A created_at protojson refuses (out of its range) is left to the slow
// path, which fails as before.
func TestAppendDispatchedJSONLeavesBadTimestamps(t *testing.T) {
	for _, ts := range []*timestamppb.Timestamp{
		{Seconds: maxTimestampSeconds + 1},
		{Seconds: minTimestampSeconds - 1},
	} {
		b, err := proto.Marshal(&pb.Payload{CreatedAt: ts})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, ok := AppendDispatchedJSON(nil, jsonTestVIN, b); ok {
			t.Errorf("created_at %v taken by the fast path", ts)
		}
		if _, err := slowJSON(jsonTestVIN, b); err == nil {
			t.Errorf("created_at %v: protojson accepted it; the fast path could too", ts)
		}
	}
}

// FuzzAppendDispatchedJSON: on any payload the fast path never panics, and
// whatever it accepts, protojson renders with the same values.
func FuzzAppendDispatchedJSON(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		f.Add(randomPayloadBytes(f, rng))
	}
	f.Add(benchPayload(f))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, payload []byte) {
		got, _, ok := AppendDispatchedJSON(nil, jsonTestVIN, payload)
		if !ok {
			return
		}
		want, err := slowJSON(jsonTestVIN, payload)
		if err != nil {
			t.Fatalf("fast path took a payload the slow path refuses (%v): %x", err, payload)
		}
		if !sameJSONValue(t, got, want) {
			t.Fatalf("fast path JSON differs from protojson's\n fast: %s\nslow: %s", got, want)
		}
	})
}

// BenchmarkAppendDispatchedJSON is the JSON fast path on the payload
// BenchmarkAppendDispatched uses; BenchmarkSlowDispatchJSON is the path it
// replaces, on the same payload.
func BenchmarkAppendDispatchedJSON(b *testing.B) {
	payload := canonicalBenchPayload(b)
	var dst []byte
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		var ok bool
		if dst, _, ok = AppendDispatchedJSON(dst[:0], jsonTestVIN, payload); !ok {
			b.Fatal("not on the fast path")
		}
	}
}

func BenchmarkSlowDispatchJSON(b *testing.B) {
	payload := canonicalBenchPayload(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if _, err := slowJSON(jsonTestVIN, payload); err != nil {
			b.Fatal(err)
		}
	}
}

package record

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

// FuzzTransform checks, for any topic and payload, that nothing panics, that
// Validate accepts exactly what proto.Unmarshal accepts (the reference's
// ack/error decision), that Transform succeeds whenever Validate does, that
// and that the dispatched bytes (MarshalVT, or proto.Marshal when needed)
// decode back to the transformed message.
func FuzzTransform(f *testing.F) {
	f.Add(TopicV, benchPayload(f))
	f.Add(TopicAlerts, []byte{0x0a, 0x04, 0x12, 0x02, 0x02, 0x01})
	f.Add("metrics", []byte{})
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		_, verr := Validate([]byte(topic), payload)
		ref := newMessage(topic)
		if ref == nil {
			if !errors.Is(verr, ErrUnknownTopic) {
				t.Fatalf("unknown topic %q: Validate = %v", topic, verr)
			}
			return
		}
		referr := proto.Unmarshal(payload, ref)
		if (verr == nil) != (referr == nil) {
			t.Fatalf("Validate = %v but proto.Unmarshal = %v", verr, referr)
		}
		if verr == nil {
			checkScientific(t, ref)
		}

		m, terr := Transform(topic, "5YJ3E1EA1KF000001", payload)
		if verr != nil {
			if terr == nil {
				t.Fatalf("Transform accepted what Validate rejected (%v)", verr)
			}
			return
		}
		if terr != nil {
			t.Fatalf("Validate accepted but Transform failed: %v", terr)
		}
		b, err := MarshalProto(m)
		if err != nil {
			t.Fatalf("MarshalProto: %v", err)
		}
		back := newMessage(topic)
		if err := proto.Unmarshal(b, back); err != nil {
			t.Fatalf("dispatched bytes do not decode: %v", err)
		}
		if !proto.Equal(back, m) {
			t.Fatalf("dispatched bytes decode to a different message")
		}
		// JSON may legitimately fail (e.g. a Timestamp beyond year 9999);
		// it must only not panic.
		_, _ = MarshalJSON(m)
	})
}

// checkScientific cross-checks the hand-written matcher with the regexp.
func checkScientific(t *testing.T, m proto.Message) {
	t.Helper()
	p, ok := m.(*pb.Payload)
	if !ok {
		return
	}
	for _, d := range p.Data {
		s := d.GetValue().GetStringValue()
		if isScientific(s) != sciOracle.MatchString(s) {
			t.Fatalf("isScientific(%q) disagrees with the regexp", s)
		}
	}
}

func BenchmarkValidateV(b *testing.B) {
	payload := benchPayload(b)
	topic := []byte(TopicV)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if _, err := Validate(topic, payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidateVTUnsafe measures the alternative Validate was not built
// on (pooled UnmarshalVTUnsafe), for comparison.
func BenchmarkValidateVTUnsafe(b *testing.B) {
	payload := benchPayload(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		m := pb.PayloadFromVTPool()
		if err := m.UnmarshalVTUnsafe(payload); err != nil {
			b.Fatal(err)
		}
		m.ReturnToVTPool()
	}
}

func BenchmarkTransformV(b *testing.B) {
	payload := benchPayload(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if _, err := Transform(TopicV, "5YJ3E1EA1KF000001", payload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshalProto(b *testing.B) {
	m, err := Transform(TopicV, "5YJ3E1EA1KF000001", benchPayload(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := MarshalProto(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshalJSON(b *testing.B) {
	m, err := Transform(TopicV, "5YJ3E1EA1KF000001", benchPayload(b))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := MarshalJSON(m); err != nil {
			b.Fatal(err)
		}
	}
}

package envelope

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"testing"

	flatbuffers "github.com/google/flatbuffers/go"
)

// vector is the subset of a reference case this package cares about.
type vector struct {
	Name     string `json:"name"`
	FrameB64 string `json:"frame_b64"`
	SenderID string `json:"sender_id"`
	Topic    string `json:"topic"`
	TxID     string `json:"txid"`
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	raw, err := os.ReadFile("../testdata/reference-vectors.json")
	if err != nil {
		t.Fatalf("read vectors: %v", err)
	}
	var vs []vector
	if err := json.Unmarshal(raw, &vs); err != nil {
		t.Fatalf("parse vectors: %v", err)
	}
	if len(vs) == 0 {
		t.Fatal("no vectors")
	}
	return vs
}

func frame(t testing.TB, v vector) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(v.FrameB64)
	if err != nil {
		t.Fatalf("%s: frame base64: %v", v.Name, err)
	}
	return b
}

func TestDecodeVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			var env Envelope
			if err := Decode(frame(t, v), &env); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if string(env.TxID) != v.TxID || string(env.Topic) != v.Topic {
				t.Errorf("txid/topic = %q/%q, want %q/%q", env.TxID, env.Topic, v.TxID, v.Topic)
			}
			if env.Type != TypeStream || !env.HasMessage {
				t.Fatalf("type %d has message %v, want stream", env.Type, env.HasMessage)
			}
			if string(env.Stream.SenderID) != v.SenderID {
				t.Errorf("sender_id = %q, want %q", env.Stream.SenderID, v.SenderID)
			}
			if env.Stream.CreatedAt != 1700000000 {
				t.Errorf("created_at = %d", env.Stream.CreatedAt)
			}
		})
	}
}

func TestDecodeEmpty(t *testing.T) {
	env := Envelope{TxID: []byte("stale"), Type: TypeStream}
	if err := Decode(nil, &env); err != nil {
		t.Fatalf("Decode(empty): %v", err)
	}
	if env.Type != TypeNone || env.HasMessage || env.TxID != nil {
		t.Fatalf("Decode(empty) = %+v, want zero envelope", env)
	}
}

func sampleMessage() *StreamMessage {
	return &StreamMessage{
		TxID: []byte("tx-1"), Topic: []byte("V"), MessageID: []byte("mid-9"),
		CreatedAt: 1700000000, SenderID: []byte("vehicle_device.5YJ3E1EA1KF000001"),
		Payload: []byte{0x0a, 0x00, 0xff}, DeviceType: []byte("vehicle_device"),
		DeviceID: []byte("5YJ3E1EA1KF000001"), DeliveredAtMs: 1700000000123,
	}
}

func TestStreamRoundTrip(t *testing.T) {
	m := sampleMessage()
	buf := AppendStream([]byte("prefix"), m)
	if !bytes.HasPrefix(buf, []byte("prefix")) {
		t.Fatal("AppendStream dropped dst")
	}
	var env Envelope
	if err := Decode(buf[len("prefix"):], &env); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	got := StreamMessage{
		TxID: env.TxID, Topic: env.Topic, MessageID: env.MessageID,
		CreatedAt: env.Stream.CreatedAt, SenderID: env.Stream.SenderID, Payload: env.Stream.Payload,
		DeviceType: env.Stream.DeviceType, DeviceID: env.Stream.DeviceID, DeliveredAtMs: env.Stream.DeliveredAtMs,
	}
	if env.Type != TypeStream || !env.HasMessage || !equalMessage(&got, m) {
		t.Fatalf("round trip: got %+v (type %d), want %+v", got, env.Type, *m)
	}
}

func equalMessage(a, b *StreamMessage) bool {
	return bytes.Equal(a.TxID, b.TxID) && bytes.Equal(a.Topic, b.Topic) && bytes.Equal(a.MessageID, b.MessageID) &&
		a.CreatedAt == b.CreatedAt && bytes.Equal(a.SenderID, b.SenderID) && bytes.Equal(a.Payload, b.Payload) &&
		bytes.Equal(a.DeviceType, b.DeviceType) && bytes.Equal(a.DeviceID, b.DeviceID) && a.DeliveredAtMs == b.DeliveredAtMs
}

// fbTable reads buf's root with the flatbuffers library's own Table API, an
// independent reader to cross-check our encoder and decoder against.
func fbTable(buf []byte) flatbuffers.Table {
	return flatbuffers.Table{Bytes: buf, Pos: flatbuffers.GetUOffsetT(buf)}
}

func fbVector(t *flatbuffers.Table, slot int) []byte {
	off := t.Offset(flatbuffers.VOffsetT(4 + 2*slot))
	if off == 0 {
		return nil
	}
	return t.ByteVector(flatbuffers.UOffsetT(off) + t.Pos)
}

func TestAckCrossCheck(t *testing.T) {
	buf := AppendAck(nil, []byte("txid-v-1"), []byte("V"), []byte("m-1"))
	var env Envelope
	if err := Decode(buf, &env); err != nil {
		t.Fatalf("Decode(ack): %v", err)
	}
	if env.Type != TypeStreamAck || !env.HasMessage || string(env.TxID) != "txid-v-1" ||
		string(env.Topic) != "V" || string(env.MessageID) != "m-1" {
		t.Fatalf("Decode(ack) = %+v", env)
	}
	root := fbTable(buf)
	if got := root.GetByteSlot(4+2*slotMessageType, 0); got != byte(TypeStreamAck) {
		t.Errorf("flatbuffers message_type = %d", got)
	}
	if got := fbVector(&root, slotTxID); string(got) != "txid-v-1" {
		t.Errorf("flatbuffers txid = %q", got)
	}
	if got := fbVector(&root, slotTopic); string(got) != "V" {
		t.Errorf("flatbuffers topic = %q", got)
	}
	if got := fbVector(&root, slotMessageID); string(got) != "m-1" {
		t.Errorf("flatbuffers message_id = %q", got)
	}
	var ack flatbuffers.Table
	off := root.Offset(4 + 2*slotMessage)
	if off == 0 {
		t.Fatal("flatbuffers: ack union table missing")
	}
	root.Union(&ack, flatbuffers.UOffsetT(off))
	if vtLen := flatbuffers.GetVOffsetT(ack.Bytes[ack.Pos-flatbuffers.UOffsetT(ack.GetSOffsetT(ack.Pos)):]); vtLen != 4 {
		t.Errorf("ack table vtable length %d, want 4 (no fields)", vtLen)
	}
}

func TestErrorCrossCheck(t *testing.T) {
	buf := AppendError(nil, []byte("txid-bad-1"), nil, "incorrect message format")
	var env Envelope
	if err := Decode(buf, &env); err != nil {
		t.Fatalf("Decode(error): %v", err)
	}
	if env.Type != TypeStream || !env.HasMessage || string(env.TxID) != "txid-bad-1" ||
		string(env.Stream.Payload) != "incorrect message format" || env.Topic != nil {
		t.Fatalf("Decode(error) = %+v", env)
	}
	root := fbTable(buf)
	if got := root.GetByteSlot(4+2*slotMessageType, 0); got != byte(TypeStream) {
		t.Errorf("flatbuffers message_type = %d", got)
	}
	if got := fbVector(&root, slotTxID); string(got) != "txid-bad-1" {
		t.Errorf("flatbuffers txid = %q", got)
	}
	var stream flatbuffers.Table
	root.Union(&stream, flatbuffers.UOffsetT(root.Offset(4+2*slotMessage)))
	if got := fbVector(&stream, slotPayload); string(got) != "incorrect message format" {
		t.Errorf("flatbuffers payload = %q", got)
	}
}

func TestStreamCrossCheck(t *testing.T) {
	m := sampleMessage()
	buf := AppendStream(nil, m)
	root := fbTable(buf)
	var s flatbuffers.Table
	root.Union(&s, flatbuffers.UOffsetT(root.Offset(4+2*slotMessage)))
	if got := s.GetUint32Slot(4+2*slotCreatedAt, 0); got != m.CreatedAt {
		t.Errorf("created_at = %d", got)
	}
	if got := s.GetUint64Slot(4+2*slotDeliveredAt, 0); got != m.DeliveredAtMs {
		t.Errorf("delivered_at = %d", got)
	}
	for slot, want := range map[int][]byte{slotSenderID: m.SenderID, slotPayload: m.Payload, slotDeviceType: m.DeviceType, slotDeviceID: m.DeviceID} {
		if got := fbVector(&s, slot); !bytes.Equal(got, want) {
			t.Errorf("slot %d = %q, want %q", slot, got, want)
		}
	}
}

func TestTruncatedAndCorrupted(t *testing.T) {
	for _, v := range loadVectors(t) {
		full := frame(t, v)
		var want Envelope
		if err := Decode(full, &want); err != nil {
			t.Fatalf("%s: %v", v.Name, err)
		}
		for n := 1; n < len(full); n++ {
			var env Envelope
			err := Decode(full[:n], &env)
			if err == nil {
				// Only trailing alignment padding may be cut off.
				if !bytes.Equal(env.Stream.Payload, want.Stream.Payload) || !bytes.Equal(env.TxID, want.TxID) ||
					!bytes.Equal(env.Stream.SenderID, want.Stream.SenderID) || n < len(full)-7 {
					t.Errorf("%s: %d-byte prefix of %d decoded to %+v", v.Name, n, len(full), env)
				}
			} else if !errors.Is(err, ErrMalformed) {
				t.Errorf("%s: error %v does not wrap ErrMalformed", v.Name, err)
			}
		}
		// Every single-byte corruption must be reported or decode sanely.
		buf := make([]byte, len(full))
		for i := range full {
			for _, x := range []byte{0x00, 0x01, 0x7f, 0x80, 0xff} {
				copy(buf, full)
				buf[i] = x
				var env Envelope
				_ = Decode(buf, &env) // must not panic
			}
		}
	}
	var env Envelope
	for _, bad := range [][]byte{
		{0x01},
		{0xff, 0xff, 0xff, 0xff},
		{0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},                         // vtable offset 0 → vtable at table
		{0x04, 0x00, 0x00, 0x00, 0xfc, 0xff, 0xff, 0x7f},                         // vtable far outside
		{0x08, 0x00, 0x00, 0x00, 0x06, 0x00, 0x08, 0x00, 0x04, 0x00, 0x00, 0x00}, // odd vtable length
	} {
		if err := Decode(bad, &env); err == nil {
			t.Errorf("Decode(% x) succeeded", bad)
		}
	}
}

func TestZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race (sync.Pool drops items)")
	}
	frameBytes := AppendStream(nil, sampleMessage())
	var env Envelope
	if n := testing.AllocsPerRun(200, func() { _ = Decode(frameBytes, &env) }); n != 0 {
		t.Errorf("Decode allocs = %v, want 0", n)
	}
	dst := make([]byte, 0, 512)
	txid, topic, mid := []byte("txid-v-1"), []byte("V"), []byte("m")
	if n := testing.AllocsPerRun(200, func() { dst = AppendAck(dst[:0], txid, topic, mid) }); n != 0 {
		t.Errorf("AppendAck allocs = %v, want 0", n)
	}
	if n := testing.AllocsPerRun(200, func() { dst = AppendError(dst[:0], txid, topic, "incorrect message format") }); n != 0 {
		t.Errorf("AppendError allocs = %v, want 0", n)
	}
}

func FuzzDecode(f *testing.F) {
	for _, v := range loadVectors(f) {
		f.Add(frame(f, v))
	}
	f.Add([]byte{})
	f.Add(AppendAck(nil, []byte("t"), []byte("V"), nil))
	f.Add(AppendError(nil, []byte("t"), nil, "incorrect message format"))
	f.Fuzz(func(t *testing.T, buf []byte) {
		var env Envelope
		if err := Decode(buf, &env); err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if env.Type != TypeStream || !env.HasMessage {
			return
		}
		// Whatever decodes must survive a re-encode unchanged.
		m := StreamMessage{
			TxID: env.TxID, Topic: env.Topic, MessageID: env.MessageID,
			CreatedAt: env.Stream.CreatedAt, SenderID: env.Stream.SenderID, Payload: env.Stream.Payload,
			DeviceType: env.Stream.DeviceType, DeviceID: env.Stream.DeviceID, DeliveredAtMs: env.Stream.DeliveredAtMs,
		}
		var again Envelope
		if err := Decode(AppendStream(nil, &m), &again); err != nil {
			t.Fatalf("re-encoded frame does not decode: %v", err)
		}
		got := StreamMessage{
			TxID: again.TxID, Topic: again.Topic, MessageID: again.MessageID,
			CreatedAt: again.Stream.CreatedAt, SenderID: again.Stream.SenderID, Payload: again.Stream.Payload,
			DeviceType: again.Stream.DeviceType, DeviceID: again.Stream.DeviceID, DeliveredAtMs: again.Stream.DeliveredAtMs,
		}
		if !equalMessage(&got, &m) {
			t.Fatalf("re-encode changed the message: %+v vs %+v", got, m)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	buf := AppendStream(nil, sampleMessage())
	var env Envelope
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if err := Decode(buf, &env); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendAck(b *testing.B) {
	dst := make([]byte, 0, 256)
	txid, topic, mid := []byte("txid-v-1"), []byte("V"), []byte("m-1")
	b.ReportAllocs()
	for b.Loop() {
		dst = AppendAck(dst[:0], txid, topic, mid)
	}
}

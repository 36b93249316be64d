package envelope

import (
	"sync"

	flatbuffers "github.com/google/flatbuffers/go"
)

// builders recycles flatbuffers Builders: a reset Builder keeps its buffer
// and vtable bookkeeping, so acks cost no allocation in steady state.
var builders = sync.Pool{New: func() any { return flatbuffers.NewBuilder(256) }}

// maxPooledBuilder keeps one huge error or stream frame from pinning memory
// in the pool forever.
const maxPooledBuilder = 64 << 10

func getBuilder() *flatbuffers.Builder {
	b := builders.Get().(*flatbuffers.Builder)
	b.Reset()
	return b
}

func putBuilder(b *flatbuffers.Builder) {
	if cap(b.Bytes) <= maxPooledBuilder {
		builders.Put(b)
	}
}

// StreamMessage is everything a vehicle puts in a record frame.
type StreamMessage struct {
	TxID, Topic, MessageID                  []byte
	CreatedAt                               uint32
	SenderID, Payload, DeviceType, DeviceID []byte
	DeliveredAtMs                           uint64
}

// AppendAck appends the server's acknowledgement of a record to dst: an
// envelope with message_type 5, the record's txid and topic, message_id
// copied, and a FlatbuffersStreamAck union table with no fields.
func AppendAck(dst, txid, topic, messageID []byte) []byte {
	b := getBuilder()
	b.StartObject(0)
	ack := b.EndObject()
	dst = appendEnvelope(dst, b, txid, topic, messageID, TypeStreamAck, ack)
	putBuilder(b)
	return dst
}

// AppendError appends an error reply to dst: an envelope with message_type 4
// whose FlatbuffersStream payload is text, echoing the record's txid (and
// topic when given; the reference leaves it empty).
func AppendError(dst, txid, topic []byte, text string) []byte {
	b := getBuilder()
	payload := createString(b, text)
	b.StartObject(streamSlots)
	b.PrependUOffsetTSlot(slotPayload, payload, 0)
	stream := b.EndObject()
	dst = appendEnvelope(dst, b, txid, topic, nil, TypeStream, stream)
	putBuilder(b)
	return dst
}

// AppendStream appends a record frame as a vehicle sends it (for test
// clients and benchmarks). Empty byte fields are omitted from the frame.
func AppendStream(dst []byte, m *StreamMessage) []byte {
	b := getBuilder()
	// Children first: FlatBuffers forbids building vectors inside a table.
	senderID := optVector(b, m.SenderID)
	payload := optVector(b, m.Payload)
	deviceType := optVector(b, m.DeviceType)
	deviceID := optVector(b, m.DeviceID)
	b.StartObject(streamSlots)
	b.PrependUint64Slot(slotDeliveredAt, m.DeliveredAtMs, 0)
	b.PrependUOffsetTSlot(slotDeviceID, deviceID, 0)
	b.PrependUOffsetTSlot(slotDeviceType, deviceType, 0)
	b.PrependUOffsetTSlot(slotPayload, payload, 0)
	b.PrependUOffsetTSlot(slotSenderID, senderID, 0)
	b.PrependUint32Slot(slotCreatedAt, m.CreatedAt, 0)
	stream := b.EndObject()
	dst = appendEnvelope(dst, b, m.TxID, m.Topic, m.MessageID, TypeStream, stream)
	putBuilder(b)
	return dst
}

// appendEnvelope finishes b with the root table around an already built
// union table and appends the finished bytes to dst.
func appendEnvelope(dst []byte, b *flatbuffers.Builder, txid, topic, messageID []byte, typ MessageType, msg flatbuffers.UOffsetT) []byte {
	mid := optVector(b, messageID)
	tp := optVector(b, topic)
	tx := optVector(b, txid)
	b.StartObject(envelopeSlots)
	b.PrependUOffsetTSlot(slotMessageID, mid, 0)
	b.PrependUOffsetTSlot(slotMessage, msg, 0)
	b.PrependUOffsetTSlot(slotTopic, tp, 0)
	b.PrependUOffsetTSlot(slotTxID, tx, 0)
	b.PrependByteSlot(slotMessageType, byte(typ), 0)
	b.Finish(b.EndObject())
	return append(dst, b.FinishedBytes()...)
}

// optVector writes v as a [ubyte] vector, or nothing (offset 0, slot left
// empty) when v is empty, so absent fields stay absent.
func optVector(b *flatbuffers.Builder, v []byte) flatbuffers.UOffsetT {
	if len(v) == 0 {
		return 0
	}
	return b.CreateByteVector(v)
}

// createString writes s as a [ubyte] vector without converting it to a
// []byte first (that conversion would allocate).
func createString(b *flatbuffers.Builder, s string) flatbuffers.UOffsetT {
	if len(s) == 0 {
		return 0
	}
	// CreateString also writes a NUL after the bytes; readers use the
	// length prefix, so the payload seen by the vehicle is exactly s.
	return b.CreateString(s)
}

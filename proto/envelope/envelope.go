// Package envelope reads and writes the FlatBuffers envelope that wraps every
// WebSocket binary message between a vehicle and the server.
//
// Decoding is done in place with explicit bounds checks instead of the
// flatbuffers library's generated accessors, because those panic on
// malformed input and every frame here comes from the network. Encoding uses
// the flatbuffers Builder so the bytes we send are built by the same library
// vehicles are built against.
package envelope

import (
	"errors"
	"fmt"

	flatbuffers "github.com/google/flatbuffers/go"
)

// MessageType is the envelope's union tag (FlatbuffersEnvelope.message_type).
type MessageType uint8

// Union tags used on the wire. Other values may arrive and are reported as is.
const (
	// TypeNone means the envelope carries no message.
	TypeNone MessageType = 0
	// TypeStream is a FlatbuffersStream: a record from a vehicle, or an error reply.
	TypeStream MessageType = 4
	// TypeStreamAck is a FlatbuffersStreamAck: the server's acknowledgement.
	TypeStreamAck MessageType = 5
)

// Vtable slots of FlatbuffersEnvelope.
const (
	slotTxID        = 0
	slotTopic       = 1
	slotMessageType = 2
	slotMessage     = 3
	slotMessageID   = 4
	envelopeSlots   = 5
)

// Vtable slots of FlatbuffersStream.
const (
	slotCreatedAt   = 0
	slotSenderID    = 1
	slotPayload     = 2
	slotDeviceType  = 3
	slotDeviceID    = 4
	slotDeliveredAt = 5
	streamSlots     = 6
)

// ErrMalformed is wrapped by every error Decode returns, so callers can tell a
// broken frame (error reply) from other failures with errors.Is.
var ErrMalformed = errors.New("malformed envelope")

// Envelope is a decoded FlatbuffersEnvelope. Its byte slices alias the buffer
// given to Decode: they are only valid while that buffer is unchanged.
type Envelope struct {
	TxID, Topic, MessageID []byte
	// Type is the union tag as sent; values other than the known constants
	// are kept so the caller can decide how to answer.
	Type MessageType
	// HasMessage reports whether the union table is present.
	HasMessage bool
	// Stream holds the union table when Type is TypeStream and HasMessage.
	Stream Stream
}

// Stream is a decoded FlatbuffersStream. Its byte slices alias the input.
type Stream struct {
	CreatedAt                               uint32
	SenderID, Payload, DeviceType, DeviceID []byte
	DeliveredAtMs                           uint64
}

// table is a bounds-checked view of one FlatBuffers table in buf.
type table struct {
	buf    []byte
	pos    int // start of the table (where its soffset to the vtable lives)
	vtable int
	vtLen  int // vtable length in bytes, including its 4-byte header
	tblLen int // inline size of the table in bytes
}

// Decode parses buf into env, overwriting all of env. An empty buf is a valid
// envelope of TypeNone (the reference acknowledges it). Every offset and
// length is checked before use, and no byte is copied, so Decode neither
// allocates on success nor panics on any input.
func Decode(buf []byte, env *Envelope) error {
	*env = Envelope{}
	if len(buf) == 0 {
		return nil
	}
	if len(buf) < 4 {
		return fmt.Errorf("envelope: %d-byte buffer has no root offset: %w", len(buf), ErrMalformed)
	}
	var root table
	if err := root.open(buf, int(flatbuffers.GetUint32(buf))); err != nil {
		return fmt.Errorf("envelope: root table: %w", err)
	}
	var err error
	if env.TxID, err = root.vector(slotTxID); err != nil {
		return fmt.Errorf("envelope: txid: %w", err)
	}
	if env.Topic, err = root.vector(slotTopic); err != nil {
		return fmt.Errorf("envelope: topic: %w", err)
	}
	if env.MessageID, err = root.vector(slotMessageID); err != nil {
		return fmt.Errorf("envelope: message_id: %w", err)
	}
	tag, err := root.scalar(slotMessageType, 1)
	if err != nil {
		return fmt.Errorf("envelope: message_type: %w", err)
	}
	if tag >= 0 {
		env.Type = MessageType(buf[tag])
	}
	msg, ok, err := root.subtable(slotMessage)
	if err != nil {
		return fmt.Errorf("envelope: message: %w", err)
	}
	env.HasMessage = ok
	if !ok || env.Type != TypeStream {
		return nil
	}
	if err := decodeStream(&msg, &env.Stream); err != nil {
		return fmt.Errorf("envelope: stream: %w", err)
	}
	return nil
}

func decodeStream(t *table, s *Stream) error {
	var err error
	if s.SenderID, err = t.vector(slotSenderID); err != nil {
		return fmt.Errorf("sender_id: %w", err)
	}
	if s.Payload, err = t.vector(slotPayload); err != nil {
		return fmt.Errorf("payload: %w", err)
	}
	if s.DeviceType, err = t.vector(slotDeviceType); err != nil {
		return fmt.Errorf("device_type: %w", err)
	}
	if s.DeviceID, err = t.vector(slotDeviceID); err != nil {
		return fmt.Errorf("device_id: %w", err)
	}
	p, err := t.scalar(slotCreatedAt, 4)
	if err != nil {
		return fmt.Errorf("created_at: %w", err)
	}
	if p >= 0 {
		s.CreatedAt = flatbuffers.GetUint32(t.buf[p:])
	}
	if p, err = t.scalar(slotDeliveredAt, 8); err != nil {
		return fmt.Errorf("delivered_at_epoch_ms: %w", err)
	}
	if p >= 0 {
		s.DeliveredAtMs = flatbuffers.GetUint64(t.buf[p:])
	}
	return nil
}

// open validates the table header at pos and its vtable.
func (t *table) open(buf []byte, pos int) error {
	if !fits(buf, pos, 4) {
		return fmt.Errorf("table offset %d outside %d-byte buffer: %w", pos, len(buf), ErrMalformed)
	}
	vt := offset(pos, -int64(flatbuffers.GetInt32(buf[pos:])))
	if !fits(buf, vt, 4) {
		return fmt.Errorf("vtable offset %d outside %d-byte buffer: %w", vt, len(buf), ErrMalformed)
	}
	vtLen := int(flatbuffers.GetUint16(buf[vt:]))
	tblLen := int(flatbuffers.GetUint16(buf[vt+2:]))
	if vtLen < 4 || vtLen%2 != 0 || !fits(buf, vt, vtLen) {
		return fmt.Errorf("vtable length %d at %d invalid: %w", vtLen, vt, ErrMalformed)
	}
	if tblLen < 4 || !fits(buf, pos, tblLen) {
		return fmt.Errorf("table length %d at %d invalid: %w", tblLen, pos, ErrMalformed)
	}
	*t = table{buf: buf, pos: pos, vtable: vt, vtLen: vtLen, tblLen: tblLen}
	return nil
}

// field returns the absolute position of slot's inline data, or -1 when the
// slot is absent, after checking that size bytes of it lie inside the table.
func (t *table) field(slot, size int) (int, error) {
	entry := 4 + 2*slot
	if entry+2 > t.vtLen {
		return -1, nil // vtable written by an older schema: field absent
	}
	off := int(flatbuffers.GetUint16(t.buf[t.vtable+entry:]))
	if off == 0 {
		return -1, nil
	}
	if off < 4 || off+size > t.tblLen {
		return -1, fmt.Errorf("slot %d offset %d outside %d-byte table: %w", slot, off, t.tblLen, ErrMalformed)
	}
	return t.pos + off, nil
}

// scalar is field for fixed-size inline values.
func (t *table) scalar(slot, size int) (int, error) { return t.field(slot, size) }

// vector returns the [ubyte] at slot, aliasing the buffer; nil when absent.
func (t *table) vector(slot int) ([]byte, error) {
	p, err := t.field(slot, 4)
	if err != nil || p < 0 {
		return nil, err
	}
	start := offset(p, int64(flatbuffers.GetUint32(t.buf[p:])))
	if !fits(t.buf, start, 4) {
		return nil, fmt.Errorf("vector offset %d outside %d-byte buffer: %w", start, len(t.buf), ErrMalformed)
	}
	n := offset(0, int64(flatbuffers.GetUint32(t.buf[start:])))
	if !fits(t.buf, start+4, n) {
		return nil, fmt.Errorf("vector length %d at %d overruns %d-byte buffer: %w", n, start, len(t.buf), ErrMalformed)
	}
	return t.buf[start+4 : start+4+n : start+4+n], nil
}

// subtable opens the table referenced from slot; ok is false when absent.
func (t *table) subtable(slot int) (sub table, ok bool, err error) {
	p, err := t.field(slot, 4)
	if err != nil || p < 0 {
		return sub, false, err
	}
	if err := sub.open(t.buf, offset(p, int64(flatbuffers.GetUint32(t.buf[p:])))); err != nil {
		return sub, false, err
	}
	return sub, true, nil
}

// offset returns pos+delta, or -1 when the sum is negative or does not fit
// an int (32-bit platforms), so fits rejects it instead of wrapping around.
func offset(pos int, delta int64) int {
	sum := int64(pos) + delta
	if sum < 0 || sum > int64(^uint(0)>>1) {
		return -1
	}
	return int(sum)
}

// fits reports whether buf[pos:pos+n] is in range, without overflowing.
func fits(buf []byte, pos, n int) bool {
	return pos >= 0 && n >= 0 && pos <= len(buf) && n <= len(buf)-pos
}

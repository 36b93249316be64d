// Package envelopetest builds envelopes a conforming encoder never writes,
// for the tests of what reads them (netloop's and the end-to-end tests).
// It is imported only from _test.go files.
package envelopetest

import (
	flatbuffers "github.com/google/flatbuffers/go"

	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
)

// WithoutMessage builds an envelope with a txid, a topic and a message
// type but no message table (the union's value slot left empty).
func WithoutMessage(txid, topic string, typ envelope.MessageType) []byte {
	b := flatbuffers.NewBuilder(64)
	tx, tp := b.CreateByteVector([]byte(txid)), b.CreateByteVector([]byte(topic))
	// FlatbuffersEnvelope has 5 slots: txid 0, topic 1, message_type 2,
	// message 3 (left out), message_id 4 (left out).
	b.StartObject(5)
	b.PrependUOffsetTSlot(0, tx, 0)
	b.PrependUOffsetTSlot(1, tp, 0)
	b.PrependByteSlot(2, byte(typ), 0)
	b.Finish(b.EndObject())
	return b.FinishedBytes()
}

package envelopetest

import (
	"testing"

	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
)

func TestWithoutMessageDecodes(t *testing.T) {
	for _, typ := range []envelope.MessageType{envelope.TypeStream, envelope.TypeStreamAck, 9} {
		var env envelope.Envelope
		if err := envelope.Decode(WithoutMessage("tx-1", "V", typ), &env); err != nil {
			t.Fatalf("type %d: %v", typ, err)
		}
		if env.HasMessage || env.Type != typ || string(env.TxID) != "tx-1" || string(env.Topic) != "V" || env.MessageID != nil {
			t.Fatalf("type %d decodes as %+v", typ, env)
		}
	}
}

package wsframe

import (
	"testing"

	"github.com/gobwas/ws"
)

// FuzzDecode feeds arbitrary bytes to a Decoder whole, split in two at a
// fuzzed point and (for short inputs) byte by byte. It must never panic, and
// every way of feeding must decode the same messages and stop at the same
// error, or without an error with the same bytes left over. (With an error
// the bytes left differ: a bad frame is refused before all of it arrived.)
func FuzzDecode(f *testing.F) {
	m := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	f.Add(refData(ws.OpBinary, true, true, m, []byte("hello")), uint16(3), false, uint16(0))
	f.Add(append(refData(ws.OpText, false, true, m, []byte("hel")),
		append(refData(ws.OpPing, true, true, m, []byte("p")),
			refData(ws.OpContinuation, true, true, m, []byte("lo"))...)...), uint16(9), false, uint16(0))
	f.Add(refData(ws.OpBinary, true, false, m, []byte("from server")), uint16(1), true, uint16(0))
	f.Add(refData(ws.OpBinary, true, true, m, make([]byte, 20)), uint16(2), false, uint16(10))
	f.Add([]byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, uint16(5), false, uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, split uint16, client bool, limit uint16) {
		o := Options{MaxMessageSize: int(limit)}
		if client {
			o.Role = RoleClient
		}
		wholeMsgs, wholeLeft, wholeErr := feed(NewDecoder(o), [][]byte{data})
		checkFuzzResult(t, o, wholeMsgs, wholeErr)

		at := int(split) % (len(data) + 1)
		splitMsgs, splitLeft, splitErr := feed(NewDecoder(o), splitAt(data, at))
		if wholeErr != splitErr || (wholeErr == nil && wholeLeft != splitLeft) || !equalMsgs(wholeMsgs, splitMsgs) {
			t.Fatalf(
				"split at %d: err %v / %v, left %d / %d, %d / %d messages",
				at, wholeErr, splitErr, wholeLeft, splitLeft, len(wholeMsgs), len(splitMsgs))
		}
		if len(data) <= 512 {
			byteMsgs, byteLeft, byteErr := feed(NewDecoder(o), bytewise(data))
			if wholeErr != byteErr || (wholeErr == nil && wholeLeft != byteLeft) || !equalMsgs(wholeMsgs, byteMsgs) {
				t.Fatalf(
					"bytewise: err %v / %v, left %d / %d, %d / %d messages",
					wholeErr, byteErr, wholeLeft, byteLeft, len(wholeMsgs), len(byteMsgs))
			}
		}
	})
}

// checkFuzzResult checks what holds for any input: errors are the package's
// sentinels, and messages respect the kinds and limits.
func checkFuzzResult(t *testing.T, o Options, msgs []got, err error) {
	t.Helper()
	if err != nil {
		if _, ok := err.(*ProtocolError); !ok {
			t.Fatalf(
				"error %v (%T) is not a *ProtocolError",
				err, err)
		}
	}
	limit := o.MaxMessageSize
	if limit <= 0 {
		limit = DefaultMaxMessageSize
	}
	for _, m := range msgs {
		switch m.Kind {
		case KindBinary, KindText:
			if len(m.Data) > limit {
				t.Fatalf(
					"%d-byte message over the %d limit",
					len(m.Data), limit)
			}
		case KindPing, KindPong, KindClose:
			if len(m.Data) > ws.MaxControlFramePayloadSize {
				t.Fatalf(
					"%d-byte control frame",
					len(m.Data))
			}
		default:
			t.Fatalf(
				"message of kind %v returned",
				m.Kind)
		}
	}
}

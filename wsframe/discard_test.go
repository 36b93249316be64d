package wsframe

import (
	"bytes"
	"testing"

	"github.com/gobwas/ws"
)

// feedAll decodes stream fed in pieces of size step, returning the kinds
// (and payloads) of the messages it yields.
func feedAll(t *testing.T, d *Decoder, stream []byte, step int) ([]Kind, [][]byte) {
	t.Helper()
	var kinds []Kind
	var payloads [][]byte
	var buf []byte
	for off := 0; off < len(stream); off += step {
		buf = append(buf, stream[off:min(off+step, len(stream))]...)
		for {
			msg, n, err := d.Decode(buf)
			if err != nil {
				t.Fatalf("step %d offset %d: %v", step, off, err)
			}
			if n == 0 {
				break
			}
			buf = buf[n:]
			if msg.Kind != KindNone {
				kinds = append(kinds, msg.Kind)
				payloads = append(payloads, append([]byte(nil), msg.Payload...))
			}
		}
		if len(buf) > 64<<10 {
			t.Fatalf("step %d: %d bytes buffered while skipping", step, len(buf))
		}
		buf = append([]byte(nil), buf...)
	}
	return kinds, payloads
}

func TestDiscardOversizeSkipsAndCarriesOn(t *testing.T) {
	const limit = 1000
	mask := [4]byte{9, 8, 7, 6}
	big := bytes.Repeat([]byte{'x'}, limit+4)
	var stream []byte
	stream = AppendMaskedFrame(stream, ws.OpBinary, true, big, mask)               // oversize, one frame
	stream = AppendMaskedFrame(stream, ws.OpBinary, true, []byte("after-1"), mask) // fine
	// Oversize across fragments, with a ping in between.
	stream = AppendMaskedFrame(stream, ws.OpBinary, false, big[:600], mask)
	stream = AppendMaskedFrame(stream, ws.OpPing, true, []byte("p"), mask)
	stream = AppendMaskedFrame(stream, ws.OpContinuation, false, big[:600], mask) // crosses the limit
	stream = AppendMaskedFrame(stream, ws.OpContinuation, false, nil, mask)
	stream = AppendMaskedFrame(stream, ws.OpContinuation, true, big[:10], mask)
	stream = AppendMaskedFrame(stream, ws.OpBinary, true, []byte("after-2"), mask)
	// Exactly the limit still passes.
	stream = AppendMaskedFrame(stream, ws.OpBinary, true, big[:limit], mask)

	want := []Kind{KindTooLarge, KindBinary, KindPing, KindTooLarge, KindBinary, KindBinary}
	for _, step := range []int{1, 2, 3, 7, 13, 100, 997, len(stream)} {
		d := NewDecoder(Options{Role: RoleServer, MaxMessageSize: limit, DiscardOversize: true})
		kinds, payloads := feedAll(t, d, stream, step)
		if len(kinds) != len(want) {
			t.Fatalf("step %d: kinds %v, want %v", step, kinds, want)
		}
		for i := range want {
			if kinds[i] != want[i] {
				t.Fatalf("step %d: kinds %v, want %v", step, kinds, want)
			}
		}
		if string(payloads[1]) != "after-1" || string(payloads[4]) != "after-2" || len(payloads[5]) != limit {
			t.Fatalf("step %d: payloads around skipped messages are wrong", step)
		}
	}
}

func TestDiscardOversizeStillRefusesProtocolErrors(t *testing.T) {
	d := NewDecoder(Options{Role: RoleServer, MaxMessageSize: 10, DiscardOversize: true})
	var stream []byte
	stream = AppendMaskedFrame(stream, ws.OpBinary, false, bytes.Repeat([]byte{1}, 20), [4]byte{1, 1, 1, 1})
	stream = AppendMaskedFrame(stream, ws.OpBinary, true, []byte("new message inside a fragmented one"), [4]byte{1, 1, 1, 1})
	buf := stream
	for {
		_, n, err := d.Decode(buf)
		if err != nil {
			if err != ErrExpectedContinuation {
				t.Fatalf("got %v, want ErrExpectedContinuation", err)
			}
			return
		}
		if n == 0 {
			t.Fatal("stream ended without the expected error")
		}
		buf = buf[n:]
	}
}

func TestDiscardOversizeRefusesAbsurdLengths(t *testing.T) {
	d := NewDecoder(Options{Role: RoleServer, MaxMessageSize: 1000, DiscardOversize: true})
	// A header announcing 2^63-1 bytes: refused at once, not skipped.
	hdr := []byte{0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}
	if _, _, err := d.Decode(hdr); err != ErrMessageTooLarge {
		t.Fatalf("got %v, want ErrMessageTooLarge", err)
	}
	// 16 × the limit is still skipped.
	d = NewDecoder(Options{Role: RoleServer, MaxMessageSize: 1000, DiscardOversize: true})
	frame := AppendMaskedFrame(nil, ws.OpBinary, true, make([]byte, 16_000), [4]byte{1, 2, 3, 4})
	kinds, _ := feedAll(t, d, frame, 4096)
	if len(kinds) != 1 || kinds[0] != KindTooLarge {
		t.Fatalf("kinds %v, want one KindTooLarge", kinds)
	}
}

package wsframe

import (
	"testing"

	"github.com/gobwas/ws"
)

// Decoding unmasks in place, so decoding the same masked bytes again masks
// them back: the loops below reuse one buffer without copying, and every
// iteration does the full work of a fresh frame.

func BenchmarkDecodeBinary512(b *testing.B) {
	payload := make([]byte, 512)
	buf := AppendMaskedFrame(nil, ws.OpBinary, true, payload, [4]byte{0x1f, 0x2e, 0x3d, 0x4c})
	d := NewDecoder(Options{})
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		m, n, err := d.Decode(buf)
		if err != nil || n != len(buf) || len(m.Payload) != len(payload) {
			b.Fatalf(
				"n=%d err=%v",
				n, err)
		}
	}
}

func BenchmarkDecodeFragmented(b *testing.B) {
	// A 2 KiB message in four masked 512-byte fragments.
	payload := make([]byte, 512)
	var buf []byte
	for i := 0; i < 4; i++ {
		op := ws.OpBinary
		if i > 0 {
			op = ws.OpContinuation
		}
		buf = AppendMaskedFrame(buf, op, i == 3, payload, [4]byte{1, 2, 3, byte(i)})
	}
	d := NewDecoder(Options{})
	b.ReportAllocs()
	b.SetBytes(4 * int64(len(payload)))
	for b.Loop() {
		p := buf
		for len(p) > 0 {
			m, n, err := d.Decode(p)
			if err != nil || n == 0 {
				b.Fatalf(
					"n=%d err=%v",
					n, err)
			}
			if m.Kind == KindBinary && len(m.Payload) != 4*len(payload) {
				b.Fatalf(
					"got %d bytes",
					len(m.Payload))
			}
			p = p[n:]
		}
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	payload := make([]byte, 512)
	dst := make([]byte, 0, 1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		dst = AppendFrame(dst[:0], ws.OpBinary, true, payload)
	}
}

func BenchmarkAppendMaskedFrame(b *testing.B) {
	payload := make([]byte, 512)
	dst := make([]byte, 0, 1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		dst = AppendMaskedFrame(dst[:0], ws.OpBinary, true, payload, [4]byte{1, 2, 3, 4})
	}
}

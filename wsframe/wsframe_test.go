package wsframe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"testing"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// refFrame encodes a frame by hand, independently of both this package and
// gobwas/ws, so that a bug shared by ws.Cipher's masking and unmasking can
// not cancel itself out in the tests.
func refFrame(b0 byte, masked bool, mask [4]byte, payload []byte) []byte {
	out := []byte{b0}
	var mbit byte
	if masked {
		mbit = 0x80
	}
	switch n := len(payload); {
	case n <= 125:
		out = append(out, mbit|byte(n))
	case n <= 0xffff:
		out = append(out, mbit|126, byte(n>>8), byte(n))
	default:
		out = append(out, mbit|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if !masked {
		return append(out, payload...)
	}
	out = append(out, mask[:]...)
	for i, c := range payload {
		out = append(out, c^mask[i%4])
	}
	return out
}

// refData encodes a data or control frame with opcode op.
func refData(op ws.OpCode, fin, masked bool, mask [4]byte, payload []byte) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	return refFrame(b0, masked, mask, payload)
}

// got is a decoded message with its bytes copied out of the buffers.
type got struct {
	Kind   Kind
	Data   []byte
	Code   ws.StatusCode
	Reason []byte
}

func (g got) String() string {
	return fmt.Sprintf("%v len=%d code=%d reason=%q", g.Kind, len(g.Data), g.Code, g.Reason)
}

func clone(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return append([]byte{}, b...)
}

// feed drives d the way an event loop does: each chunk is appended to the
// connection buffer, Decode runs until it consumes nothing, and consumed
// bytes are dropped from the front. It returns the messages, the bytes left
// over and the error, if any.
func feed(d *Decoder, chunks [][]byte) (msgs []got, left int, err error) {
	var buf []byte
	for _, c := range chunks {
		buf = append(buf, c...)
		off := 0
		for {
			m, n, e := d.Decode(buf[off:])
			if e != nil {
				if n != 0 {
					return msgs, len(buf) - off, fmt.Errorf("n=%d with error %w", n, e)
				}
				return msgs, len(buf) - off, e
			}
			if n == 0 {
				break
			}
			if n > len(buf)-off {
				return msgs, 0, fmt.Errorf("n=%d beyond the %d bytes given", n, len(buf)-off)
			}
			off += n
			if m.Kind != KindNone {
				msgs = append(msgs, got{m.Kind, clone(m.Payload), m.CloseCode, clone(m.CloseReason)})
			}
		}
		if off > 0 {
			buf = append(buf[:0], buf[off:]...)
		}
	}
	return msgs, len(buf), nil
}

func splitAt(stream []byte, points ...int) [][]byte {
	var out [][]byte
	prev := 0
	for _, p := range points {
		out = append(out, stream[prev:p])
		prev = p
	}
	return append(out, stream[prev:])
}

func bytewise(stream []byte) [][]byte {
	out := make([][]byte, len(stream))
	for i := range stream {
		out[i] = stream[i : i+1]
	}
	return out
}

func equalMsgs(a, b []got) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Kind != b[i].Kind || a[i].Code != b[i].Code ||
			!bytes.Equal(a[i].Data, b[i].Data) || !bytes.Equal(a[i].Reason, b[i].Reason) {
			return false
		}
	}
	return true
}

// testMessage is a data message and how to encode it.
type testMessage struct {
	name  string
	op    ws.OpCode
	data  []byte
	parts int // number of frames
}

// frames encodes m into parts frames of near-equal size (the first ones may
// be empty when parts exceeds the length).
func (m testMessage) frames(masked bool, rnd *rand.Rand) [][]byte {
	var out [][]byte
	for i := 0; i < m.parts; i++ {
		lo := len(m.data) * i / m.parts
		hi := len(m.data) * (i + 1) / m.parts
		op := m.op
		if i > 0 {
			op = ws.OpContinuation
		}
		var mask [4]byte
		if masked && rnd.Intn(8) != 0 { // one frame in 8 keeps the zero mask
			rnd.Read(mask[:])
		}
		out = append(out, refData(op, i == m.parts-1, masked, mask, m.data[lo:hi]))
	}
	return out
}

func (m testMessage) want() got {
	k := KindBinary
	if m.op == ws.OpText {
		k = KindText
	}
	return got{Kind: k, Data: m.data, Reason: []byte{}}
}

func testMessages(rnd *rand.Rand) []testMessage {
	var ms []testMessage
	for _, size := range []int{0, 1, 125, 126, 65535, 65536, 1_000_000} {
		data := make([]byte, size)
		rnd.Read(data)
		parts := []int{1, 2, 3, 7}
		if size <= 126 {
			parts = append(parts, size+1) // one byte per frame, plus an empty one
		}
		for _, op := range []ws.OpCode{ws.OpBinary, ws.OpText} {
			for _, p := range parts {
				if size == 1_000_000 && op == ws.OpText && p > 2 {
					continue // enough of the big ones
				}
				ms = append(ms, testMessage{fmt.Sprintf("%v/%d/%dframes", op, size, p), op, data, p})
			}
		}
	}
	return ms
}

func TestSplitEveryBoundary(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	for _, role := range []Role{RoleServer, RoleClient} {
		for _, m := range testMessages(rnd) {
			t.Run(role.String()+"/"+m.name, func(t *testing.T) {
				frames := m.frames(role == RoleServer, rnd)
				var starts []int
				var stream []byte
				for _, f := range frames {
					starts = append(starts, len(stream))
					stream = append(stream, f...)
				}
				starts = append(starts, len(stream))
				want := []got{m.want()}
				check := func(how string, chunks [][]byte) {
					t.Helper()
					msgs, left, err := feed(NewDecoder(Options{Role: role}), chunks)
					if err != nil || left != 0 || !equalMsgs(msgs, want) {
						t.Fatalf(
							"%s: err=%v left=%d msgs=%v, want %v",
							how, err, left, msgs, want)
					}
				}
				// One byte at a time: every boundary in a single pass.
				check("bytewise", bytewise(stream))
				// In two pieces at every boundary for small streams. For the
				// large ones every split inside a payload takes the same
				// path, so split at every boundary near each frame start
				// (header bytes included) and at random payload offsets; the
				// bytewise pass above covers every boundary anyway.
				if len(stream) <= 4096 {
					for i := 0; i <= len(stream); i++ {
						check(fmt.Sprintf("split at %d", i), splitAt(stream, i))
					}
				} else {
					for _, start := range starts {
						for i := max(0, start-3); i <= min(len(stream), start+20); i++ {
							check(fmt.Sprintf("split at %d", i), splitAt(stream, i))
						}
					}
					for i := 0; i < 10; i++ {
						check("random split", splitAt(stream, rnd.Intn(len(stream)+1)))
					}
				}
				// Random chunk sizes.
				var pts []int
				for p := rnd.Intn(300); p < len(stream); p += 1 + rnd.Intn(70_000) {
					pts = append(pts, p)
				}
				check("random chunks", splitAt(stream, pts...))
			})
		}
	}
}

func TestStreamOfManyMessages(t *testing.T) {
	// All messages back to back in one stream, fed byte by byte, so that a
	// frame always starts in the middle of the buffer after another one.
	rnd := rand.New(rand.NewSource(2))
	var stream []byte
	var want []got
	for _, m := range testMessages(rnd) {
		if len(m.data) > 70_000 {
			continue
		}
		stream = append(stream, bytes.Join(m.frames(true, rnd), nil)...)
		want = append(want, m.want())
	}
	msgs, left, err := feed(NewDecoder(Options{}), bytewise(stream))
	if err != nil || left != 0 || !equalMsgs(msgs, want) {
		t.Fatalf(
			"err=%v left=%d, %d msgs, want %d",
			err, left, len(msgs), len(want))
	}
}

func TestControlBetweenFragments(t *testing.T) {
	rnd := rand.New(rand.NewSource(3))
	data := make([]byte, 3000)
	rnd.Read(data)
	mask := [4]byte{1, 2, 3, 4}
	ping := []byte("are you there?")
	stream := bytes.Join([][]byte{
		refData(ws.OpBinary, false, true, mask, data[:1000]),
		refData(ws.OpPing, true, true, mask, ping),
		refData(ws.OpContinuation, false, true, mask, data[1000:2000]),
		refData(ws.OpPong, true, true, [4]byte{}, nil),
		refData(ws.OpPing, true, true, mask, nil),
		refData(ws.OpClose, true, true, mask, []byte{0x03, 0xe8, 'b', 'y', 'e'}),
		refData(ws.OpContinuation, true, true, mask, data[2000:]),
		refData(ws.OpText, true, true, mask, []byte("after")),
	}, nil)
	want := []got{
		{Kind: KindPing, Data: ping, Reason: []byte{}},
		{Kind: KindPong, Data: []byte{}, Reason: []byte{}},
		{Kind: KindPing, Data: []byte{}, Reason: []byte{}},
		{Kind: KindClose, Data: []byte{0x03, 0xe8, 'b', 'y', 'e'}, Code: 1000, Reason: []byte("bye")},
		{Kind: KindBinary, Data: data, Reason: []byte{}},
		{Kind: KindText, Data: []byte("after"), Reason: []byte{}},
	}
	for i := 0; i <= len(stream); i++ {
		msgs, left, err := feed(NewDecoder(Options{}), splitAt(stream, i))
		if err != nil || left != 0 || !equalMsgs(msgs, want) {
			t.Fatalf(
				"split at %d: err=%v left=%d msgs=%v",
				i, err, left, msgs)
		}
	}
	msgs, _, err := feed(NewDecoder(Options{}), bytewise(stream))
	if err != nil || !equalMsgs(msgs, want) {
		t.Fatalf(
			"bytewise: err=%v msgs=%v",
			err, msgs)
	}
}

func TestRandomMasks(t *testing.T) {
	rnd := rand.New(rand.NewSource(4))
	d := NewDecoder(Options{})
	for i := 0; i < 2000; i++ {
		data := make([]byte, rnd.Intn(300))
		rnd.Read(data)
		var mask [4]byte
		if i%10 != 0 {
			rnd.Read(mask[:])
		}
		frame := refData(ws.OpBinary, true, true, mask, data)
		// Start the frame at a random offset so the payload is not aligned.
		off := rnd.Intn(16)
		buf := append(make([]byte, off), frame...)
		m, n, err := d.Decode(buf[off:])
		if err != nil || n != len(frame) || m.Kind != KindBinary || !bytes.Equal(m.Payload, data) {
			t.Fatalf(
				"mask %x len %d: n=%d err=%v equal=%v",
				mask, len(data), n, err, bytes.Equal(m.Payload, data))
		}
	}
}

// decodeOnce feeds b to a fresh decoder in one call.
func decodeOnce(o Options, b []byte) (Message, int, error) {
	return NewDecoder(o).Decode(append([]byte{}, b...))
}

func TestReservedBits(t *testing.T) {
	for rsv := byte(1); rsv <= 7; rsv++ {
		for _, op := range []ws.OpCode{ws.OpBinary, ws.OpText, ws.OpPing, ws.OpPong, ws.OpClose} {
			frame := refFrame(0x80|rsv<<4|byte(op), true, [4]byte{9, 9, 9, 9}, []byte("x"))
			for _, b := range [][]byte{frame[:2], frame} {
				_, n, err := decodeOnce(Options{}, b)
				if !errors.Is(err, ErrReservedBits) || n != 0 {
					t.Errorf(
						"rsv %03b op %v with %d bytes: n=%d err=%v",
						rsv, op, len(b), n, err)
				}
			}
		}
		// On a continuation too.
		d := NewDecoder(Options{})
		if _, _, err := d.Decode(refData(ws.OpBinary, false, true, [4]byte{}, []byte("a"))); err != nil {
			t.Fatal(err)
		}
		_, _, err := d.Decode(refFrame(0x80|rsv<<4, true, [4]byte{}, []byte("b"))[:2])
		if !errors.Is(err, ErrReservedBits) {
			t.Errorf(
				"rsv %03b on continuation: %v",
				rsv, err)
		}
	}
}

func TestMaskRole(t *testing.T) {
	unmasked := refData(ws.OpBinary, true, false, [4]byte{}, []byte("hello"))
	masked := refData(ws.OpBinary, true, true, [4]byte{1, 2, 3, 4}, []byte("hello"))
	tests := []struct {
		role  Role
		frame []byte
		want  error
	}{
		{
			role:  RoleServer,
			frame: unmasked,
			want:  ErrUnmaskedFrame,
		},
		{
			role:  RoleClient,
			frame: masked,
			want:  ErrMaskedFrame,
		},
		{
			role:  RoleServer,
			frame: masked,
			want:  nil,
		},
		{
			role:  RoleClient,
			frame: unmasked,
			want:  nil,
		},
	}
	for _, tt := range tests {
		_, n, err := decodeOnce(Options{Role: tt.role}, tt.frame[:2])
		if tt.want == nil {
			if err != nil || n != 0 {
				t.Errorf(
					"%v, 2 bytes: n=%d err=%v",
					tt.role, n, err)
			}
			m, n, err := decodeOnce(Options{Role: tt.role}, tt.frame)
			if err != nil || n != len(tt.frame) || string(m.Payload) != "hello" {
				t.Errorf(
					"%v: n=%d err=%v payload=%q",
					tt.role, n, err, m.Payload)
			}
			continue
		}
		if !errors.Is(err, tt.want) || n != 0 {
			t.Errorf(
				"%v, 2 bytes: n=%d err=%v, want %v",
				tt.role, n, err, tt.want)
		}
	}
}

func TestBadOpcode(t *testing.T) {
	for op := byte(0); op < 16; op++ {
		if op <= 2 || op >= 8 && op <= 0xa {
			continue
		}
		_, _, err := decodeOnce(Options{}, refFrame(0x80|op, true, [4]byte{}, nil)[:2])
		if !errors.Is(err, ErrBadOpcode) {
			t.Errorf(
				"opcode %#x: %v",
				op, err)
		}
	}
}

// header returns the header bytes of a masked frame announcing length bytes
// of payload, built by hand so that any length can be claimed.
func header(b0 byte, length uint64) []byte {
	h := []byte{b0}
	switch {
	case length <= 125:
		h = append(h, 0x80|byte(length))
	case length <= 0xffff:
		h = append(h, 0x80|126, byte(length>>8), byte(length))
	default:
		h = append(h, 0x80|127)
		h = binary.BigEndian.AppendUint64(h, length)
	}
	return append(h, 0xde, 0xad, 0xbe, 0xef)
}

func TestOversize(t *testing.T) {
	t.Run("single frame refused from the header", func(t *testing.T) {
		h := header(0x82, 1_000_001)
		d := NewDecoder(Options{})
		for i := 0; i < len(h); i++ {
			if _, n, err := d.Decode(h[:i]); n != 0 || err != nil {
				t.Fatalf(
					"%d header bytes: n=%d err=%v",
					i, n, err)
			}
		}
		_, n, err := d.Decode(h)
		if !errors.Is(err, ErrMessageTooLarge) || n != 0 {
			t.Fatalf(
				"full header: n=%d err=%v",
				n, err)
		}
		var pe *ProtocolError
		if !errors.As(err, &pe) || pe.Code != ws.StatusMessageTooBig {
			t.Fatalf(
				"error %v is not a 1009 ProtocolError",
				err)
		}
	})
	t.Run("exactly the limit is accepted", func(t *testing.T) {
		data := bytes.Repeat([]byte{7}, 1_000_000)
		frame := refData(ws.OpBinary, true, true, [4]byte{1, 2, 3, 4}, data)
		d := NewDecoder(Options{})
		if _, n, err := d.Decode(frame[:14]); n != 0 || err != nil {
			t.Fatalf(
				"header: n=%d err=%v",
				n, err)
		}
		m, n, err := d.Decode(frame)
		if err != nil || n != len(frame) || !bytes.Equal(m.Payload, data) {
			t.Fatalf(
				"n=%d err=%v",
				n, err)
		}
	})
	t.Run("fragmented total", func(t *testing.T) {
		for _, tc := range []struct {
			second  uint64
			wantErr bool
		}{
			{
				second:  400_000,
				wantErr: false,
			},
			{
				second:  400_001,
				wantErr: true,
			},
		} {
			d := NewDecoder(Options{})
			first := refData(ws.OpBinary, false, true, [4]byte{5, 6, 7, 8}, make([]byte, 600_000))
			if _, n, err := d.Decode(first); n != len(first) || err != nil {
				t.Fatalf(
					"first fragment: n=%d err=%v",
					n, err)
			}
			_, n, err := d.Decode(header(0x00, tc.second)) // continuation, not final
			if tc.wantErr != (err != nil) || n != 0 {
				t.Fatalf(
					"second fragment of %d: n=%d err=%v",
					tc.second, n, err)
			}
			if tc.wantErr && !errors.Is(err, ErrMessageTooLarge) {
				t.Fatalf(
					"second fragment of %d: %v",
					tc.second, err)
			}
		}
	})
	t.Run("small limit", func(t *testing.T) {
		o := Options{MaxMessageSize: 10}
		d := NewDecoder(o)
		for _, f := range [][]byte{
			refData(ws.OpText, false, true, [4]byte{}, []byte("01234")),
			refData(ws.OpPing, true, true, [4]byte{}, bytes.Repeat([]byte{1}, 125)), // control frames are not counted
			refData(ws.OpContinuation, false, true, [4]byte{}, []byte("5678")),
		} {
			if _, n, err := d.Decode(f); n != len(f) || err != nil {
				t.Fatalf(
					"n=%d err=%v",
					n, err)
			}
		}
		if _, _, err := d.Decode(header(0x80, 2)); !errors.Is(err, ErrMessageTooLarge) {
			t.Fatalf(
				"11th byte: %v",
				err)
		}
	})
	t.Run("2^63 and top bit", func(t *testing.T) {
		for _, l := range []uint64{1 << 63, 1<<64 - 1, 1<<63 + 1_000} {
			h := header(0x82, l)
			_, n, err := decodeOnce(Options{}, h)
			if !errors.Is(err, ErrBadLength) || n != 0 {
				t.Errorf(
					"length %d: n=%d err=%v",
					l, n, err)
			}
		}
		for _, l := range []uint64{1<<63 - 1, 1 << 40, 1<<32 + 5} {
			_, _, err := decodeOnce(Options{}, header(0x82, l))
			if !errors.Is(err, ErrMessageTooLarge) {
				t.Errorf(
					"length %d: %v",
					l, err)
			}
		}
	})
	t.Run("refusing allocates nothing", func(t *testing.T) {
		d := NewDecoder(Options{})
		for _, h := range [][]byte{header(0x82, 1<<63), header(0x82, 1_000_001), header(0x82, 1<<63-1)} {
			allocs := testing.AllocsPerRun(100, func() {
				d.Reset()
				if _, _, err := d.Decode(h); err == nil {
					t.Fatal("accepted")
				}
			})
			if allocs != 0 {
				t.Errorf(
					"header %x: %v allocations",
					h, allocs)
			}
		}
	})
}

func TestControlFrameLimits(t *testing.T) {
	for _, op := range []ws.OpCode{ws.OpPing, ws.OpPong, ws.OpClose} {
		for _, tc := range []struct {
			name  string
			frame []byte
		}{
			{
				name:  "126 bytes",
				frame: refData(op, true, true, [4]byte{}, make([]byte, 126)),
			},
			{
				name:  "64-bit length",
				frame: header(0x80|byte(op), 70_000),
			},
			{
				name:  "not final",
				frame: refData(op, false, true, [4]byte{}, nil),
			},
		} {
			_, n, err := decodeOnce(Options{}, tc.frame[:2])
			if !errors.Is(err, ErrControlFrame) || n != 0 {
				t.Errorf(
					"%v %s: n=%d err=%v",
					op, tc.name, n, err)
			}
		}
	}
	body := make([]byte, 125)
	m, _, err := decodeOnce(Options{}, refData(ws.OpPing, true, true, [4]byte{1, 1, 1, 1}, body))
	if err != nil || m.Kind != KindPing || !bytes.Equal(m.Payload, body) {
		t.Errorf(
			"125-byte ping: %v %v",
			m.Kind, err)
	}
}

func TestContinuationOrder(t *testing.T) {
	mask := [4]byte{3, 1, 4, 1}
	cont := refData(ws.OpContinuation, true, true, mask, []byte("x"))
	_, n, err := decodeOnce(Options{}, cont[:2])
	if !errors.Is(err, ErrUnexpectedContinuation) || n != 0 {
		t.Errorf(
			"continuation first: n=%d err=%v",
			n, err)
	}
	// After a complete fragmented message, another continuation is unexpected.
	d := NewDecoder(Options{})
	for _, f := range [][]byte{refData(ws.OpBinary, false, true, mask, []byte("a")), cont} {
		if _, _, err := d.Decode(f); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := d.Decode(cont); !errors.Is(err, ErrUnexpectedContinuation) {
		t.Errorf(
			"continuation after the end: %v",
			err)
	}
	for _, op := range []ws.OpCode{ws.OpBinary, ws.OpText} {
		d := NewDecoder(Options{})
		if _, _, err := d.Decode(refData(ws.OpText, false, true, mask, []byte("a"))); err != nil {
			t.Fatal(err)
		}
		_, n, err := d.Decode(refData(op, true, true, mask, []byte("b"))[:2])
		if !errors.Is(err, ErrExpectedContinuation) || n != 0 {
			t.Errorf(
				"%v inside a fragmented message: n=%d err=%v",
				op, n, err)
		}
	}
}

func TestClose(t *testing.T) {
	closeBody := func(code uint16, reason string) []byte {
		return append(binary.BigEndian.AppendUint16(nil, code), reason...)
	}
	tests := []struct {
		name   string
		body   []byte
		err    error
		code   ws.StatusCode
		reason string
	}{
		{
			name: "no body",
			body: nil,
			code: ws.StatusNoStatusRcvd,
		},
		{
			name: "one byte",
			body: []byte{0x03},
			err:  ErrBadClose,
		},
		{
			name: "code only",
			body: closeBody(1000, ""),
			code: 1000,
		},
		{
			name:   "code and reason",
			body:   closeBody(1001, "going away"),
			code:   1001,
			reason: "going away",
		},
		{
			name:   "longest reason",
			body:   closeBody(4999, string(bytes.Repeat([]byte{'r'}, 123))),
			code:   4999,
			reason: string(bytes.Repeat([]byte{'r'}, 123)),
		},
		{
			name:   "utf8 reason",
			body:   closeBody(3000, "ça va"),
			code:   3000,
			reason: "ça va",
		},
		{
			name: "invalid utf8 reason",
			body: closeBody(1000, "\xff\xfe"),
			err:  ErrInvalidUTF8,
		},
	}
	for _, c := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		tests = append(tests, struct {
			name   string
			body   []byte
			err    error
			code   ws.StatusCode
			reason string
		}{
			name: fmt.Sprint("code ", c),
			body: closeBody(c, ""),
			code: ws.StatusCode(c),
		})
	}
	for _, c := range []uint16{0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535} {
		tests = append(tests, struct {
			name   string
			body   []byte
			err    error
			code   ws.StatusCode
			reason string
		}{
			name: fmt.Sprint("code ", c),
			body: closeBody(c, "x"),
			err:  ErrBadClose,
		})
	}
	for _, tt := range tests {
		frame := refData(ws.OpClose, true, true, [4]byte{0xa, 0xb, 0xc, 0xd}, tt.body)
		m, n, err := decodeOnce(Options{}, frame)
		if tt.err != nil {
			if !errors.Is(err, tt.err) || n != 0 {
				t.Errorf(
					"%s: n=%d err=%v, want %v",
					tt.name, n, err, tt.err)
			}
			continue
		}
		if err != nil || n != len(frame) || m.Kind != KindClose || m.CloseCode != tt.code ||
			string(m.CloseReason) != tt.reason || !bytes.Equal(m.Payload, tt.body) {
			t.Errorf(
				"%s: n=%d err=%v kind=%v code=%d reason=%q",
				tt.name, n, err, m.Kind, m.CloseCode, m.CloseReason)
		}
	}
}

func TestDeadAfterError(t *testing.T) {
	d := NewDecoder(Options{})
	if _, _, err := d.Decode([]byte{0x82, 0x05}); !errors.Is(err, ErrUnmaskedFrame) {
		t.Fatal(err)
	}
	good := refData(ws.OpBinary, true, true, [4]byte{}, []byte("ok"))
	if _, n, err := d.Decode(append([]byte{}, good...)); !errors.Is(err, ErrUnmaskedFrame) || n != 0 {
		t.Fatalf(
			"dead decoder: n=%d err=%v",
			n, err)
	}
	d.Reset()
	if m, _, err := d.Decode(append([]byte{}, good...)); err != nil || string(m.Payload) != "ok" {
		t.Fatalf(
			"after Reset: %v %q",
			err, m.Payload)
	}
}

func TestReassemblyBuffer(t *testing.T) {
	mask := [4]byte{7, 7, 7, 7}
	t.Run("bounded by MaxMessageSize", func(t *testing.T) {
		const limit = 1000
		d := NewDecoder(Options{MaxMessageSize: limit})
		frames := testMessage{"", ws.OpBinary, make([]byte, limit), 37}.frames(true, rand.New(rand.NewSource(5)))
		for _, f := range frames {
			m, _, err := d.Decode(f)
			if err != nil {
				t.Fatal(err)
			}
			if cap(d.reasm) > limit {
				t.Fatalf(
					"reassembly capacity %d over the limit %d",
					cap(d.reasm), limit)
			}
			if m.Kind == KindBinary && len(m.Payload) != limit {
				t.Fatalf(
					"got %d bytes",
					len(m.Payload))
			}
		}
	})
	t.Run("large released, small kept", func(t *testing.T) {
		d := NewDecoder(Options{})
		big := make([]byte, 100_000)
		for i := range big {
			big[i] = byte(i)
		}
		frames := [][]byte{
			refData(ws.OpBinary, false, true, mask, big[:50_000]),
			refData(ws.OpContinuation, true, true, mask, big[50_000:]),
		}
		var m Message
		for _, f := range frames {
			var err error
			if m, _, err = d.Decode(f); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(m.Payload, big) {
			t.Fatal("big message corrupted")
		}
		if d.reasm != nil {
			t.Fatalf(
				"kept a %d-byte buffer after a large message",
				cap(d.reasm))
		}
		small := []byte("small message")
		for _, f := range [][]byte{
			refData(ws.OpBinary, false, true, mask, small[:5]),
			refData(ws.OpContinuation, true, true, mask, small[5:]),
		} {
			if _, _, err := d.Decode(f); err != nil {
				t.Fatal(err)
			}
		}
		if d.reasm == nil || cap(d.reasm) > keepReassemblyCap {
			t.Fatalf(
				"small buffer not kept: cap %d",
				cap(d.reasm))
		}
		d.Reset()
		if d.reasm != nil {
			t.Fatal("Reset kept the buffer")
		}
	})
}

func TestDecodeAllocs(t *testing.T) {
	payload := make([]byte, 512)
	single := refData(ws.OpBinary, true, true, [4]byte{1, 2, 3, 4}, payload)
	var frag []byte
	for i := 0; i < 4; i++ {
		op := ws.OpBinary
		if i > 0 {
			op = ws.OpContinuation
		}
		frag = append(frag, refData(op, i == 3, true, [4]byte{5, 6, 7, 8}, payload)...)
	}
	d := NewDecoder(Options{})
	buf := make([]byte, len(frag))
	for _, tc := range []struct {
		name   string
		stream []byte
	}{
		{
			name:   "single frame",
			stream: single,
		},
		{
			name:   "fragmented",
			stream: frag,
		},
	} {
		run := func() {
			b := buf[:copy(buf, tc.stream)]
			for len(b) > 0 {
				_, n, err := d.Decode(b)
				if err != nil || n == 0 {
					t.Fatalf(
						"n=%d err=%v",
						n, err)
				}
				b = b[n:]
			}
		}
		run() // warm up the reassembly buffer
		if a := testing.AllocsPerRun(100, run); a != 0 {
			t.Errorf(
				"%s: %v allocations per message",
				tc.name, a)
		}
	}
}

// TestDecodeGobwasFrames decodes frames written by gobwas/ws's own writer.
func TestDecodeGobwasFrames(t *testing.T) {
	rnd := rand.New(rand.NewSource(6))
	for _, size := range []int{0, 1, 125, 126, 65535, 65536, 1_000_000} {
		data := make([]byte, size)
		rnd.Read(data)
		var server, client bytes.Buffer
		for i := 0; i < 3; i++ {
			op := ws.OpBinary
			if i > 0 {
				op = ws.OpContinuation
			}
			f := ws.NewFrame(op, i == 2, data[size*i/3:size*(i+1)/3])
			if err := ws.WriteFrame(&server, ws.MaskFrame(f)); err != nil {
				t.Fatal(err)
			}
			if err := ws.WriteFrame(&client, f); err != nil {
				t.Fatal(err)
			}
		}
		if err := ws.WriteFrame(&server, ws.MaskFrame(ws.NewTextFrame(data))); err != nil {
			t.Fatal(err)
		}
		if err := ws.WriteFrame(&server, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusGoingAway, "bye")))); err != nil {
			t.Fatal(err)
		}
		want := []got{
			{Kind: KindBinary, Data: data, Reason: []byte{}},
			{Kind: KindText, Data: data, Reason: []byte{}},
			{Kind: KindClose, Data: []byte{0x03, 0xe9, 'b', 'y', 'e'}, Code: ws.StatusGoingAway, Reason: []byte("bye")},
		}
		msgs, left, err := feed(NewDecoder(Options{}), bytewise(server.Bytes()))
		if err != nil || left != 0 || !equalMsgs(msgs, want) {
			t.Fatalf(
				"server, size %d: err=%v left=%d msgs=%v",
				size, err, left, msgs)
		}
		msgs, left, err = feed(NewDecoder(Options{Role: RoleClient}), [][]byte{client.Bytes()})
		if err != nil || left != 0 || !equalMsgs(msgs, want[:1]) {
			t.Fatalf(
				"client, size %d: err=%v left=%d msgs=%v",
				size, err, left, msgs)
		}
	}
}

// TestEncoderAgainstGobwas checks the encoders byte for byte against
// gobwas/ws's writer, against the hand-made reference, and reads their
// output back with ws.ReadHeader and wsutil.
func TestEncoderAgainstGobwas(t *testing.T) {
	rnd := rand.New(rand.NewSource(7))
	for _, size := range []int{0, 1, 125, 126, 127, 65535, 65536, 1_000_000} {
		data := make([]byte, size)
		rnd.Read(data)
		orig := clone(data)
		for _, op := range []ws.OpCode{ws.OpBinary, ws.OpText, ws.OpContinuation, ws.OpPing} {
			for _, fin := range []bool{true, false} {
				var mask [4]byte
				if rnd.Intn(4) != 0 {
					rnd.Read(mask[:])
				}
				var want bytes.Buffer
				if err := ws.WriteFrame(&want, ws.NewFrame(op, fin, data)); err != nil {
					t.Fatal(err)
				}
				prefix := []byte("prefix")
				gotF := AppendFrame(clone(prefix), op, fin, data)
				if !bytes.HasPrefix(gotF, prefix) || !bytes.Equal(gotF[len(prefix):], want.Bytes()) {
					t.Fatalf(
						"AppendFrame %v fin=%v size %d differs from ws.WriteFrame",
						op, fin, size)
				}
				want.Reset()
				if err := ws.WriteFrame(&want, ws.MaskFrameWith(ws.NewFrame(op, fin, data), mask)); err != nil {
					t.Fatal(err)
				}
				gotM := AppendMaskedFrame(nil, op, fin, data, mask)
				if !bytes.Equal(gotM, want.Bytes()) {
					t.Fatalf(
						"AppendMaskedFrame %v fin=%v size %d differs from ws.WriteFrame",
						op, fin, size)
				}
				b0 := byte(op)
				if fin {
					b0 |= 0x80
				}
				if !bytes.Equal(gotM, refFrame(b0, true, mask, data)) {
					t.Fatalf(
						"AppendMaskedFrame %v size %d differs from the reference masking",
						op, size)
				}
				if !bytes.Equal(data, orig) {
					t.Fatal("AppendMaskedFrame modified the payload")
				}
				h, err := ws.ReadHeader(bytes.NewReader(gotM))
				if err != nil || h.OpCode != op || h.Fin != fin || !h.Masked || h.Mask != mask || h.Length != int64(size) {
					t.Fatalf(
						"ws.ReadHeader: %+v %v",
						h, err)
				}
			}
		}
		// Whole messages through wsutil, fragmented in two frames.
		half := size / 2
		srv := AppendFrame(nil, ws.OpBinary, false, data[:half])
		srv = AppendFrame(srv, ws.OpContinuation, true, data[half:])
		ms, err := wsutil.ReadServerMessage(bytes.NewReader(srv), nil)
		if err != nil || len(ms) != 1 || ms[0].OpCode != ws.OpBinary || !bytes.Equal(ms[0].Payload, data) {
			t.Fatalf(
				"wsutil.ReadServerMessage, size %d: %v",
				size, err)
		}
		mask := [4]byte{byte(size), 0x5a, 0xa5, 0xff}
		cli := AppendMaskedFrame(nil, ws.OpBinary, false, data[:half], mask)
		cli = AppendMaskedFrame(cli, ws.OpPing, true, []byte("ping"), mask)
		cli = AppendMaskedFrame(cli, ws.OpContinuation, true, data[half:], mask)
		ms, err = wsutil.ReadClientMessage(bytes.NewReader(cli), nil)
		if err != nil || len(ms) != 2 || ms[0].OpCode != ws.OpPing || string(ms[0].Payload) != "ping" ||
			ms[1].OpCode != ws.OpBinary || !bytes.Equal(ms[1].Payload, data) {
			t.Fatalf(
				"wsutil.ReadClientMessage, size %d: %v",
				size, err)
		}
	}
}

func TestAppendClose(t *testing.T) {
	long := string(bytes.Repeat([]byte("é"), 100)) // 200 bytes, 2-byte runes
	tests := []struct {
		code   ws.StatusCode
		reason string
	}{
		{
			code:   ws.StatusNormalClosure,
			reason: "",
		},
		{
			code:   ws.StatusGoingAway,
			reason: "restart",
		},
		{
			code:   ws.StatusMessageTooBig,
			reason: string(bytes.Repeat([]byte{'x'}, 200)),
		},
		{
			code:   4000,
			reason: long,
		},
	}
	for _, tt := range tests {
		mask := [4]byte{9, 8, 7, 6}
		for _, masked := range []bool{false, true} {
			var f []byte
			if masked {
				f = AppendMaskedClose(nil, tt.code, tt.reason, mask)
			} else {
				f = AppendClose(nil, tt.code, tt.reason)
			}
			role := RoleClient
			if masked {
				role = RoleServer
			}
			m, n, err := decodeOnce(Options{Role: role}, f)
			if err != nil || n != len(f) || m.Kind != KindClose || m.CloseCode != tt.code {
				t.Fatalf(
					"code %d masked=%v: n=%d err=%v code=%d",
					tt.code, masked, n, err, m.CloseCode)
			}
			if len(m.Payload) > ws.MaxControlFramePayloadSize || !bytes.HasPrefix([]byte(tt.reason), m.CloseReason) {
				t.Fatalf(
					"code %d: reason %q not a prefix within 125 bytes",
					tt.code, m.CloseReason)
			}
			if len(tt.reason) <= 123 && string(m.CloseReason) != tt.reason {
				t.Fatalf(
					"code %d: reason %q",
					tt.code, m.CloseReason)
			}
		}
		if len(tt.reason) <= 123 {
			var want bytes.Buffer
			if err := ws.WriteFrame(&want, ws.NewCloseFrame(ws.NewCloseFrameBody(tt.code, tt.reason))); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(AppendClose(nil, tt.code, tt.reason), want.Bytes()) {
				t.Fatalf(
					"AppendClose(%d, %q) differs from gobwas/ws",
					tt.code, tt.reason)
			}
		}
	}
	// No code: an empty body, to echo a close that had none.
	for _, code := range []ws.StatusCode{0, ws.StatusNoStatusRcvd} {
		if f := AppendClose(nil, code, "ignored"); !bytes.Equal(f, []byte{0x88, 0x00}) {
			t.Fatalf(
				"AppendClose(%d) = %x",
				code, f)
		}
		m, _, err := decodeOnce(Options{}, AppendMaskedClose(nil, code, "", [4]byte{1, 2, 3, 4}))
		if err != nil || m.CloseCode != ws.StatusNoStatusRcvd {
			t.Fatalf(
				"masked empty close: %v %d",
				err, m.CloseCode)
		}
	}
}

func TestAppendFrameAllocs(t *testing.T) {
	payload := make([]byte, 512)
	dst := make([]byte, 0, 1024)
	a := testing.AllocsPerRun(100, func() {
		dst = AppendFrame(dst[:0], ws.OpBinary, true, payload)
		dst = AppendMaskedFrame(dst, ws.OpBinary, true, payload[:100], [4]byte{1, 2, 3, 4})
		dst = AppendClose(dst, ws.StatusGoingAway, "bye")
	})
	if a != 0 {
		t.Fatalf(
			"%v allocations",
			a)
	}
}

func TestStrings(t *testing.T) {
	if KindBinary.String() != "binary" || Kind(42).String() != "Kind(42)" ||
		RoleClient.String() != "client" || Role(9).String() != "Role(9)" {
		t.Fatal("String methods")
	}
	if ErrMessageTooLarge.Error() != "wsframe: message exceeds the maximum size" {
		t.Fatal(ErrMessageTooLarge.Error())
	}
}

// sliceReader is what ws.ReadHeaderBuffer reads from.
var _ io.Reader = (*sliceReader)(nil)

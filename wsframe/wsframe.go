// Package wsframe is an incremental WebSocket (RFC 6455) frame decoder and
// encoder over byte slices, built on github.com/gobwas/ws.
//
// It does no I/O and starts no goroutines: an event loop keeps the plaintext
// it has received for a connection in a buffer and calls [Decoder.Decode]
// until it reports that no complete frame is left, then drops the consumed
// bytes. Frames are checked as early as their bytes allow, so that a peer
// cannot make the loop buffer or allocate anything for a frame that will be
// refused anyway.
//
// No extensions are supported (RSV bits are refused) and text payloads are
// returned as they are: checking that they are UTF-8 is left to the
// application, which for fleet-telemetry refuses text messages anyway.
package wsframe

import (
	"encoding/binary"
	"io"
	"strconv"
	"unicode/utf8"

	"github.com/gobwas/ws"
)

// DefaultMaxMessageSize is the MaxMessageSize used when [Options] leaves it
// zero or negative: the largest record a vehicle may send.
const DefaultMaxMessageSize = 1_000_000

// keepReassemblyCap is the largest reassembly buffer a Decoder keeps after
// delivering a fragmented message. Small buffers are reused so that chatty
// peers do not allocate per message; larger ones are released so that a
// mostly idle connection does not pin up to MaxMessageSize of memory.
const keepReassemblyCap = 4 << 10

// minReassemblyCap is the first capacity given to the reassembly buffer, so
// that a message split into many tiny fragments does not reallocate often.
const minReassemblyCap = 512

// Role tells a Decoder which side of the connection it decodes for, which
// decides whether incoming frames must be masked (RFC 6455 section 5.1).
type Role uint8

const (
	// RoleServer decodes frames sent by a client: they MUST be masked, and
	// unmasked ones are refused with ErrUnmaskedFrame. It is the zero value.
	RoleServer Role = iota
	// RoleClient decodes frames sent by a server: they must NOT be masked,
	// and masked ones are refused with ErrMaskedFrame. Any value other than
	// RoleServer behaves as RoleClient.
	RoleClient
)

// String returns "server" or "client".
func (r Role) String() string {
	switch r {
	case RoleServer:
		return "server"
	case RoleClient:
		return "client"
	default:
		return "Role(" + strconv.Itoa(int(r)) + ")"
	}
}

// Options configures a Decoder.
type Options struct {
	// Role is the side this Decoder decodes for; see [Role].
	Role Role
	// MaxMessageSize is the largest data message accepted, in payload bytes,
	// counting all fragments of a fragmented message together; a message of
	// exactly MaxMessageSize bytes is accepted. Zero or negative means
	// DefaultMaxMessageSize. Control frames are limited to 125 bytes by the
	// RFC regardless.
	MaxMessageSize int
	// DiscardOversize makes an oversize data message recoverable: instead of
	// failing with ErrMessageTooLarge, the Decoder skips the message's bytes
	// as they arrive (never buffering them) and then returns KindTooLarge,
	// so the connection can answer and carry on. The reference server
	// replies to an oversize record rather than dropping the vehicle.
	DiscardOversize bool
}

// Kind is the type of a decoded [Message].
type Kind uint8

const (
	// KindNone means no message was completed: Decode absorbed a non-final
	// fragment of a data message.
	KindNone Kind = iota
	// KindBinary is a complete binary data message.
	KindBinary
	// KindText is a complete text data message. Its payload is not checked
	// to be UTF-8.
	KindText
	// KindPing is a ping control frame; the peer expects a pong with the
	// same payload.
	KindPing
	// KindPong is a pong control frame.
	KindPong
	// KindClose is a close control frame; see Message.CloseCode and
	// Message.CloseReason.
	KindClose
	// KindTooLarge reports a data message over MaxMessageSize that was
	// skipped (Options.DiscardOversize); it has no payload.
	KindTooLarge
)

var kindNames = [...]string{"none", "binary", "text", "ping", "pong", "close", "too-large"}

// String returns the lower-case name of k, for logs and metrics labels.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Message is one decoded message or control frame.
type Message struct {
	// Kind is the type of the message; KindNone when nothing was completed.
	Kind Kind
	// Payload is the unmasked payload. For a single-frame message or a
	// control frame it aliases the buffer passed to Decode (unmasked in
	// place); for a reassembled fragmented message it aliases the Decoder's
	// own reassembly buffer. Either way it is valid only until the next
	// Decode call (and until the caller reuses its buffer): copy what must
	// outlive that. For KindClose it is the whole close body.
	Payload []byte
	// CloseCode is the status code of a KindClose frame:
	// ws.StatusNoStatusRcvd (1005) when the frame had no body.
	CloseCode ws.StatusCode
	// CloseReason is the UTF-8 reason of a KindClose frame, possibly empty.
	// It aliases Payload.
	CloseReason []byte
}

// ProtocolError is the error a Decoder returns for a frame it refuses. Code
// is the close status to send the peer before closing the connection.
//
// The Decoder only ever returns the sentinel values below (so that refusing
// costs no allocation); compare with errors.Is or ==.
type ProtocolError struct {
	Code   ws.StatusCode
	Reason string
}

// Error returns the reason, prefixed with the package name.
func (e *ProtocolError) Error() string {
	return "wsframe: " + e.Reason
}

// Errors returned by [Decoder.Decode]. Each is a *ProtocolError whose Code is
// the close status to answer with.
var (
	// ErrUnmaskedFrame: a RoleServer decoder got an unmasked frame (RFC 6455
	// section 5.1). Detected from the first two bytes.
	ErrUnmaskedFrame = &ProtocolError{ws.StatusProtocolError, "unmasked frame from client"}
	// ErrMaskedFrame: a RoleClient decoder got a masked frame. Detected from
	// the first two bytes.
	ErrMaskedFrame = &ProtocolError{ws.StatusProtocolError, "masked frame from server"}
	// ErrReservedBits: a frame had an RSV bit set; no extension is ever
	// negotiated. Detected from the first byte.
	ErrReservedBits = &ProtocolError{ws.StatusProtocolError, "reserved bits set with no extension negotiated"}
	// ErrBadOpcode: a frame used a reserved opcode (0x3-0x7, 0xB-0xF).
	// Detected from the first byte.
	ErrBadOpcode = &ProtocolError{ws.StatusProtocolError, "reserved opcode"}
	// ErrControlFrame: a ping, pong or close frame was fragmented (FIN
	// clear) or announced more than 125 payload bytes. Detected from the
	// first two bytes.
	ErrControlFrame = &ProtocolError{ws.StatusProtocolError, "control frame fragmented or longer than 125 bytes"}
	// ErrUnexpectedContinuation: a continuation frame arrived while no
	// fragmented message was in progress. Detected from the first byte.
	ErrUnexpectedContinuation = &ProtocolError{ws.StatusProtocolError, "continuation frame without a message to continue"}
	// ErrExpectedContinuation: a new text or binary frame arrived while a
	// fragmented message was still in progress. Detected from the first
	// byte.
	ErrExpectedContinuation = &ProtocolError{ws.StatusProtocolError, "new data frame inside a fragmented message"}
	// ErrBadLength: the 64-bit payload length had its most significant bit
	// set (RFC 6455 section 5.2), which also covers a claim of 2^63 bytes or
	// more. Detected once the header is complete.
	ErrBadLength = &ProtocolError{ws.StatusProtocolError, "malformed payload length"}
	// ErrMessageTooLarge: a data frame announced more payload than
	// MaxMessageSize allows, alone or added to the fragments of its message
	// received so far. Detected once the header is complete, before any of
	// the payload is waited for.
	ErrMessageTooLarge = &ProtocolError{ws.StatusMessageTooBig, "message exceeds the maximum size"}
	// ErrBadClose: a close frame had a 1-byte body, or a status code that
	// may not appear on the wire (below 1000, 1004-1006, 1015, 1016-2999,
	// 5000 and above). Detected once the whole frame is there.
	ErrBadClose = &ProtocolError{ws.StatusProtocolError, "malformed close frame"}
	// ErrInvalidUTF8: a close frame's reason was not valid UTF-8 (RFC 6455
	// section 5.5.1).
	ErrInvalidUTF8 = &ProtocolError{ws.StatusInvalidFramePayloadData, "close reason is not valid UTF-8"}
)

// Decoder decodes the frames of one connection. It keeps the state of a
// fragmented message between calls. It is not safe for concurrent use, which
// an event loop does not need.
//
// After Decode returned an error the Decoder is dead: every later call
// returns the same error, until Reset.
type Decoder struct {
	role    Role
	max     int
	discard bool

	// Skipping an oversize message (DiscardOversize): skip payload bytes of
	// the current frame are still to come; skipFin says the frame ends the
	// message; discarding says continuation frames belong to a skipped
	// message.
	skip       int64
	skipFin    bool
	discarding bool

	err error

	// State of the fragmented message in progress, if any.
	fragmenting bool
	fragKind    Kind
	reasm       []byte

	// hr and hdr let ws.ReadHeaderBuffer parse a complete header straight
	// from the caller's buffer without allocating: both live in the Decoder,
	// so nothing escapes per call.
	hr  sliceReader
	hdr [ws.MaxHeaderSize - 2]byte
}

// NewDecoder returns a Decoder configured by o.
func NewDecoder(o Options) *Decoder {
	d := &Decoder{role: o.Role, max: o.MaxMessageSize, discard: o.DiscardOversize}
	if d.max <= 0 {
		d.max = DefaultMaxMessageSize
	}
	return d
}

// Buffered is the memory the Decoder holds between calls: the capacity of
// its reassembly buffer (a fragmented message in progress, or one kept
// for reuse).
func (d *Decoder) Buffered() int { return cap(d.reasm) }

// Reset drops any fragmented message in progress and releases the
// reassembly buffer. It also clears an error returned earlier, so a Decoder
// can be reused for a new connection.
func (d *Decoder) Reset() {
	d.err = nil
	d.fragmenting = false
	d.fragKind = KindNone
	d.reasm = nil
	d.hr.b = nil
	d.skip, d.skipFin, d.discarding = 0, false, false
}

// Decode parses the next frame at the start of buf and returns how many
// bytes of buf it consumed.
//
//   - n == 0 && err == nil: buf does not hold a complete frame yet; call
//     again once more bytes have been appended. At that point len(buf) is
//     below 14 + max(MaxMessageSize, 125), because longer frames are refused
//     from their header, so the caller's buffer is bounded too.
//   - n > 0 && msg.Kind == KindNone: a non-final fragment was absorbed into
//     the reassembly buffer; call again with buf[n:].
//   - n > 0 otherwise: msg is a complete data message or a control frame.
//     Control frames (ping, pong, close) between the fragments of a data
//     message are returned at once and do not disturb its reassembly.
//   - err != nil: a *ProtocolError; the connection must be closed (after
//     sending a close frame with its Code) and the Decoder is dead.
//
// The payload of the frame is unmasked in place, so Decode writes to buf
// (only to the bytes of a complete frame it consumes).
func (d *Decoder) Decode(buf []byte) (msg Message, n int, err error) {
	if d.err != nil {
		return msg, 0, d.err
	}
	if d.skip > 0 {
		k := min(int64(len(buf)), d.skip)
		d.skip -= k
		if d.skip == 0 && d.skipFin {
			return d.skipped(int(k))
		}
		return msg, int(k), nil
	}
	if len(buf) < ws.MinHeaderSize {
		return msg, 0, nil
	}

	// Everything that can be judged from the first two bytes is, so that a
	// bad peer is refused before its header or payload is even buffered.
	b0, b1 := buf[0], buf[1]
	fin := b0&0x80 != 0
	op := ws.OpCode(b0 & 0x0f)
	masked := b1&0x80 != 0
	len7 := b1 & 0x7f
	if e := d.checkStart(b0&0x70 != 0, fin, op, masked, len7); e != nil {
		return d.fail(e)
	}

	hs := ws.MinHeaderSize
	switch len7 {
	case 126:
		hs += 2
	case 127:
		hs += 8
	}
	if masked {
		hs += 4
	}
	if len(buf) < hs {
		return msg, 0, nil
	}

	// The header is complete, so ReadHeaderBuffer can not hit a short read;
	// its only failure left is a 64-bit length with the top bit set.
	d.hr.b = buf[:hs]
	h, e := ws.ReadHeaderBuffer(&d.hr, d.hdr[:])
	d.hr.b = nil // do not keep the caller's buffer reachable
	if e != nil {
		return d.fail(ErrBadLength)
	}

	if op.IsData() {
		if d.discarding { // a continuation of a message being skipped
			return d.startSkip(h.Length, fin, hs)
		}
		// Compare against what is left rather than adding to the total:
		// h.Length may be anything up to 2^63-1.
		left := int64(d.max)
		if op == ws.OpContinuation {
			left -= int64(len(d.reasm))
		}
		if h.Length > left {
			// Skipping is for vehicles that overshoot a little; a header
			// announcing far more (up to 2^63) would tie the connection up
			// for ever: refuse it outright.
			if !d.discard || h.Length > int64(d.max)*maxDiscardFactor {
				return d.fail(ErrMessageTooLarge)
			}
			d.reasm = nil
			d.discarding = true
			d.fragmenting = true // so its continuations are accepted
			return d.startSkip(h.Length, fin, hs)
		}
	}
	// h.Length is now at most MaxMessageSize or 125, so it fits an int.
	if int64(len(buf)-hs) < h.Length {
		return msg, 0, nil
	}
	n = hs + int(h.Length)
	p := buf[hs:n:n]
	if h.Masked && h.Mask != [4]byte{} {
		ws.Cipher(p, h.Mask, 0)
	}

	switch op {
	case ws.OpPing:
		return Message{Kind: KindPing, Payload: p}, n, nil
	case ws.OpPong:
		return Message{Kind: KindPong, Payload: p}, n, nil
	case ws.OpClose:
		msg, e = parseClose(p)
		if e != nil {
			return d.fail(e)
		}
		return msg, n, nil
	case ws.OpContinuation:
		d.reasm = d.appendReasm(p)
		if !fin {
			return msg, n, nil
		}
		msg = Message{Kind: d.fragKind, Payload: d.reasm}
		d.fragmenting = false
		d.fragKind = KindNone
		// The returned Payload keeps the old array alive for as long as
		// the caller holds it, so releasing here is safe.
		if cap(d.reasm) > keepReassemblyCap {
			d.reasm = nil
		} else {
			d.reasm = d.reasm[:0]
		}
		return msg, n, nil
	default: // OpText or OpBinary: checkStart refused the rest.
		kind := KindBinary
		if op == ws.OpText {
			kind = KindText
		}
		if fin {
			return Message{Kind: kind, Payload: p}, n, nil
		}
		d.fragmenting = true
		d.fragKind = kind
		d.reasm = d.appendReasm(p)
		return msg, n, nil
	}
}

// maxDiscardFactor bounds what DiscardOversize skips: a frame announcing
// more than this many times MaxMessageSize is refused instead.
const maxDiscardFactor = 16

// startSkip consumes a skipped frame's header; its payload is consumed as
// it arrives.
func (d *Decoder) startSkip(length int64, fin bool, hs int) (Message, int, error) {
	d.skip, d.skipFin = length, fin
	if length == 0 && fin {
		return d.skipped(hs)
	}
	return Message{}, hs, nil
}

// skipped ends the skipping of an oversize message.
func (d *Decoder) skipped(n int) (Message, int, error) {
	d.skip, d.skipFin, d.discarding = 0, false, false
	d.fragmenting = false
	d.fragKind = KindNone
	return Message{Kind: KindTooLarge}, n, nil
}

// checkStart judges a frame from its first two bytes.
func (d *Decoder) checkStart(rsv, fin bool, op ws.OpCode, masked bool, len7 byte) error {
	switch {
	case rsv:
		return ErrReservedBits
	case op.IsReserved():
		return ErrBadOpcode
	case d.role == RoleServer && !masked:
		return ErrUnmaskedFrame
	case d.role != RoleServer && masked:
		return ErrMaskedFrame
	case op.IsControl():
		// 126 and 127 announce an extended length, so more than 125.
		if !fin || len7 > ws.MaxControlFramePayloadSize {
			return ErrControlFrame
		}
	case op == ws.OpContinuation:
		if !d.fragmenting {
			return ErrUnexpectedContinuation
		}
	default:
		if d.fragmenting {
			return ErrExpectedContinuation
		}
	}
	return nil
}

// fail makes the Decoder dead with err.
func (d *Decoder) fail(err error) (Message, int, error) {
	d.err = err
	d.fragmenting = false
	d.reasm = nil
	return Message{}, 0, err
}

// appendReasm appends p to the reassembly buffer. It grows the buffer itself
// rather than with append so that its capacity never exceeds MaxMessageSize
// (the caller has checked that the contents will not).
func (d *Decoder) appendReasm(p []byte) []byte {
	b := d.reasm
	need := len(b) + len(p)
	if need > cap(b) {
		c := max(need, 2*cap(b), minReassemblyCap)
		c = min(c, max(d.max, need))
		nb := make([]byte, len(b), c)
		copy(nb, b)
		b = nb
	}
	return append(b, p...)
}

// parseClose parses a close frame's body (RFC 6455 section 5.5.1).
func parseClose(p []byte) (Message, error) {
	msg := Message{Kind: KindClose, Payload: p}
	switch len(p) {
	case 0:
		msg.CloseCode = ws.StatusNoStatusRcvd
		return msg, nil
	case 1:
		return Message{}, ErrBadClose
	}
	msg.CloseCode = ws.StatusCode(binary.BigEndian.Uint16(p))
	if !validWireCloseCode(msg.CloseCode) {
		return Message{}, ErrBadClose
	}
	msg.CloseReason = p[2:]
	if !utf8.Valid(msg.CloseReason) {
		return Message{}, ErrInvalidUTF8
	}
	return msg, nil
}

// validWireCloseCode reports whether c may be sent in a close frame: the
// codes RFC 6455 section 7.4.1 defines for the wire, those registered with
// IANA since (1012-1014), and the application and private ranges. 1004 is
// reserved, 1005, 1006 and 1015 are for local use only, and the rest of
// 1000-2999 is reserved for future protocol use.
func validWireCloseCode(c ws.StatusCode) bool {
	switch {
	case c >= 1000 && c <= 1003:
		return true
	case c >= 1007 && c <= 1014:
		return true
	case c.IsApplicationSpec() || c.IsPrivateSpec():
		return true
	default:
		return false
	}
}

// sliceReader is an io.Reader over a byte slice; unlike bytes.Reader it can
// be re-pointed at a new slice without allocating.
type sliceReader struct {
	b []byte
}

// Read copies from the slice and advances it.
func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// AppendFrame appends to dst one unmasked frame (what a server sends) with
// opcode op, the FIN bit set if fin, and payload, and returns the extended
// slice. Only the low 4 bits of op are used. The caller keeps control frames
// final and within 125 bytes.
func AppendFrame(dst []byte, op ws.OpCode, fin bool, payload []byte) []byte {
	h := ws.Header{Fin: fin, OpCode: op & 0x0f, Length: int64(len(payload))}
	dst = appendHeader(dst, h, len(payload))
	return append(dst, payload...)
}

// AppendMaskedFrame is AppendFrame for a client: the frame is masked with
// mask (RFC 6455 section 5.3). payload itself is not modified.
func AppendMaskedFrame(dst []byte, op ws.OpCode, fin bool, payload []byte, mask [4]byte) []byte {
	h := ws.Header{Fin: fin, OpCode: op & 0x0f, Masked: true, Mask: mask, Length: int64(len(payload))}
	dst = appendHeader(dst, h, len(payload))
	start := len(dst)
	dst = append(dst, payload...)
	ws.Cipher(dst[start:], mask, 0)
	return dst
}

// AppendClose appends an unmasked close frame (what a server sends) with code
// and reason. The reason is cut to the 123 bytes a control frame has room for,
// at a UTF-8 character boundary. A code of 0 or ws.StatusNoStatusRcvd (1005)
// produces a close frame with no body, which is how a close received without
// a code is echoed; reason is then ignored.
func AppendClose(dst []byte, code ws.StatusCode, reason string) []byte {
	return appendClose(dst, code, reason, false, [4]byte{})
}

// AppendMaskedClose is AppendClose for a client: the frame is masked with
// mask.
func AppendMaskedClose(dst []byte, code ws.StatusCode, reason string, mask [4]byte) []byte {
	return appendClose(dst, code, reason, true, mask)
}

func appendClose(dst []byte, code ws.StatusCode, reason string, masked bool, mask [4]byte) []byte {
	bodyLen := 0
	if code != 0 && code != ws.StatusNoStatusRcvd {
		reason = cropUTF8(reason, ws.MaxControlFramePayloadSize-2)
		bodyLen = 2 + len(reason)
	}
	h := ws.Header{Fin: true, OpCode: ws.OpClose, Masked: masked, Mask: mask, Length: int64(bodyLen)}
	dst = appendHeader(dst, h, bodyLen)
	if bodyLen == 0 {
		return dst
	}
	start := len(dst)
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	dst = append(dst, reason...)
	if masked {
		ws.Cipher(dst[start:], mask, 0)
	}
	return dst
}

// appendHeader appends h to dst, growing dst so that the payload of
// payloadLen bytes that follows fits without another allocation.
//
// ws.WriteHeaderBuffer encodes the header into dst's spare capacity itself;
// its writer only has to accept the bytes, which are already in place, so
// it is io.Discard. That keeps encoding allocation-free (ws.WriteHeader
// allocates its buffer on every call).
func appendHeader(dst []byte, h ws.Header, payloadLen int) []byte {
	hs := ws.HeaderSize(h)
	if hs < 0 {
		// Unreachable: a slice length always fits the 63-bit field.
		return dst
	}
	need := max(ws.MaxHeaderSize, hs+payloadLen)
	if cap(dst)-len(dst) < need {
		nd := make([]byte, len(dst), growCap(cap(dst), len(dst)+need))
		copy(nd, dst)
		dst = nd
	}
	l := len(dst)
	if err := ws.WriteHeaderBuffer(io.Discard, h, dst[l:l+ws.MaxHeaderSize]); err != nil {
		// Unreachable for the same reason; leave dst unchanged.
		return dst
	}
	return dst[:l+hs]
}

// growCap returns a capacity of at least need, doubling old when that is
// enough, so that appending many frames to one buffer is amortised.
func growCap(old, need int) int {
	return max(need, 2*old)
}

// cropUTF8 cuts s to at most n bytes without splitting a UTF-8 sequence.
func cropUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

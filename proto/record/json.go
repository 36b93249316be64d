package record

import (
	"encoding/base64"
	"math"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// AppendDispatchedJSON appends the JSON form of a dispatched V record to dst
// — what MarshalJSON(Transform(TopicV, vin, payload)) gives, as JSON values
// (key order and spacing aside, which protojson varies on purpose) — by
// transcoding the payload's wire bytes instead of building and reflecting
// over a message tree (protojson takes ~100 µs for a 20-datum record).
//
// It covers the payloads AppendDispatched covers (canonical encodings that
// need none of the reference's transforms); for any other payload, or a
// created_at protojson would refuse, it returns ok == false and dst
// unchanged, and the caller takes the slow path.
func AppendDispatchedJSON(dst []byte, vin string, payload []byte) (out []byte, created CreatedAt, ok bool) {
	var st canonState
	if jsonPayload == nil || !canonPayload.walk(payload, 0, &st) {
		return dst, CreatedAt{}, false
	}
	out, ok = jsonPayload.append(dst, payload, 0, vin)
	if !ok {
		return dst, CreatedAt{}, false
	}
	return out, st.created, true
}

// jsonSchema is a message's fields as the JSON fast path needs them.
type jsonSchema struct {
	byNum []*jsonField
	// fields are the fields outside oneofs, in declaration order: protojson
	// (EmitUnpopulated) writes each of them, set or not.
	fields    []*jsonField
	timestamp bool // google.protobuf.Timestamp: an RFC 3339 string
	top       bool // Payload: vin comes from the certificate
}

type jsonField struct {
	key  string // `"jsonName":`
	kind protoreflect.Kind
	list bool
	// bit is the field's presence bit among jsonSchema.fields; -1 in a oneof.
	bit  int
	enum []string // quoted value names by number ("" for none)
	sub  *jsonSchema
	zero string // the JSON of the unset field
}

// jsonPayload is nil when the schema has something the fast path does not
// handle (it then never applies).
var jsonPayload = func() *jsonSchema {
	s, ok := buildJSON(payloadDesc, map[protoreflect.FullName]*jsonSchema{})
	if !ok {
		return nil
	}
	s.top = true
	return s
}()

func buildJSON(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]*jsonSchema) (*jsonSchema, bool) {
	if s, ok := seen[md.FullName()]; ok {
		return s, true
	}
	s := &jsonSchema{}
	seen[md.FullName()] = s
	if md.FullName() == "google.protobuf.Timestamp" {
		s.timestamp = true
		return s, true
	}
	fds := md.Fields()
	maxNum := 0
	for i := 0; i < fds.Len(); i++ {
		maxNum = max(maxNum, int(fds.Get(i).Number()))
	}
	if maxNum > 1<<12 {
		return nil, false
	}
	s.byNum = make([]*jsonField, maxNum+1)
	for i := 0; i < fds.Len(); i++ {
		fd := fds.Get(i)
		if fd.IsMap() || fd.IsList() && fd.Kind() != protoreflect.MessageKind || fd.HasOptionalKeyword() {
			return nil, false
		}
		f := &jsonField{key: strconv.Quote(fd.JSONName()) + ":", kind: fd.Kind(), list: fd.IsList(), bit: -1}
		switch fd.Kind() {
		case protoreflect.BoolKind:
			f.zero = "false"
		case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
			protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.FloatKind, protoreflect.DoubleKind:
			f.zero = "0"
		case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
			protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
			f.zero = `"0"`
		case protoreflect.StringKind, protoreflect.BytesKind:
			f.zero = `""`
		case protoreflect.EnumKind:
			vals := fd.Enum().Values()
			maxVal := 0
			for j := 0; j < vals.Len(); j++ {
				if n := int(vals.Get(j).Number()); n < 0 || n > 1<<12 {
					return nil, false
				} else {
					maxVal = max(maxVal, n)
				}
			}
			f.enum = make([]string, maxVal+1)
			for j := 0; j < vals.Len(); j++ {
				v := vals.Get(j)
				if f.enum[v.Number()] == "" { // the first name of an aliased number
					f.enum[v.Number()] = strconv.Quote(string(v.Name()))
				}
			}
			f.zero = f.enum[0]
			if f.zero == "" {
				f.zero = "0"
			}
		case protoreflect.MessageKind:
			sub, ok := buildJSON(fd.Message(), seen)
			if !ok {
				return nil, false
			}
			f.sub = sub
			f.zero = "null"
		default: // groups
			return nil, false
		}
		if f.list {
			f.zero = "[]"
		}
		if od := fd.ContainingOneof(); od == nil || od.IsSynthetic() {
			f.bit = len(s.fields)
			s.fields = append(s.fields, f)
		}
		s.byNum[fd.Number()] = f
	}
	if len(s.fields) > 64 {
		return nil, false
	}
	return s, true
}

// append appends the JSON object for b, an encoding the canonical walk has
// accepted. vin replaces the payload's own at the top level.
func (s *jsonSchema) append(dst, b []byte, depth int, vin string) ([]byte, bool) {
	if depth > maxDepth {
		return dst, false
	}
	if s.timestamp {
		return appendTimestamp(dst, b)
	}
	dst = append(dst, '{')
	var seen uint64
	var inList *jsonField // the repeated field whose array is open
	first := true
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || int(num) >= len(s.byNum) || s.byNum[num] == nil {
			return dst, false
		}
		b = b[n:]
		f := s.byNum[num]
		if inList != nil && inList != f {
			dst = append(dst, ']')
			inList = nil
		}
		if s.top && num == payloadVINField {
			// The certificate's VIN, written below with the unset fields.
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return dst, false
			}
			b = b[n:]
			continue
		}
		switch {
		case inList == f:
			dst = append(dst, ',')
		default:
			if !first {
				dst = append(dst, ',')
			}
			first = false
			dst = append(dst, f.key...)
			if f.list {
				dst = append(dst, '[')
				inList = f
			}
		}
		if f.bit >= 0 {
			seen |= 1 << f.bit
		}
		var ok bool
		if dst, n, ok = f.appendValue(dst, typ, b, depth); !ok {
			return dst, false
		}
		b = b[n:]
	}
	if inList != nil {
		dst = append(dst, ']')
	}
	for _, f := range s.fields {
		if seen&(1<<f.bit) != 0 {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, f.key...)
		if s.top && s.byNum[payloadVINField] == f {
			dst = appendJSONString(dst, vin)
			continue
		}
		dst = append(dst, f.zero...)
	}
	return append(dst, '}'), true
}

// appendValue appends the JSON value of f read from b (the bytes after its
// tag) and reports how many bytes it took.
func (f *jsonField) appendValue(dst []byte, typ protowire.Type, b []byte, depth int) ([]byte, int, bool) {
	switch typ {
	case protowire.VarintType:
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return dst, 0, false
		}
		switch f.kind {
		case protoreflect.BoolKind:
			return strconv.AppendBool(dst, v != 0), n, true
		case protoreflect.Int32Kind:
			return strconv.AppendInt(dst, int64(int32(v)), 10), n, true
		case protoreflect.Uint32Kind:
			return strconv.AppendUint(dst, uint64(uint32(v)), 10), n, true
		case protoreflect.Sint32Kind:
			return strconv.AppendInt(dst, int64(int32(protowire.DecodeZigZag(v&math.MaxUint32))), 10), n, true
		case protoreflect.Int64Kind:
			return appendQuoted(strconv.AppendInt(append(dst, '"'), int64(v), 10)), n, true
		case protoreflect.Uint64Kind:
			return appendQuoted(strconv.AppendUint(append(dst, '"'), v, 10)), n, true
		case protoreflect.Sint64Kind:
			return appendQuoted(strconv.AppendInt(append(dst, '"'), protowire.DecodeZigZag(v), 10)), n, true
		case protoreflect.EnumKind:
			if e := int64(int32(v)); e >= 0 && e < int64(len(f.enum)) && f.enum[e] != "" {
				return append(dst, f.enum[e]...), n, true
			}
			return strconv.AppendInt(dst, int64(int32(v)), 10), n, true
		}
	case protowire.Fixed32Type:
		v, n := protowire.ConsumeFixed32(b)
		if n < 0 {
			return dst, 0, false
		}
		switch f.kind {
		case protoreflect.FloatKind:
			return appendJSONFloat(dst, float64(math.Float32frombits(v)), 32), n, true
		case protoreflect.Fixed32Kind:
			return strconv.AppendUint(dst, uint64(v), 10), n, true
		case protoreflect.Sfixed32Kind:
			return strconv.AppendInt(dst, int64(int32(v)), 10), n, true
		}
	case protowire.Fixed64Type:
		v, n := protowire.ConsumeFixed64(b)
		if n < 0 {
			return dst, 0, false
		}
		switch f.kind {
		case protoreflect.DoubleKind:
			return appendJSONFloat(dst, math.Float64frombits(v), 64), n, true
		case protoreflect.Fixed64Kind:
			return appendQuoted(strconv.AppendUint(append(dst, '"'), v, 10)), n, true
		case protoreflect.Sfixed64Kind:
			return appendQuoted(strconv.AppendInt(append(dst, '"'), int64(v), 10)), n, true
		}
	case protowire.BytesType:
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return dst, 0, false
		}
		switch f.kind {
		case protoreflect.StringKind: // valid UTF-8: the canonical walk checked
			return appendJSONString(dst, v), n, true
		case protoreflect.BytesKind:
			dst = append(dst, '"')
			dst = base64.StdEncoding.AppendEncode(dst, v)
			return append(dst, '"'), n, true
		case protoreflect.MessageKind:
			out, ok := f.sub.append(dst, v, depth+1, "")
			return out, n, ok
		}
	}
	return dst, 0, false // a wire type that does not fit the field's kind
}

func appendQuoted(dst []byte) []byte { return append(dst, '"') }

// appendJSONFloat writes a float as protojson does: NaN and the infinities
// as strings; otherwise the shortest representation that reads back as the
// same float32 or float64, in exponent form below 1e-6 and from 1e21 on
// (with a one-digit exponent where it has one digit).
func appendJSONFloat(dst []byte, v float64, bits int) []byte {
	switch {
	case math.IsNaN(v):
		return append(dst, `"NaN"`...)
	case math.IsInf(v, 1):
		return append(dst, `"Infinity"`...)
	case math.IsInf(v, -1):
		return append(dst, `"-Infinity"`...)
	}
	format := byte('f')
	if a := math.Abs(v); a != 0 {
		if bits == 64 && (a < 1e-6 || a >= 1e21) || bits == 32 && (float32(a) < 1e-6 || float32(a) >= 1e21) {
			format = 'e'
		}
	}
	start := len(dst)
	dst = strconv.AppendFloat(dst, v, format, -1, bits)
	if format == 'e' {
		// strconv writes e-07; JSON readers and protojson write e-7.
		if n := len(dst); n-start >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// appendJSONString writes s, valid UTF-8, as a JSON string: quotes,
// backslashes and control characters escaped.
func appendJSONString[S ~string | ~[]byte](dst []byte, s S) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// Timestamp range protojson accepts: 0001-01-01T00:00:00Z to
// 9999-12-31T23:59:59Z.
const (
	minTimestampSeconds = -62135596800
	maxTimestampSeconds = 253402300799
)

// appendTimestamp writes a google.protobuf.Timestamp as protojson does
// (RFC 3339 in UTC, with 0, 3, 6 or 9 fractional digits); ok is false for
// one protojson refuses.
func appendTimestamp(dst, b []byte) ([]byte, bool) {
	var secs int64
	var nanos int32
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.VarintType {
			return dst, false
		}
		b = b[n:]
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return dst, false
		}
		b = b[n:]
		switch num {
		case 1:
			secs = int64(v)
		case 2:
			nanos = int32(v)
		default:
			return dst, false
		}
	}
	if secs < minTimestampSeconds || secs > maxTimestampSeconds || nanos < 0 || nanos > 999_999_999 {
		return dst, false
	}
	dst = append(dst, '"')
	start := len(dst)
	dst = time.Unix(secs, int64(nanos)).UTC().AppendFormat(dst, "2006-01-02T15:04:05.000000000")
	// Drop trailing zero groups: .123000000 → .123, .000000000 → nothing.
	for range 2 {
		if n := len(dst); n-start > 3 && string(dst[n-3:]) == "000" {
			dst = dst[:n-3]
		}
	}
	if n := len(dst); n-start > 4 && string(dst[n-4:]) == ".000" {
		dst = dst[:n-4]
	}
	return append(dst, 'Z', '"'), true
}

package record

import (
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

// CreatedAt is a record's created_at Timestamp as found on the wire.
type CreatedAt struct {
	Seconds int64
	Nanos   int32
	// Present is false when the record has no created_at.
	Present bool
}

// Valid reports whether the timestamp is present and in the range a
// google.protobuf.Timestamp may hold (years 1-9999, nanos in [0, 1e9)).
func (c CreatedAt) Valid() bool {
	const minSeconds, maxSeconds = -62135596800, 253402300799
	return c.Present && c.Seconds >= minSeconds && c.Seconds <= maxSeconds && c.Nanos >= 0 && c.Nanos < 1e9
}

// UnixMilli returns the timestamp in milliseconds since the epoch.
func (c CreatedAt) UnixMilli() int64 {
	return c.Seconds*1000 + int64(c.Nanos)/1e6
}

// AppendDispatched is the fast path of MarshalProto(Transform(topic, vin,
// payload)): when payload is already in the form proto.Marshal writes
// (known fields only, in field-number order, minimal varints, no zero
// values where proto3 omits them, one member per oneof, nothing the
// reference's transforms would change), decoding and re-encoding would
// only stamp the VIN, so it appends to dst the payload with the vin field
// spliced in and returns ok. Otherwise (and for topics other than V) it
// returns ok == false and dst unchanged; the caller takes the slow path.
//
// The vehicle SDK's encoder writes exactly this form, so nearly every
// record takes the fast path: a walk of the bytes and one copy instead of
// building and re-encoding a message tree (about 30x cheaper).
func AppendDispatched(dst []byte, topic, vin string, payload []byte) (out []byte, created CreatedAt, ok bool) {
	if topic != TopicV {
		return dst, CreatedAt{}, false
	}
	var st canonState
	if !canonPayload.walk(payload, 0, &st) {
		return dst, CreatedAt{}, false
	}
	created = st.created
	insertAt, skipTo := st.vinAt, st.vinEnd
	if skipTo < insertAt {
		skipTo = insertAt
	}
	dst = append(dst, payload[:insertAt]...)
	if vin != "" {
		dst = protowire.AppendTag(dst, payloadVINField, protowire.BytesType)
		dst = protowire.AppendString(dst, vin)
	}
	dst = append(dst, payload[skipTo:]...)
	return dst, created, true
}

// payloadVINField and payloadCreatedAtField are Payload's field numbers.
var (
	payloadDesc           = (&pb.Payload{}).ProtoReflect().Descriptor()
	payloadVINField       = payloadDesc.Fields().ByName("vin").Number()
	payloadCreatedAtField = payloadDesc.Fields().ByName("created_at").Number()
)

// canonKind is how a known field is checked for canonical form.
type canonKind uint8

const (
	canonInt64   canonKind = iota + 1 // int64, uint64: any varint
	canonInt32                        // int32, enum: sign-extended to 64 bits
	canonUint32                       // uint32, sint32: at most 32 bits
	canonSint64                       // sint64: any varint
	canonBool                         // 0 or 1
	canonFixed32                      // fixed32, sfixed32, float
	canonFixed64                      // fixed64, sfixed64, double
	canonString                       // valid UTF-8
	canonBytes
	canonMessage
)

type canonField struct {
	kind canonKind
	// implicit: proto3 field without presence, whose zero value proto.Marshal
	// does not write.
	implicit bool
	// repeated non-packed field (messages, strings): consecutive entries.
	repeated bool
	// oneof is 1 + the index of the field's oneof, 0 when not in one.
	oneof int
	sub   *canonSchema
	// scientific: a string the reference rewrites when it is in scientific
	// notation (Value.string_value).
	scientific bool
	// datumKey: the Datum.key enum, whose Location value makes the
	// reference parse a string value into a location.
	datumKey bool
}

// canonSchema is a message's known fields by number. A message with a
// field the fast path does not handle (maps, packed scalars, groups) has
// unsupported set and always takes the slow path.
type canonSchema struct {
	fields      []canonField
	unsupported bool
	// stringMember is the oneof member whose presence, together with a
	// Location key in the enclosing Datum, triggers the location transform.
	stringMember protowire.Number
	top          bool // Payload: track the vin splice point and created_at
}

var canonPayload = func() *canonSchema {
	s := buildCanon(payloadDesc, map[protoreflect.FullName]*canonSchema{})
	s.top = true
	datum := s.fields[payloadDesc.Fields().ByName("data").Number()].sub
	datumDesc := (&pb.Datum{}).ProtoReflect().Descriptor()
	datum.fields[datumDesc.Fields().ByName("key").Number()].datumKey = true
	valueDesc := (&pb.Value{}).ProtoReflect().Descriptor()
	value := datum.fields[datumDesc.Fields().ByName("value").Number()].sub
	strNum := valueDesc.Fields().ByName("string_value").Number()
	value.fields[strNum].scientific = true
	value.stringMember = strNum
	return s
}()

func buildCanon(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]*canonSchema) *canonSchema {
	if s, ok := seen[md.FullName()]; ok {
		return s
	}
	s := &canonSchema{}
	seen[md.FullName()] = s
	fds := md.Fields()
	maxNum := 0
	for i := 0; i < fds.Len(); i++ {
		maxNum = max(maxNum, int(fds.Get(i).Number()))
	}
	s.fields = make([]canonField, maxNum+1)
	for i := 0; i < fds.Len(); i++ {
		fd := fds.Get(i)
		f := canonField{implicit: !fd.HasPresence(), repeated: fd.IsList()}
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			f.oneof = od.Index() + 1
			if f.oneof > 64 {
				s.unsupported = true
			}
		}
		switch fd.Kind() {
		case protoreflect.Int64Kind, protoreflect.Uint64Kind:
			f.kind = canonInt64
		case protoreflect.Sint64Kind:
			f.kind = canonSint64
		case protoreflect.Int32Kind, protoreflect.EnumKind:
			f.kind = canonInt32
		case protoreflect.Uint32Kind, protoreflect.Sint32Kind:
			f.kind = canonUint32
		case protoreflect.BoolKind:
			f.kind = canonBool
		case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
			f.kind = canonFixed32
		case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
			f.kind = canonFixed64
		case protoreflect.StringKind:
			f.kind = canonString
		case protoreflect.BytesKind:
			f.kind = canonBytes
		case protoreflect.MessageKind:
			f.kind = canonMessage
			f.implicit = false
			f.sub = buildCanon(fd.Message(), seen)
		default:
			s.unsupported = true
		}
		if fd.IsMap() || (fd.IsList() && f.kind != canonString && f.kind != canonBytes && f.kind != canonMessage) {
			// Maps are written in random order, packed scalars as one
			// run: neither is worth a fast path here.
			s.unsupported = true
		}
		s.fields[fd.Number()] = f
	}
	return s
}

// canonState is what the walk reports besides ok.
type canonState struct {
	created CreatedAt
	// vinAt is the offset of the first top-level field numbered >= vin
	// (where the vin field goes); vinEnd the end of an existing vin field.
	vinAt, vinEnd int
	// sawString: the message just walked set its stringMember.
	sawString bool
}

// walk reports whether b is a canonical encoding of s.
func (s *canonSchema) walk(b []byte, depth int, st *canonState) bool {
	if s.unsupported || depth > maxDepth {
		return false
	}
	full := len(b)
	var (
		last      protowire.Number
		oneofs    uint64
		sawString bool
		location  bool
	)
	if s.top {
		st.vinAt, st.vinEnd = full, 0
	}
	for len(b) > 0 {
		start := full - len(b)
		// One-byte varints, the common case, are read inline here and below.
		tag, n := uint64(b[0]), 1
		if tag >= 0x80 {
			tag, n = minimalVarintLong(b)
		}
		if n < 0 || tag>>3 > uint64(protowire.MaxValidNumber) {
			return false
		}
		num, typ := protowire.Number(tag>>3), protowire.Type(tag&7)
		if int(num) >= len(s.fields) || s.fields[num].kind == 0 || num < last || (num == last && !s.fields[num].repeated) {
			return false
		}
		f := &s.fields[num]
		last = num
		if f.oneof > 0 {
			bit := uint64(1) << (f.oneof - 1)
			if oneofs&bit != 0 {
				return false
			}
			oneofs |= bit
		}
		if s.top && num >= payloadVINField && st.vinAt == full {
			st.vinAt = start
		}
		b = b[n:]
		switch f.kind {
		case canonFixed32:
			v, n := protowire.ConsumeFixed32(b)
			if n < 0 || typ != protowire.Fixed32Type || (f.implicit && v == 0) {
				return false
			}
			b = b[n:]
		case canonFixed64:
			v, n := protowire.ConsumeFixed64(b)
			if n < 0 || typ != protowire.Fixed64Type || (f.implicit && v == 0) {
				return false
			}
			b = b[n:]
		case canonString, canonBytes, canonMessage:
			l, n := uint64(0), 1
			if len(b) > 0 && b[0] < 0x80 {
				l = uint64(b[0])
			} else if l, n = minimalVarintLong(b); n < 0 {
				return false
			}
			if typ != protowire.BytesType || l > uint64(len(b)-n) {
				return false
			}
			v := b[n : n+int(l)]
			b = b[n+int(l):]
			switch f.kind {
			case canonString:
				if (f.implicit && len(v) == 0) || !utf8.Valid(v) || (f.scientific && isScientific(v)) {
					return false
				}
				if num == s.stringMember {
					sawString = true
				}
			case canonBytes:
				if f.implicit && len(v) == 0 {
					return false
				}
			case canonMessage:
				if !f.sub.walk(v, depth+1, st) {
					return false
				}
				if location && st.sawString {
					return false
				}
				if s.top && num == payloadCreatedAtField {
					st.created = parseCreatedAt(v)
				}
			}
		default:
			v, n := uint64(0), 1
			if len(b) > 0 && b[0] < 0x80 {
				v = uint64(b[0])
			} else if v, n = minimalVarintLong(b); n < 0 {
				return false
			}
			if typ != protowire.VarintType || (f.implicit && v == 0) {
				return false
			}
			switch f.kind {
			case canonInt32:
				if uint64(int64(int32(v))) != v {
					return false
				}
				if f.datumKey && v == uint64(pb.Field_Location) {
					location = true
				}
			case canonUint32:
				if v > math.MaxUint32 {
					return false
				}
			case canonBool:
				if v > 1 {
					return false
				}
			}
			b = b[n:]
		}
		if s.top && num == payloadVINField {
			st.vinEnd = full - len(b)
		}
	}
	st.sawString = sawString
	return true
}

// minimalVarintLong reads a varint at the start of b; n < 0 when there is
// none or it is not in its shortest form (proto.Marshal would rewrite it).
func minimalVarintLong(b []byte) (uint64, int) {
	v, n := protowire.ConsumeVarint(b)
	if n >= 0 && n != protowire.SizeVarint(v) {
		return 0, -1
	}
	return v, n
}

// parseCreatedAt reads a canonical Timestamp's seconds (1) and nanos (2).
func parseCreatedAt(b []byte) CreatedAt {
	c := CreatedAt{Present: true}
	for len(b) > 0 {
		num, _, n := protowire.ConsumeTag(b)
		b = b[n:]
		v, n := protowire.ConsumeVarint(b)
		b = b[n:]
		switch num {
		case 1:
			c.Seconds = int64(v)
		case 2:
			c.Nanos = int32(v)
		}
	}
	return c
}

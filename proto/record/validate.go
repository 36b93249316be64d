package record

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

// Validate decides, on the hot path, whether payload is a well-formed record
// of topic: nil means ack, an error means the vehicle gets an error reply.
// signals is the reference's count of signals in the record, taken in the
// same walk: the datums of a V record, the alerts of an alerts record, 0
// for other types.
//
// It accepts exactly what proto.Unmarshal (what the reference server runs)
// accepts, walking the wire format against the schema without building
// messages, so it allocates nothing on success. The generated vtproto
// unmarshalers were not used here on purpose: they allocate one oneof
// wrapper per datum and a Timestamp per record, they reject known fields
// sent with another wire type (proto.Unmarshal keeps them as unknown
// fields), and they skip the UTF-8 check proto.Unmarshal does on strings,
// so the ack/error answer would differ from the reference's.
//
// Unknown topics return ErrUnknownTopic; malformed payloads return an error
// wrapping both ErrInvalidPayload and the decode error.
func Validate(topic []byte, payload []byte) (signals int, err error) {
	s := schemaFor(topic)
	if s == nil {
		return 0, fmt.Errorf("record: topic %q: %w", topic, ErrUnknownTopic)
	}
	if signals, err = s.walk(payload, 0); err != nil {
		return 0, fmt.Errorf("record: %q payload: %w: %w", topic, ErrInvalidPayload, err)
	}
	return signals, nil
}

// schemaFor maps a topic to its root schema without allocating.
func schemaFor(topic []byte) *msgSchema {
	switch string(topic) {
	case TopicV:
		return schemaPayload
	case TopicAlerts:
		return schemaAlerts
	case TopicErrors:
		return schemaErrors
	case TopicConnectivity:
		return schemaConnectivity
	}
	return nil
}

// Decode errors. They mirror the cases in which proto.Unmarshal fails.
var (
	errInvalidUTF8  = errors.New("string field contains invalid UTF-8")
	errFieldNumber  = errors.New("invalid field number")
	errEndGroup     = errors.New("unexpected end group")
	errTooDeep      = errors.New("message nesting too deep")
	errPackedLength = errors.New("truncated packed repeated field")
)

// valueKind is what a known field's value must look like on the wire.
type valueKind uint8

const (
	kindVarint valueKind = iota + 1
	kindFixed32
	kindFixed64
	kindString  // length-delimited, must be valid UTF-8 (proto3 string)
	kindBytes   // length-delimited, anything
	kindMessage // length-delimited, contents walked with sub
)

type fieldSchema struct {
	kind valueKind
	// packable repeated scalars also accept the packed (length-delimited)
	// encoding, as proto.Unmarshal does.
	packable bool
	sub      *msgSchema
}

// msgSchema is a dense table of a message's known fields by number.
type msgSchema struct {
	fields []fieldSchema // index = field number; kind 0 = unknown
	// signalField, when not 0, is the repeated field whose entries the
	// walk counts as signals (top level only).
	signalField protowire.Number
}

// maxDepth is far above the schema's real nesting (Payload→Datum→Value→
// LocationValue) and matches nothing in particular; it only bounds recursion.
const maxDepth = 32

var (
	schemaPayload      = withSignals((&pb.Payload{}).ProtoReflect().Descriptor(), "data")
	schemaAlerts       = withSignals((&pb.VehicleAlerts{}).ProtoReflect().Descriptor(), "alerts")
	schemaErrors       = buildSchema((&pb.VehicleErrors{}).ProtoReflect().Descriptor())
	schemaConnectivity = buildSchema((&pb.VehicleConnectivity{}).ProtoReflect().Descriptor())
)

// withSignals builds md's schema with field, a repeated field, counted as
// the record's signals. Each root schema is built with its own memo, so
// no sub-schema shared with another root is marked.
func withSignals(md protoreflect.MessageDescriptor, field protoreflect.Name) *msgSchema {
	s := buildSchema(md)
	s.signalField = md.Fields().ByName(field).Number()
	return s
}

// buildSchema derives the walker's tables from the generated descriptors, so
// the validator can never drift from the .proto files.
func buildSchema(md protoreflect.MessageDescriptor) *msgSchema {
	return buildSchemaMemo(md, map[protoreflect.FullName]*msgSchema{})
}

func buildSchemaMemo(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]*msgSchema) *msgSchema {
	if s, ok := seen[md.FullName()]; ok {
		return s
	}
	s := &msgSchema{}
	seen[md.FullName()] = s
	fds := md.Fields()
	maxNum := 0
	for i := 0; i < fds.Len(); i++ {
		maxNum = max(maxNum, int(fds.Get(i).Number()))
	}
	s.fields = make([]fieldSchema, maxNum+1)
	for i := 0; i < fds.Len(); i++ {
		fd := fds.Get(i)
		f := fieldSchema{}
		switch fd.Kind() {
		case protoreflect.BoolKind, protoreflect.EnumKind,
			protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Uint32Kind,
			protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Uint64Kind:
			f.kind = kindVarint
		case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
			f.kind = kindFixed32
		case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
			f.kind = kindFixed64
		case protoreflect.StringKind:
			f.kind = kindString
		case protoreflect.BytesKind:
			f.kind = kindBytes
		case protoreflect.MessageKind:
			// Map fields arrive as repeated entry messages; their key and
			// value strings are UTF-8 checked like any other string.
			f.kind = kindMessage
			f.sub = buildSchemaMemo(fd.Message(), seen)
		default:
			// Groups do not occur in this proto3 schema; treating the field
			// as unknown keeps the walker total if one ever appears.
			continue
		}
		f.packable = fd.IsList() && f.kind != kindString && f.kind != kindBytes && f.kind != kindMessage
		s.fields[fd.Number()] = f
	}
	return s
}

// walk checks b as an encoded message of schema s and counts the entries of
// s.signalField.
func (s *msgSchema) walk(b []byte, depth int) (signals int, err error) {
	if depth > maxDepth {
		return 0, errTooDeep
	}
	for len(b) > 0 {
		var (
			num protowire.Number
			typ protowire.Type
			n   int
		)
		if b[0] < 0x80 && b[0]>>3 != 0 {
			// One-byte tag (fields 1-15): the common case, inlined.
			num, typ, n = protowire.Number(b[0]>>3), protowire.Type(b[0]&7), 1
		} else if num, typ, n = protowire.ConsumeTag(b); n < 0 {
			return 0, protowire.ParseError(n)
		}
		if num > protowire.MaxValidNumber {
			return 0, errFieldNumber
		}
		if typ == protowire.EndGroupType {
			return 0, errEndGroup
		}
		if num == s.signalField && typ == protowire.BytesType {
			signals++
		}
		b = b[n:]
		var f *fieldSchema
		if int(num) < len(s.fields) && s.fields[num].kind != 0 {
			f = &s.fields[num]
		}
		if n, err = f.consume(num, typ, b, depth); err != nil {
			return 0, err
		}
		b = b[n:]
	}
	return signals, nil
}

// consume checks one field value of wire type typ at the start of b and
// returns its length. A nil f, or a wire type that does not fit the field,
// is an unknown field: proto.Unmarshal keeps its bytes without looking
// inside, so only its framing is checked.
func (f *fieldSchema) consume(num protowire.Number, typ protowire.Type, b []byte, depth int) (int, error) {
	if f != nil {
		switch {
		case typ == protowire.VarintType && f.kind == kindVarint:
			if len(b) > 0 && b[0] < 0x80 {
				return 1, nil
			}
			return check(protowire.ConsumeVarint(b))
		case typ == protowire.Fixed32Type && f.kind == kindFixed32:
			return check(protowire.ConsumeFixed32(b))
		case typ == protowire.Fixed64Type && f.kind == kindFixed64:
			return check(protowire.ConsumeFixed64(b))
		case typ == protowire.BytesType && f.kind != kindVarint && f.kind != kindFixed32 && f.kind != kindFixed64:
			var (
				v []byte
				n int
			)
			if len(b) > 0 && b[0] < 0x80 && int(b[0]) < len(b) {
				// One-byte length, the whole value present: inlined.
				v, n = b[1:1+b[0]], 1+int(b[0])
			} else if v, n = protowire.ConsumeBytes(b); n < 0 {
				return 0, protowire.ParseError(n)
			}
			switch f.kind {
			case kindString:
				if !utf8.Valid(v) {
					return 0, errInvalidUTF8
				}
			case kindMessage:
				if _, err := f.sub.walk(v, depth+1); err != nil {
					return 0, err
				}
			}
			return n, nil
		case typ == protowire.BytesType && f.packable:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return 0, protowire.ParseError(n)
			}
			if err := checkPacked(f.kind, v); err != nil {
				return 0, err
			}
			return n, nil
		}
	}
	return check(0, protowire.ConsumeFieldValue(num, typ, b))
}

// checkPacked checks the contents of a packed repeated scalar field.
func checkPacked(kind valueKind, v []byte) error {
	for len(v) > 0 {
		var n int
		switch kind {
		case kindVarint:
			_, n = protowire.ConsumeVarint(v)
		case kindFixed32:
			_, n = protowire.ConsumeFixed32(v)
		case kindFixed64:
			_, n = protowire.ConsumeFixed64(v)
		default:
			return errPackedLength
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		v = v[n:]
	}
	return nil
}

// check turns protowire's negative lengths into errors.
func check[T any](_ T, n int) (int, error) {
	if n < 0 {
		return 0, protowire.ParseError(n)
	}
	return n, nil
}

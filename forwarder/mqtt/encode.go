package mqtt

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
	"github.com/fleet-telemetry/fleet-telemetry/proto/record"
)

// Message is one MQTT publish: a topic and its JSON payload.
type Message struct {
	Topic   string
	Payload []byte
}

// ErrRefused marks a publish Encode leaves out: a value JSON cannot hold
// (NaN, ±Inf) or a topic MQTT forbids (a vehicle-chosen alert or error name
// with '+', '#', U+0000 or invalid UTF-8, or a topic over 65,535 bytes).
// Publishing such a topic would make the broker drop the connection, and so
// stall every record behind it.
var ErrRefused = errors.New("mqtt: publish refused")

// maxTopicBytes is MQTT's limit on a topic name (a 16-bit length).
const maxTopicBytes = 65535

// Encode decodes a record's payload (with the reference's transforms, see
// record.Transform) and returns its publishes under topicBase:
//
//   - V: <base>/<VIN>/v/<Field name> per datum (the last datum of a field
//     wins), its value as JSON (see datumValue);
//   - alerts: <base>/<VIN>/alerts/<name>/current, the alert of that name
//     with the latest StartedAt (ties keep the first; alerts without one
//     are never current), then <base>/<VIN>/alerts/<name>/history, every
//     alert of that name in payload order;
//   - errors: <base>/<VIN>/errors/<name> per error, in payload order;
//   - connectivity: <base>/<VIN>/connectivity.
//
// refused lists the publishes left out (each wraps ErrRefused and names the
// topic); err is set only when the payload cannot be decoded, and then
// there are no messages.
func Encode(recordType, vin, topicBase string, payload []byte) (msgs []Message, refused []error, err error) {
	m, err := record.Transform(recordType, vin, payload)
	if err != nil {
		return nil, nil, err
	}
	e := encoder{prefix: topicBase + "/" + vin + "/"}
	switch msg := m.(type) {
	case *pb.Payload:
		e.vehicleData(msg)
	case *pb.VehicleAlerts:
		e.alerts(msg)
	case *pb.VehicleErrors:
		e.errors(msg)
	case *pb.VehicleConnectivity:
		e.connectivity(msg)
	default:
		return nil, nil, fmt.Errorf("mqtt: record type %q has no MQTT form", recordType)
	}
	return e.msgs, e.refused, nil
}

type encoder struct {
	prefix  string
	msgs    []Message
	refused []error
}

// add JSON-encodes v and appends it as topic's publish, unless the topic or
// the value is refused.
func (e *encoder) add(topic string, v any) {
	if err := checkTopic(topic); err != nil {
		e.refused = append(e.refused, err)
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		e.refused = append(e.refused, fmt.Errorf("%w: topic %q: value has no JSON form: %v", ErrRefused, topic, err))
		return
	}
	e.msgs = append(e.msgs, Message{Topic: topic, Payload: b})
}

// checkTopic refuses a topic name MQTT does not allow in a PUBLISH.
func checkTopic(topic string) error {
	switch {
	case len(topic) > maxTopicBytes:
		return fmt.Errorf("%w: topic of %d bytes (at most %d)", ErrRefused, len(topic), maxTopicBytes)
	case !utf8.ValidString(topic):
		return fmt.Errorf("%w: topic %q is not valid UTF-8", ErrRefused, topic)
	case strings.ContainsAny(topic, "+#\x00"):
		return fmt.Errorf("%w: topic %q holds a wildcard (+, #) or U+0000", ErrRefused, topic)
	}
	return nil
}

func (e *encoder) vehicleData(p *pb.Payload) {
	// The last datum of a field wins; topics go out in the order their
	// field first appeared.
	type entry struct {
		key   pb.Field
		value *pb.Value
	}
	var order []entry
	index := make(map[pb.Field]int, len(p.GetData()))
	for _, d := range p.GetData() {
		if i, ok := index[d.GetKey()]; ok {
			order[i].value = d.GetValue()
			continue
		}
		index[d.GetKey()] = len(order)
		order = append(order, entry{d.GetKey(), d.GetValue()})
	}
	for _, en := range order {
		e.add(e.prefix+"v/"+fieldName(en.key), datumValue(en.value))
	}
}

// fieldName is a Field's enum name, or its number in decimal when the
// schema does not know it.
func fieldName(f pb.Field) string {
	if d := f.Descriptor().Values().ByNumber(protoreflect.EnumNumber(f)); d != nil {
		return string(d.Name())
	}
	return strconv.Itoa(int(f))
}

// Value oneof members whose enum is written by name, or as its number in a
// JSON string when the schema does not know the number. Every other enum
// member is written by name or, unknown, as a JSON number.
var namedEnumMembers = map[protoreflect.FieldNumber]bool{
	9: true, 11: true, 12: true, 13: true, 14: true, 15: true, 16: true, 17: true, 18: true, 19: true,
	22: true, 23: true, 24: true, 25: true, 26: true, 27: true, 28: true, 29: true, 30: true, 32: true,
}

// location and doors are the JSON objects of those two Value members (their
// keys in the sorted order encoding/json gives a map's).
type location struct {
	Latitude  float64 `json:"latitude"`
	Longitude float64 `json:"longitude"`
}

type doors struct {
	DriverFront    bool
	DriverRear     bool
	PassengerFront bool
	PassengerRear  bool
	TrunkFront     bool
	TrunkRear      bool
}

// datumValue is what a datum's value publishes as, in encoding/json's
// terms: strings, numbers and booleans as themselves; invalid as null;
// location as {"latitude","longitude"}; doors as an object of its six
// booleans; time as "HH:MM:SS"; enums by name; any other message as an
// object of its set fields by proto name; a Value with no member set (or
// an absent one) as {}.
func datumValue(v *pb.Value) any {
	switch x := v.GetValue().(type) {
	case *pb.Value_StringValue:
		return x.StringValue
	case *pb.Value_IntValue:
		return x.IntValue
	case *pb.Value_LongValue:
		return x.LongValue
	case *pb.Value_FloatValue:
		return x.FloatValue
	case *pb.Value_DoubleValue:
		return x.DoubleValue
	case *pb.Value_BooleanValue:
		return x.BooleanValue
	case *pb.Value_Invalid:
		return nil
	case *pb.Value_LocationValue:
		return location{x.LocationValue.GetLatitude(), x.LocationValue.GetLongitude()}
	case *pb.Value_DoorValue:
		d := x.DoorValue
		return doors{d.GetDriverFront(), d.GetDriverRear(), d.GetPassengerFront(), d.GetPassengerRear(), d.GetTrunkFront(), d.GetTrunkRear()}
	case *pb.Value_TimeValue:
		t := x.TimeValue
		return fmt.Sprintf("%02d:%02d:%02d", t.GetHour(), t.GetMinute(), t.GetSecond())
	case nil:
		return map[string]any{}
	}
	m := v.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("value"))
	if fd == nil { // cannot happen: a member is set
		return map[string]any{}
	}
	if fd.Kind() == protoreflect.EnumKind && namedEnumMembers[fd.Number()] {
		n := m.Get(fd).Enum()
		if d := fd.Enum().Values().ByNumber(n); d != nil {
			return string(d.Name())
		}
		return strconv.Itoa(int(n))
	}
	return reflectValue(fd, m.Get(fd))
}

// reflectValue is a field's value for the generic form: enums by name (a
// number the schema does not know as a JSON number), messages as objects
// of their set fields.
func reflectValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return v.Bool()
	case protoreflect.StringKind:
		return v.String()
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind:
		return v.Int()
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
		return v.Uint()
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return v.Float()
	case protoreflect.BytesKind:
		return v.Bytes()
	case protoreflect.EnumKind:
		if d := fd.Enum().Values().ByNumber(v.Enum()); d != nil {
			return string(d.Name())
		}
		return int32(v.Enum())
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return messageObject(v.Message())
	}
	return nil
}

// messageObject is an object of m's set fields by proto name. (The Value
// members are singular; a repeated or map field would need its own form
// and is left out.)
func messageObject(m protoreflect.Message) map[string]any {
	out := map[string]any{}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Cardinality() == protoreflect.Repeated {
			return true
		}
		out[string(fd.Name())] = reflectValue(fd, v)
		return true
	})
	return out
}

// alert is one alert's JSON object.
type alert struct {
	Audiences []string `json:"Audiences"`
	EndedAt   string   `json:"EndedAt,omitempty"`
	StartedAt string   `json:"StartedAt,omitempty"`
}

func newAlert(a *pb.VehicleAlert) alert {
	out := alert{EndedAt: rfc3339(a.GetEndedAt()), StartedAt: rfc3339(a.GetStartedAt())}
	if len(a.GetAudiences()) > 0 {
		out.Audiences = make([]string, len(a.GetAudiences()))
		for i, au := range a.GetAudiences() {
			out.Audiences[i] = enumString(au)
		}
	}
	return out
}

// enumString is an enum's name, or its number in decimal when the schema
// does not know it (what the generated String methods return).
func enumString(e protoreflect.Enum) string {
	n := e.Number()
	if d := e.Descriptor().Values().ByNumber(n); d != nil {
		return string(d.Name())
	}
	return strconv.Itoa(int(n))
}

// rfc3339 is ts in UTC to the second; "" (left out) when ts is unset.
func rfc3339(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return asTime(ts).Format(time.RFC3339)
}

// asTime is ts as a time.Time in UTC (zero seconds when unset).
func asTime(ts *timestamppb.Timestamp) time.Time {
	return time.Unix(ts.GetSeconds(), int64(ts.GetNanos())).UTC()
}

func (e *encoder) alerts(p *pb.VehicleAlerts) {
	type group struct {
		name    string
		current *pb.VehicleAlert
		history []alert
	}
	var groups []*group
	byName := map[string]*group{}
	for _, a := range p.GetAlerts() {
		g := byName[a.GetName()]
		if g == nil {
			g = &group{name: a.GetName()}
			byName[g.name] = g
			groups = append(groups, g)
		}
		g.history = append(g.history, newAlert(a))
		if a.GetStartedAt() != nil && (g.current == nil || asTime(a.GetStartedAt()).After(asTime(g.current.GetStartedAt()))) {
			g.current = a
		}
	}
	base := e.prefix + "alerts/"
	for _, g := range groups {
		if g.current != nil {
			e.add(base+g.name+"/current", newAlert(g.current))
		}
	}
	for _, g := range groups {
		e.add(base+g.name+"/history", g.history)
	}
}

// vehicleError is one error's JSON object.
type vehicleError struct {
	Body      string            `json:"Body"`
	CreatedAt string            `json:"CreatedAt,omitempty"`
	Tags      map[string]string `json:"Tags"`
}

func (e *encoder) errors(p *pb.VehicleErrors) {
	for _, ve := range p.GetErrors() {
		e.add(e.prefix+"errors/"+ve.GetName(), vehicleError{Body: ve.GetBody(), CreatedAt: rfc3339(ve.GetCreatedAt()), Tags: ve.GetTags()})
	}
}

// connectivity is a connectivity event's JSON object; CreatedAt is always
// there (the Unix epoch when unset).
type connectivity struct {
	ConnectionID string `json:"ConnectionId"`
	CreatedAt    string `json:"CreatedAt"`
	Status       string `json:"Status"`
}

func (e *encoder) connectivity(p *pb.VehicleConnectivity) {
	e.add(e.prefix+"connectivity", connectivity{
		ConnectionID: p.GetConnectionId(),
		CreatedAt:    asTime(p.GetCreatedAt()).Format(time.RFC3339),
		Status:       enumString(p.GetStatus()),
	})
}

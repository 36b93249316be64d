package forwarder

import (
	"encoding/binary"
	"fmt"
	"maps"
	"strconv"
	"sync/atomic"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleet-telemetry/fleet-telemetry/proto/record"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// Header is one Kafka header / Pub/Sub attribute.
type Header struct {
	Key, Value string
}

// Message is a record as every sink hands it over, byte-compatible with the
// reference server: the dispatched protobuf (VIN stamped from the
// certificate, the reference's transforms applied) or its JSON form, keyed
// by VIN, with the reference's metadata.
type Message struct {
	// Seq is the record's spool sequence number.
	Seq uint64
	// RecordType is the record type ("V", "alerts", ...).
	RecordType string
	// Topic is "<namespace>_<record type>" (a Kinesis stream name may be
	// configured differently; see forwarder/kinesis).
	Topic string
	// Key is the VIN (Kafka key, Kinesis partition key).
	Key string
	// Value is the payload consumers read.
	Value []byte
	// Headers are, in this order: vin, receivedat, timestamp, txid, txtype,
	// version, device_client_version.
	Headers []Header
}

// RecordVersion is the reference's record format version header; every
// record it has ever written carries "0".
const RecordVersion = "0"

// Encoder turns spool records into Messages.
type Encoder struct {
	// Namespace prefixes topic names (the reference's "namespace").
	Namespace string
	// JSON sends the decoded JSON form instead of protobuf (the reference's
	// "transmit_decoded_records").
	JSON bool
}

// Encode builds the Message for r. An error means the stored payload cannot
// be decoded (it was validated before it was acked, so this is a damaged
// spool or a bug); sinks skip such records and count them.
func (e Encoder) Encode(r *spool.Record) (Message, error) {
	var dst []byte
	if string(r.Topic) == record.TopicV { // room for the fast paths' output
		n := len(r.Payload) + len(r.VIN) + 2 + binary.MaxVarintLen64
		if e.JSON {
			n = 4*len(r.Payload) + 256
		}
		dst = make([]byte, 0, n)
	}
	value, createdMs, err := e.AppendValue(dst, r)
	if err != nil {
		return Message{}, err
	}
	recordType := string(r.Topic)
	h := Headers(r, createdMs)
	return Message{
		Seq:        r.Seq,
		RecordType: recordType,
		Topic:      e.Namespace + "_" + recordType,
		Key:        r.VIN,
		Value:      value,
		Headers:    h[:],
	}, nil
}

// Headers are the Message headers of r, whose value AppendValue reported
// created at createdMs (Unix milliseconds).
func Headers(r *spool.Record, createdMs int64) [7]Header {
	return [7]Header{
		{"vin", r.VIN},
		{"receivedat", strconv.FormatInt(r.ReceivedAtMs, 10)},
		{"timestamp", strconv.FormatInt(createdMs, 10)},
		{"txid", string(r.TxID)},
		{"txtype", string(r.Topic)},
		{"version", RecordVersion},
		{"device_client_version", r.ClientVersion},
	}
}

// AppendValue appends the Message value of r to dst (Encode's Value) and
// returns it with the timestamp header's value, the record's created-at in
// Unix milliseconds. A sink that builds a whole batch in one buffer uses it
// instead of Encode. With dst nil, a slow-path value is returned as
// marshalled, without a copy.
func (e Encoder) AppendValue(dst []byte, r *spool.Record) ([]byte, int64, error) {
	// The reference always wrote timestamp "0"; ours is the record's own
	// created-at, falling back to the envelope's.
	createdMs := int64(r.CreatedAtSec) * 1000
	if string(r.Topic) == record.TopicV {
		// Without decoding the record (see record.AppendDispatched and
		// record.AppendDispatchedJSON).
		var out []byte
		var created record.CreatedAt
		var ok bool
		if e.JSON {
			out, created, ok = record.AppendDispatchedJSON(dst, r.VIN, r.Payload)
		} else {
			out, created, ok = record.AppendDispatched(dst, record.TopicV, r.VIN, r.Payload)
		}
		if ok {
			if created.Valid() {
				createdMs = created.UnixMilli()
			}
			return out, createdMs, nil
		}
	}
	msg, err := record.Transform(string(r.Topic), r.VIN, r.Payload)
	if err != nil {
		return dst, 0, fmt.Errorf("forwarder: decode record %d: %w", r.Seq, err)
	}
	var value []byte
	if e.JSON {
		value, err = record.MarshalJSON(msg)
	} else {
		value, err = record.MarshalProto(msg)
	}
	if err != nil {
		return dst, 0, fmt.Errorf("forwarder: encode record %d: %w", r.Seq, err)
	}
	if ts := createdAt(msg); ts != nil && ts.IsValid() {
		createdMs = ts.AsTime().UnixMilli()
	}
	if dst == nil {
		return value, createdMs, nil
	}
	return append(dst, value...), createdMs, nil
}

// NextValue appends r's value to *buf (AppendValue) and returns it as a
// slice of its own: capped, so later appends cannot write into it, and
// still valid when a later append moves *buf to a bigger array. A sink
// builds a whole batch's values in one buffer this way. On error *buf is
// unchanged.
func (e Encoder) NextValue(buf *[]byte, r *spool.Record) (value []byte, createdMs int64, err error) {
	start := len(*buf)
	b, createdMs, err := e.AppendValue(*buf, r)
	if err != nil {
		return nil, 0, err
	}
	*buf = b
	return b[start:len(b):len(b)], createdMs, nil
}

// ValuesSize is about what batch's protobuf values take (payloads plus the
// VINs spliced in): a buffer for NextValue.
func ValuesSize(batch []spool.Record) int {
	n := 0
	for i := range batch {
		n += len(batch[i].Payload) + len(batch[i].VIN) + 2
	}
	return n
}

// createdAt finds a record's created_at, whatever its type.
func createdAt(m proto.Message) *timestamppb.Timestamp {
	if c, ok := m.(interface {
		GetCreatedAt() *timestamppb.Timestamp
	}); ok {
		return c.GetCreatedAt()
	}
	return nil
}

// TopicNames gives each record type its topic name, "<namespace>_<record
// type>", built once per type. Safe for concurrent use: lookups take no
// lock.
type TopicNames struct {
	names atomic.Pointer[map[string]string]
}

// maxTopicNames bounds the names kept (record types are a handful).
const maxTopicNames = 64

// Of returns the topic name of recordType under e's namespace.
func (t *TopicNames) Of(e Encoder, recordType []byte) string {
	cur := t.names.Load()
	if cur != nil {
		if n, ok := (*cur)[string(recordType)]; ok {
			return n
		}
	}
	n := e.Namespace + "_" + string(recordType)
	if cur == nil || len(*cur) < maxTopicNames {
		next := make(map[string]string, 1+lenOf(cur))
		if cur != nil {
			maps.Copy(next, *cur)
		}
		next[string(recordType)] = n
		t.names.CompareAndSwap(cur, &next) // a lost race only costs a rebuild later
	}
	return n
}

func lenOf(m *map[string]string) int {
	if m == nil {
		return 0
	}
	return len(*m)
}

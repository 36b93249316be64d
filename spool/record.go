package spool

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"unsafe"
)

// recordVersion is the first byte of every encoded record. A new layout gets
// a new version so that old spools stay readable.
const recordVersion = 1

// Record is one telemetry record.
//
// On Append the byte slices may alias the caller's buffers (they are copied
// before Append returns); records returned by Read own their memory.
type Record struct {
	Seq           uint64 // assigned by Append; monotonically increasing, never reused
	ReceivedAtMs  int64  // when the daemon received the record (Unix ms)
	CreatedAtSec  uint32 // from the envelope
	VIN           string // from the client certificate
	ClientVersion string // the Version request header of the connection
	Topic         []byte
	TxID          []byte
	Payload       []byte
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// zigzag maps signed to unsigned the way binary.PutVarint does, so that the
// length computed here matches what PutVarint writes.
func zigzag(x int64) uint64 { return uint64(x<<1) ^ uint64(x>>63) }

// encodedLen returns the exact length EncodeRecord produces for r.
func encodedLen(r *Record) int {
	n := 1 + uvarintLen(zigzag(r.ReceivedAtMs)) + uvarintLen(uint64(r.CreatedAtSec))
	for _, l := range [...]int{len(r.VIN), len(r.ClientVersion), len(r.Topic), len(r.TxID), len(r.Payload)} {
		n += uvarintLen(uint64(l)) + l
	}
	return n
}

// encodeInto writes r into b, which must be exactly encodedLen(r) long. It
// writes in place so that Append can encode straight into the batch.
func encodeInto(b []byte, r *Record) {
	b[0] = recordVersion
	i := 1
	i += binary.PutVarint(b[i:], r.ReceivedAtMs)
	i += binary.PutUvarint(b[i:], uint64(r.CreatedAtSec))
	i += binary.PutUvarint(b[i:], uint64(len(r.VIN)))
	i += copy(b[i:], r.VIN)
	i += binary.PutUvarint(b[i:], uint64(len(r.ClientVersion)))
	i += copy(b[i:], r.ClientVersion)
	for _, f := range [...][]byte{r.Topic, r.TxID, r.Payload} {
		i += binary.PutUvarint(b[i:], uint64(len(f)))
		i += copy(b[i:], f)
	}
}

// EncodeRecord appends the encoding of r to dst and returns the extended
// slice. r.Seq is not part of the encoding: the spool keeps it in the key.
//
// The layout is a version byte (1) followed by ReceivedAtMs (zig-zag varint),
// CreatedAtSec (uvarint) and VIN, ClientVersion, Topic, TxID and Payload,
// each as a uvarint length followed by that many bytes.
func EncodeRecord(dst []byte, r *Record) []byte {
	n := encodedLen(r)
	dst = slices.Grow(dst, n)
	encodeInto(dst[len(dst):len(dst)+n], r)
	return dst[:len(dst)+n]
}

// recordTopic returns the topic of an encoded record without decoding the
// rest; it aliases b.
func recordTopic(b []byte) ([]byte, error) {
	if len(b) == 0 || b[0] != recordVersion {
		return nil, fmt.Errorf("spool: record: unknown encoding")
	}
	d := decoder{b: b[1:]}
	if _, n := binary.Varint(d.b); n <= 0 {
		return nil, d.errf("bad received-at varint")
	} else {
		d.b = d.b[n:]
	}
	if _, n := binary.Uvarint(d.b); n <= 0 {
		return nil, d.errf("bad created-at")
	} else {
		d.b = d.b[n:]
	}
	for _, name := range [...]string{"vin", "client version"} {
		if _, err := d.field(name); err != nil {
			return nil, err
		}
	}
	return d.field("topic")
}

// DecodeRecord decodes b, as produced by EncodeRecord, into r and sets r.Seq
// to seq. Topic, TxID and Payload alias b; VIN and ClientVersion are copies.
//
// Every length is checked against the input; malformed input yields an
// error naming seq and r is left unchanged.
func DecodeRecord(b []byte, seq uint64, r *Record) error {
	return decodeRecord(b, seq, r, false)
}

// decodeRecord is DecodeRecord; with ownBuf the strings alias b too, which
// Read uses for the buffer it allocated per record (one allocation instead
// of three). The fields do not overlap, so writes into the byte slices
// cannot change the strings.
func decodeRecord(b []byte, seq uint64, r *Record, ownBuf bool) error {
	if len(b) == 0 {
		return fmt.Errorf("spool: record %d: empty encoding", seq)
	}
	if b[0] != recordVersion {
		return fmt.Errorf("spool: record %d: unknown encoding version %d", seq, b[0])
	}
	d := decoder{b: b[1:], seq: seq}
	recv, n := binary.Varint(d.b)
	if n <= 0 {
		return d.errf("bad received-at varint")
	}
	d.b = d.b[n:]
	created, n := binary.Uvarint(d.b)
	if n <= 0 || created > math.MaxUint32 {
		return d.errf("bad created-at")
	}
	d.b = d.b[n:]
	vin, err := d.field("vin")
	if err != nil {
		return err
	}
	ver, err := d.field("client version")
	if err != nil {
		return err
	}
	topic, err := d.field("topic")
	if err != nil {
		return err
	}
	txid, err := d.field("txid")
	if err != nil {
		return err
	}
	payload, err := d.field("payload")
	if err != nil {
		return err
	}
	if len(d.b) != 0 {
		return d.errf("%d trailing bytes", len(d.b))
	}
	*r = Record{
		Seq:          seq,
		ReceivedAtMs: recv,
		CreatedAtSec: uint32(created),
		Topic:        topic,
		TxID:         txid,
		Payload:      payload,
	}
	if ownBuf {
		r.VIN, r.ClientVersion = unsafe.String(unsafe.SliceData(vin), len(vin)), unsafe.String(unsafe.SliceData(ver), len(ver))
	} else {
		r.VIN, r.ClientVersion = string(vin), string(ver)
	}
	return nil
}

type decoder struct {
	b   []byte
	seq uint64
}

func (d *decoder) errf(format string, args ...any) error {
	return fmt.Errorf("spool: record %d: %s", d.seq, fmt.Sprintf(format, args...))
}

// field reads one length-prefixed field. The slice is capped so that an
// append by the caller cannot overwrite the next field.
func (d *decoder) field(name string) ([]byte, error) {
	l, n := binary.Uvarint(d.b)
	if n <= 0 {
		return nil, d.errf("bad %s length", name)
	}
	d.b = d.b[n:]
	if l > uint64(len(d.b)) {
		return nil, d.errf("%s length %d exceeds remaining %d bytes", name, l, len(d.b))
	}
	f := d.b[:l:l]
	d.b = d.b[l:]
	return f, nil
}

package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Quarantine: records a sink refused for good (a record over the broker's
// size limit, say) are moved out of the record keyspace, in the same batch
// that moves the refusing consumer's cursor past them, so they neither
// block that consumer nor get lost. They stay until an operator replays
// or drops them, and count against Options.MaxBytes meanwhile.
//
//	q/<lane> 0x00 <seq: 8 bytes big-endian> → encodeQuarantined output
//	m/quarantine → 16 bytes: quarantined bytes, records (big-endian)

// Quarantined is a record a sink refused for good.
type Quarantined struct {
	// Lane is the consumer (cursor) that refused it, e.g. "kafka/V".
	Lane string `json:"lane"`
	// Sink is the dispatcher, e.g. "kafka".
	Sink string `json:"sink"`
	// Reason is a short class of the refusal, e.g. "message_too_large".
	Reason string `json:"reason"`
	// Error is the sink's error text.
	Error string `json:"error"`
	// AtMs is when it was quarantined (Unix ms).
	AtMs int64 `json:"at_ms"`
	// Record is the record, with its spool seq.
	Record Record `json:"-"`
}

// ErrNotQuarantined is returned for a (lane, seq) with no quarantined
// record.
var ErrNotQuarantined = errors.New("spool: no such quarantined record")

var (
	quarantinePrefix  = []byte("q/")
	quarantineUpper   = []byte("q0")
	quarantineMetaKey = []byte("m/quarantine")
)

const quarantineVersion = 1

// quarantineOp is a staged write of the quarantine keyspace: a put, or
// with del a deletion of an entry of size bytes.
type quarantineOp struct {
	key, value []byte
	del        bool
	delSize    int64
}

func (op quarantineOp) size() int64 {
	if op.del {
		return op.delSize
	}
	return int64(len(op.key) + len(op.value))
}

// quarantineKey is q/<lane> 0x00 <seq>.
func quarantineKey(lane string, seq uint64) []byte {
	k := make([]byte, 0, len(quarantinePrefix)+len(lane)+9)
	k = append(k, quarantinePrefix...)
	k = append(k, lane...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

func parseQuarantineKey(k []byte) (lane string, seq uint64, err error) {
	if len(k) < len(quarantinePrefix)+9 || !bytes.HasPrefix(k, quarantinePrefix) || k[len(k)-9] != 0 {
		return "", 0, fmt.Errorf("spool: corrupt quarantine key %q", k)
	}
	return string(k[len(quarantinePrefix) : len(k)-9]), binary.BigEndian.Uint64(k[len(k)-8:]), nil
}

func newQuarantineOp(q *Quarantined) quarantineOp {
	return quarantineOp{key: quarantineKey(q.Lane, q.Record.Seq), value: encodeQuarantined(q)}
}

// encodeQuarantined: a version byte, Sink, Reason and Error as uvarint
// length and bytes, AtMs as a varint, then the record's EncodeRecord
// bytes.
func encodeQuarantined(q *Quarantined) []byte {
	b := make([]byte, 0, 32+len(q.Sink)+len(q.Reason)+len(q.Error)+encodedLen(&q.Record))
	b = append(b, quarantineVersion)
	for _, s := range [...]string{q.Sink, q.Reason, q.Error} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendVarint(b, q.AtMs)
	return EncodeRecord(b, &q.Record)
}

// decodeQuarantined decodes an entry; the record's byte fields alias v.
func decodeQuarantined(k, v []byte) (Quarantined, error) {
	var q Quarantined
	lane, seq, err := parseQuarantineKey(k)
	if err != nil {
		return q, err
	}
	q.Lane = lane
	if len(v) == 0 || v[0] != quarantineVersion {
		return q, fmt.Errorf("spool: quarantined record %s/%d: unknown encoding", lane, seq)
	}
	d := decoder{b: v[1:], seq: seq}
	var fields [3][]byte
	for i, name := range [...]string{"sink", "reason", "error"} {
		if fields[i], err = d.field(name); err != nil {
			return q, err
		}
	}
	q.Sink, q.Reason, q.Error = string(fields[0]), string(fields[1]), string(fields[2])
	at, n := binary.Varint(d.b)
	if n <= 0 {
		return q, d.errf("bad quarantine time")
	}
	q.AtMs = at
	if err := decodeRecord(d.b[n:], seq, &q.Record, false); err != nil {
		return q, err
	}
	return q, nil
}

// scanQuarantine calls fn for each quarantined record of lane ("": every
// lane), in lane and seq order, until fn returns false. The record's byte
// fields are copies.
func scanQuarantine(db *pebble.DB, lane string, fn func(*Quarantined) bool) error {
	lower, upper := quarantinePrefix, quarantineUpper
	if lane != "" {
		lower = append(append(append([]byte(nil), quarantinePrefix...), lane...), 0)
		upper = append(append(append([]byte(nil), quarantinePrefix...), lane...), 1)
	}
	return scanRange(db, lower, upper, "spool: read quarantine", func(k, v []byte) (bool, error) {
		q, err := decodeQuarantined(k, bytes.Clone(v))
		if err != nil {
			return false, err
		}
		return fn(&q), nil
	})
}

// getQuarantined reads one entry.
func getQuarantined(db *pebble.DB, lane string, seq uint64) (Quarantined, int64, error) {
	k := quarantineKey(lane, seq)
	v, closer, err := db.Get(k)
	if errors.Is(err, pebble.ErrNotFound) {
		return Quarantined{}, 0, fmt.Errorf("%w: %s seq %d", ErrNotQuarantined, lane, seq)
	}
	if err != nil {
		return Quarantined{}, 0, fmt.Errorf("spool: read quarantined %s/%d: %w", lane, seq, err)
	}
	defer closer.Close()
	q, err := decodeQuarantined(k, bytes.Clone(v))
	return q, int64(len(k) + len(v)), err
}

// Quarantine calls fn for each quarantined record of lane ("" for every
// lane), in lane and seq order, until fn returns false.
func (s *Spool) Quarantine(lane string, fn func(*Quarantined) bool) error {
	db, err := s.getDB()
	if err != nil {
		return err
	}
	defer s.dbMu.RUnlock()
	return scanQuarantine(db, lane, fn)
}

// QuarantinedRecord returns the record lane quarantined at seq, or an error
// matching ErrNotQuarantined.
func (s *Spool) QuarantinedRecord(lane string, seq uint64) (Quarantined, error) {
	db, err := s.getDB()
	if err != nil {
		return Quarantined{}, err
	}
	defer s.dbMu.RUnlock()
	q, _, err := getQuarantined(db, lane, seq)
	return q, err
}

// DropQuarantined deletes the record lane quarantined at seq and waits for
// the commit. The record is gone for good.
func (s *Spool) DropQuarantined(lane string, seq uint64) error {
	db, err := s.getDB()
	if err != nil {
		return err
	}
	_, size, err := getQuarantined(db, lane, seq)
	s.dbMu.RUnlock()
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.stageQuarantineLocked(quarantineOp{key: quarantineKey(lane, seq), del: true, delSize: size})
	s.mu.Unlock()
	return s.Sync()
}

// quarantineMeta is the value of m/quarantine.
func quarantineMeta(bytes, records int64) []byte {
	var v [16]byte
	binary.BigEndian.PutUint64(v[0:], uint64(bytes))
	binary.BigEndian.PutUint64(v[8:], uint64(records))
	return v[:]
}

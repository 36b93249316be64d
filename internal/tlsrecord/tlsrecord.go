// Package tlsrecord is the TLS 1.3 record layer (RFC 8446 §5) of a server
// connection whose handshake crypto/tls completed: it decrypts the peer's
// records in place and encrypts the server's, from the two application
// traffic secrets.
//
// Taking over from crypto/tls after the handshake lets a server drop the
// tls.Conn and everything it keeps for the life of the connection (its
// handshake and input buffers, the parsed peer certificates): a few KiB per
// idle connection. It also decrypts straight out of the event loop's input
// buffer.
//
// Besides application data it handles what a TLS 1.3 peer may send after
// the handshake: KeyUpdate (answered when the peer asks, RFC 8446 §4.6.3),
// alerts (close_notify ends the stream), and padding. Anything else is an
// error carrying the alert to send.
package tlsrecord

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"slices"

	"golang.org/x/crypto/chacha20poly1305"
)

// The TLS 1.3 cipher suites (RFC 8446 §B.4).
const (
	TLS_AES_128_GCM_SHA256       uint16 = 0x1301
	TLS_AES_256_GCM_SHA384       uint16 = 0x1302
	TLS_CHACHA20_POLY1305_SHA256 uint16 = 0x1303
)

// Record layer constants (RFC 8446 §5).
const (
	// HeaderLen is the length of a record header.
	HeaderLen = 5
	// MaxPlaintext is the largest plaintext one record carries.
	MaxPlaintext = 1 << 14
	// MaxCiphertext is the largest encrypted record body allowed.
	MaxCiphertext = MaxPlaintext + 256

	typeAlert           = 21
	typeHandshake       = 22
	typeApplicationData = 23

	handshakeKeyUpdate = 24
	tagLen             = 16
)

// Alert descriptions this package sends or reports (RFC 8446 §6).
const (
	AlertCloseNotify       uint8 = 0
	AlertUnexpectedMessage uint8 = 10
	AlertBadRecordMAC      uint8 = 20
	AlertRecordOverflow    uint8 = 22
	AlertIllegalParameter  uint8 = 47
	AlertDecodeError       uint8 = 50
	AlertInternalError     uint8 = 80
)

const (
	alertLevelWarning uint8 = 1
	alertLevelFatal   uint8 = 2
	alertBodyLen            = 2

	keyUpdateNotRequested uint8 = 0
	keyUpdateRequested    uint8 = 1
	keyUpdateMessageLen         = 5

	// the smallest encrypted record: a tag and the inner content type
	minEncryptedRecordLen = tagLen + 1
	nonceLen              = 12
	maxSeq                = 1<<64 - 1

	hkdfLabelPrefix    = "tls13 "
	keyLabel, ivLabel  = "key", "iv"
	trafficUpdateLabel = "traffic upd"
)

// Error is a record the peer sent that ends the connection. Alert is what
// to send it (SealAlert) before closing.
type Error struct {
	Alert uint8
	msg   string
}

func (e *Error) Error() string { return "tlsrecord: " + e.msg }

func fail(alert uint8, format string, args ...any) error {
	return &Error{Alert: alert, msg: fmt.Sprintf(format, args...)}
}

// ErrCloseNotify is returned for the peer's close_notify alert: the peer
// sends nothing more.
var ErrCloseNotify = errors.New("tlsrecord: peer sent close_notify")

// AlertReceived is a fatal alert the peer sent; the value is its
// description.
type AlertReceived uint8

func (a AlertReceived) Error() string {
	return fmt.Sprintf("tlsrecord: peer sent alert %d", uint8(a))
}

// suite is what the record layer needs of a cipher suite.
type suite struct {
	keyLen int
	hash   func() hash.Hash
	aead   func(key []byte) (cipher.AEAD, error)
}

func suiteByID(id uint16) (*suite, error) {
	switch id {
	case TLS_AES_128_GCM_SHA256:
		return &suite{16, sha256.New, newGCM}, nil
	case TLS_AES_256_GCM_SHA384:
		return &suite{32, sha512.New384, newGCM}, nil
	case TLS_CHACHA20_POLY1305_SHA256:
		return &suite{32, sha256.New, chacha20poly1305.New}, nil
	}
	return nil, fmt.Errorf("tlsrecord: cipher suite %#04x is not a TLS 1.3 suite", id)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// half is one direction: its traffic secret, the AEAD derived from it and
// the sequence number of the next record.
type half struct {
	suite  *suite
	secret []byte
	aead   cipher.AEAD
	iv     [nonceLen]byte
	nonce  [nonceLen]byte // scratch, kept here so a call does not allocate it
	seq    uint64
}

func (h *half) setSecret(secret []byte) error {
	key, err := expandLabel(h.suite.hash, secret, keyLabel, h.suite.keyLen)
	if err != nil {
		return err
	}
	iv, err := expandLabel(h.suite.hash, secret, ivLabel, nonceLen)
	if err != nil {
		return err
	}
	aead, err := h.suite.aead(key)
	if err != nil {
		return err
	}
	h.secret, h.aead, h.seq = secret, aead, 0
	copy(h.iv[:], iv)
	return nil
}

// update moves to the next traffic secret (RFC 8446 §7.2).
func (h *half) update() error {
	next, err := expandLabel(h.suite.hash, h.secret, trafficUpdateLabel, len(h.secret))
	if err != nil {
		return err
	}
	return h.setSecret(next)
}

// nextNonce is the per-record nonce (RFC 8446 §5.3): the IV with the
// sequence number XORed into its last 8 bytes.
func (h *half) nextNonce() ([]byte, error) {
	if h.seq == maxSeq {
		return nil, fail(AlertInternalError, "sequence number exhausted")
	}
	h.nonce = h.iv
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], h.seq)
	for i := range s {
		h.nonce[4+i] ^= s[i]
	}
	h.seq++
	return h.nonce[:], nil
}

// expandLabel is HKDF-Expand-Label (RFC 8446 §7.1) with an empty context.
func expandLabel(h func() hash.Hash, secret []byte, label string, length int) ([]byte, error) {
	full := hkdfLabelPrefix + label
	info := make([]byte, 0, 4+len(full))
	info = append(info, byte(length>>8), byte(length), byte(len(full)))
	info = append(info, full...)
	info = append(info, 0) // context: empty
	return hkdf.Expand(h, secret, string(info), length)
}

// Conn is the record layer of one connection. It is not safe for
// concurrent use.
type Conn struct {
	in, out half
	// pending holds records to send before anything else: the answer to a
	// KeyUpdate that asked for one.
	pending []byte
}

// New returns the record layer of a server connection: readSecret is the
// client's application traffic secret, writeSecret the server's, and
// writeSeq the number of records already sent under writeSecret (the
// session tickets crypto/tls sent at the end of its handshake). The peer's
// records start at sequence number 0.
func New(suiteID uint16, readSecret, writeSecret []byte, writeSeq uint64) (*Conn, error) {
	s, err := suiteByID(suiteID)
	if err != nil {
		return nil, err
	}
	hashLen := s.hash().Size()
	if len(readSecret) != hashLen || len(writeSecret) != hashLen {
		return nil, fmt.Errorf("tlsrecord: secrets of %d and %d bytes for a suite hashing to %d", len(readSecret), len(writeSecret), hashLen)
	}
	c := &Conn{in: half{suite: s}, out: half{suite: s}}
	if err := c.in.setSecret(slices.Clone(readSecret)); err != nil {
		return nil, fmt.Errorf("tlsrecord: derive read keys: %w", err)
	}
	if err := c.out.setSecret(slices.Clone(writeSecret)); err != nil {
		return nil, fmt.Errorf("tlsrecord: derive write keys: %w", err)
	}
	c.out.seq = writeSeq
	return c, nil
}

// RecordLen reports the length of the record at the start of buf, header
// included, once its header is complete (ok false before). A length past
// the protocol's limit is an error: the connection should send the alert
// and close rather than wait for it.
func RecordLen(buf []byte) (n int, ok bool, err error) {
	if len(buf) < HeaderLen {
		return 0, false, nil
	}
	body := int(buf[3])<<8 | int(buf[4])
	if body > MaxCiphertext {
		return 0, false, fail(AlertRecordOverflow, "record of %d bytes", body)
	}
	return HeaderLen + body, true, nil
}

// Open decrypts the record at the start of buf, in place, if it is
// complete. It returns the bytes the record took (0 when it is not complete
// yet) and the application data it held, which aliases buf (nil for a
// record that held none: a KeyUpdate, or empty data). After a KeyUpdate
// that asked for an answer, Pending has records to send.
//
// ErrCloseNotify, AlertReceived and *Error end the connection.
func (c *Conn) Open(buf []byte) (int, []byte, error) {
	n, ok, err := RecordLen(buf)
	if !ok || err != nil {
		return 0, nil, err
	}
	// Judge the header before waiting for the body.
	if buf[0] != typeApplicationData {
		return 0, nil, fail(AlertUnexpectedMessage, "record type %d after the handshake", buf[0])
	}
	if n-HeaderLen < minEncryptedRecordLen {
		return 0, nil, fail(AlertDecodeError, "encrypted record of %d bytes", n-HeaderLen)
	}
	if len(buf) < n {
		return 0, nil, nil
	}
	nonce, err := c.in.nextNonce()
	if err != nil {
		return 0, nil, err
	}
	body := buf[HeaderLen:n]
	plain, err := c.in.aead.Open(body[:0], nonce, body, buf[:HeaderLen])
	if err != nil {
		return 0, nil, fail(AlertBadRecordMAC, "record %d does not authenticate", c.in.seq-1)
	}
	// TLSInnerPlaintext: content, the real type, then zero padding.
	i := len(plain) - 1
	for i >= 0 && plain[i] == 0 {
		i--
	}
	if i < 0 {
		return 0, nil, fail(AlertUnexpectedMessage, "record with no content type")
	}
	typ, content := plain[i], plain[:i]
	if len(content) > MaxPlaintext {
		return 0, nil, fail(AlertRecordOverflow, "record with %d bytes of plaintext", len(content))
	}
	switch typ {
	case typeApplicationData:
		if len(content) == 0 {
			return n, nil, nil
		}
		return n, content, nil
	case typeAlert:
		if len(content) != alertBodyLen {
			return 0, nil, fail(AlertDecodeError, "alert of %d bytes", len(content))
		}
		if content[1] == AlertCloseNotify {
			return n, nil, ErrCloseNotify
		}
		return 0, nil, AlertReceived(content[1])
	case typeHandshake:
		if err := c.handshakeMessage(content); err != nil {
			return 0, nil, err
		}
		return n, nil, nil
	}
	return 0, nil, fail(AlertUnexpectedMessage, "content type %d after the handshake", typ)
}

// handshakeMessage handles a post-handshake message from the client: only
// KeyUpdate is allowed, whole, and it must end its record (RFC 8446 §5.1:
// a message that precedes a key change is aligned with a record boundary).
func (c *Conn) handshakeMessage(m []byte) error {
	if len(m) < 4 {
		return fail(AlertUnexpectedMessage, "fragmented handshake message")
	}
	if m[0] != handshakeKeyUpdate {
		return fail(AlertUnexpectedMessage, "handshake message %d after the handshake", m[0])
	}
	if int(m[1])<<16|int(m[2])<<8|int(m[3]) != 1 || len(m) != keyUpdateMessageLen {
		return fail(AlertDecodeError, "malformed KeyUpdate")
	}
	switch m[4] {
	case keyUpdateNotRequested:
	case keyUpdateRequested:
		// Answer under the current keys, then move ours forward.
		c.pending = c.seal(c.pending, typeHandshake, []byte{handshakeKeyUpdate, 0, 0, 1, keyUpdateNotRequested})
		if err := c.out.update(); err != nil {
			return err
		}
	default:
		return fail(AlertIllegalParameter, "KeyUpdate request_update %d", m[4])
	}
	return c.in.update()
}

// Pending returns records that must be sent before anything sealed later,
// and forgets them.
func (c *Conn) Pending() []byte {
	p := c.pending
	c.pending = nil
	return p
}

// Seal appends plaintext to dst as application data records.
func (c *Conn) Seal(dst, plaintext []byte) []byte {
	for len(plaintext) > 0 {
		k := min(len(plaintext), MaxPlaintext)
		dst = c.seal(dst, typeApplicationData, plaintext[:k])
		plaintext = plaintext[k:]
	}
	return dst
}

// SealAlert appends an alert record to dst: close_notify as a warning,
// anything else fatal.
func (c *Conn) SealAlert(dst []byte, desc uint8) []byte {
	level := alertLevelFatal
	if desc == AlertCloseNotify {
		level = alertLevelWarning
	}
	return c.seal(dst, typeAlert, []byte{level, desc})
}

// seal appends one record of content type typ.
func (c *Conn) seal(dst []byte, typ byte, content []byte) []byte {
	nonce, err := c.out.nextNonce()
	if err != nil {
		// 2^64 records: not reachable; an empty append makes the peer
		// time out rather than accept a reused nonce.
		return dst
	}
	bodyLen := len(content) + 1 + tagLen
	start := len(dst)
	dst = slices.Grow(dst, HeaderLen+bodyLen)
	dst = append(dst, typeApplicationData, 3, 3, byte(bodyLen>>8), byte(bodyLen))
	dst = append(dst, content...)
	dst = append(dst, typ)
	inner := dst[start+HeaderLen:]
	// The capacity reserved above lets Seal write the tag in place.
	sealed := c.out.aead.Seal(inner[:0], nonce, inner, dst[start:start+HeaderLen])
	return dst[:start+HeaderLen+len(sealed)]
}

// TicketsSent counts the records crypto/tls already sent under the server's
// application traffic secret (its session tickets), given the records the
// server wrote during the handshake, in order: the first one that
// authenticates under the secret at sequence number 0 and those after it.
// The count is the sequence number the record layer continues from.
func TicketsSent(suiteID uint16, serverSecret []byte, written [][]byte) uint64 {
	s, err := suiteByID(suiteID)
	if err != nil {
		return 0
	}
	h := half{suite: s}
	if h.setSecret(serverSecret) != nil {
		return 0
	}
	for i, rec := range written {
		if !h.opens(0, rec) {
			continue
		}
		n := uint64(1)
		for _, later := range written[i+1:] {
			if !h.opens(n, later) {
				break
			}
			n++
		}
		return n
	}
	return 0
}

// opens reports whether record (a whole one, header included)
// authenticates under h's keys at sequence number seq, leaving record as
// it is.
func (h *half) opens(seq uint64, record []byte) bool {
	if len(record) < HeaderLen+minEncryptedRecordLen || record[0] != typeApplicationData {
		return false
	}
	h.seq = seq
	nonce, err := h.nextNonce()
	if err != nil {
		return false
	}
	body := slices.Clone(record[HeaderLen:])
	_, err = h.aead.Open(body[:0], nonce, body, record[:HeaderLen])
	return err == nil
}

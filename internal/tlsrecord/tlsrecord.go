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
// the handshake: KeyUpdate (whole or split across records, answered when
// the peer asks, RFC 8446 §4.6.3), alerts (close_notify ends the stream,
// user_canceled is ignored), empty records and padding. Anything else is an
// error carrying the alert to send.
//
// Its limits and alerts are crypto/tls's (Go 1.26, conn.go readRecordOrCCS
// and handlePostHandshakeMessage): at most 16 records in a row that carry
// no application data, an inner plaintext of at most 2^14+1 bytes, post-
// handshake handshake messages of at most 64 KiB (256 KiB for a
// Certificate), records interleaved with a fragmented handshake message
// refused. It is stricter where crypto/tls is lenient and RFC 8446 is not:
// a change_cipher_spec record after the handshake and a record whose inner
// plaintext is empty are refused with unexpected_message (RFC 8446 §5,
// §5.4), where crypto/tls skips them; and a post-handshake ClientHello,
// ServerHello, NewSessionTicket, EncryptedExtensions, Certificate or
// CertificateRequest gets unexpected_message without being parsed, where
// crypto/tls sends decode_error for one that does not parse (it holds and
// parses up to 256 KiB for that; this package holds 8 bytes of any
// handshake message).
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
	// MaxInnerPlaintext is the largest TLSInnerPlaintext (content, content
	// type and padding) a record may carry (RFC 8446 §5.4).
	MaxInnerPlaintext = MaxPlaintext + 1
	// MaxUselessRecords is how many records in a row may carry no
	// application data (KeyUpdate, empty application data, user_canceled)
	// before the connection is refused, crypto/tls's limit.
	MaxUselessRecords = 16

	typeChangeCipherSpec = 20
	typeAlert            = 21
	typeHandshake        = 22
	typeApplicationData  = 23

	tagLen = 16
)

// Handshake message types (RFC 8446 §4, and the TLS 1.2 ones crypto/tls
// still parses after a TLS 1.3 handshake).
const (
	hsHelloRequest        = 0
	hsClientHello         = 1
	hsServerHello         = 2
	hsNewSessionTicket    = 4
	hsEndOfEarlyData      = 5
	hsEncryptedExtensions = 8
	hsCertificate         = 11
	hsServerKeyExchange   = 12
	hsCertificateRequest  = 13
	hsServerHelloDone     = 14
	hsCertificateVerify   = 15
	hsClientKeyExchange   = 16
	hsFinished            = 20
	hsCertificateStatus   = 22
	hsKeyUpdate           = 24

	hsHeaderLen = 4
	// The largest handshake messages crypto/tls reassembles.
	maxHandshake            = 1 << 16
	maxHandshakeCertificate = 1 << 18
)

// Alert descriptions this package sends or reports (RFC 8446 §6).
const (
	AlertCloseNotify       uint8 = 0
	AlertUnexpectedMessage uint8 = 10
	AlertBadRecordMAC      uint8 = 20
	AlertRecordOverflow    uint8 = 22
	AlertIllegalParameter  uint8 = 47
	AlertDecodeError       uint8 = 50
	AlertProtocolVersion   uint8 = 70
	AlertInternalError     uint8 = 80
	AlertUserCanceled      uint8 = 90
)

const (
	alertLevelWarning uint8 = 1
	alertLevelFatal   uint8 = 2
	alertBodyLen            = 2

	keyUpdateNotRequested uint8 = 0
	keyUpdateRequested    uint8 = 1

	nonceLen   = 12
	maxSeq     = 1<<64 - 1
	maxHashLen = 48 // SHA-384

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
// the sequence number of the next record. The secret lives in the half's
// own array, overwritten when it changes; the AEAD's key schedule is held
// by crypto/cipher, out of reach, and dropped with the AEAD.
type half struct {
	suite     *suite
	secret    [maxHashLen]byte
	secretLen int
	aead      cipher.AEAD
	iv        [nonceLen]byte
	nonce     [nonceLen]byte // scratch, kept here so a call does not allocate it
	seq       uint64
}

// setSecret derives the half's key and IV from secret and keeps a copy of
// secret; the caller still owns (and should clear) its own.
func (h *half) setSecret(secret []byte) error {
	if len(secret) > maxHashLen {
		return fmt.Errorf("tlsrecord: secret of %d bytes", len(secret))
	}
	key, err := expandLabel(h.suite.hash, secret, keyLabel, h.suite.keyLen)
	if err != nil {
		return err
	}
	defer clear(key)
	iv, err := expandLabel(h.suite.hash, secret, ivLabel, nonceLen)
	if err != nil {
		return err
	}
	defer clear(iv)
	aead, err := h.suite.aead(key)
	if err != nil {
		return err
	}
	clear(h.secret[:])
	h.secretLen = copy(h.secret[:], secret)
	h.aead, h.seq = aead, 0
	copy(h.iv[:], iv)
	clear(h.nonce[:])
	return nil
}

// update moves to the next traffic secret (RFC 8446 §7.2), overwriting the
// one it replaces.
func (h *half) update() error {
	next, err := expandLabel(h.suite.hash, h.secret[:h.secretLen], trafficUpdateLabel, h.secretLen)
	if err != nil {
		return err
	}
	defer clear(next)
	return h.setSecret(next)
}

// wipe forgets the half's secret and keys.
func (h *half) wipe() {
	clear(h.secret[:])
	clear(h.iv[:])
	clear(h.nonce[:])
	h.aead = nil
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

// handshakeReader follows the post-handshake handshake messages the peer
// sends, which may span records. It keeps a message's header and the
// first bytes of its body (all a KeyUpdate has, and all the checks of the
// other messages need) and counts the rest without holding it.
type handshakeReader struct {
	hdr    [hsHeaderLen]byte
	hdrN   int
	length int     // of the body, once the header is whole
	bodyN  int     // body bytes seen
	prefix [4]byte // the body's first bytes
}

// inProgress reports whether part of a message arrived and the rest has
// not.
func (r *handshakeReader) inProgress() bool { return r.hdrN > 0 }

// Conn is the record layer of one connection. It is not safe for
// concurrent use.
type Conn struct {
	in, out half
	// pending holds records to send before anything else: the answer to a
	// KeyUpdate that asked for one.
	pending []byte
	// useless counts the records in a row that carried no application
	// data.
	useless int
	hs      handshakeReader
	// err is the error Open returned, returned again by later calls: the
	// stream is over.
	err error
}

// New returns the record layer of a server connection: readSecret is the
// client's application traffic secret, writeSecret the server's, and
// writeSeq the number of records already sent under writeSecret (the
// session tickets crypto/tls sent at the end of its handshake). The peer's
// records start at sequence number 0.
//
// New takes ownership of the two secrets: it copies what it needs and
// overwrites both slices with zeros before it returns, whether or not it
// succeeds, so the caller is left holding no copy. The Conn keeps only the
// current secret of each direction, and overwrites it on KeyUpdate.
func New(suiteID uint16, readSecret, writeSecret []byte, writeSeq uint64) (*Conn, error) {
	defer clear(readSecret)
	defer clear(writeSecret)
	s, err := suiteByID(suiteID)
	if err != nil {
		return nil, err
	}
	hashLen := s.hash().Size()
	if len(readSecret) != hashLen || len(writeSecret) != hashLen {
		return nil, fmt.Errorf("tlsrecord: secrets of %d and %d bytes for a suite hashing to %d", len(readSecret), len(writeSecret), hashLen)
	}
	c := &Conn{in: half{suite: s}, out: half{suite: s}}
	if err := c.in.setSecret(readSecret); err != nil {
		return nil, fmt.Errorf("tlsrecord: derive read keys: %w", err)
	}
	if err := c.out.setSecret(writeSecret); err != nil {
		c.in.wipe()
		return nil, fmt.Errorf("tlsrecord: derive write keys: %w", err)
	}
	c.out.seq = writeSeq
	return c, nil
}

// WriteSeq is the sequence number the next record sealed will carry under
// the current write secret: after New, the writeSeq it was given plus the
// records sealed since; 0 again after a KeyUpdate moves the write secret.
func (c *Conn) WriteSeq() uint64 { return c.out.seq }

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
// record that held none: a KeyUpdate or part of one, empty data,
// user_canceled). After a KeyUpdate that asked for an answer, Pending has
// records to send.
//
// The header is judged as soon as it is whole (version, length), the rest
// once the record is. ErrCloseNotify, AlertReceived and *Error end the
// connection: later calls return the same error.
func (c *Conn) Open(buf []byte) (int, []byte, error) {
	if c.err != nil {
		return 0, nil, c.err
	}
	n, data, err := c.open(buf)
	if err != nil {
		c.err = err
		return 0, nil, err
	}
	return n, data, nil
}

func (c *Conn) open(buf []byte) (int, []byte, error) {
	if len(buf) < HeaderLen {
		return 0, nil, nil
	}
	// Every TLS 1.3 record says TLS 1.2 (RFC 8446 §5.1).
	if buf[1] != 3 || buf[2] != 3 {
		return 0, nil, fail(AlertProtocolVersion, "record version %#02x%02x", buf[1], buf[2])
	}
	n, _, err := RecordLen(buf)
	if err != nil {
		return 0, nil, err
	}
	if len(buf) < n {
		return 0, nil, nil
	}
	body := buf[HeaderLen:n]
	if buf[0] == typeChangeCipherSpec {
		// Not encrypted (RFC 8446 §5): judged as it is.
		if len(body) > MaxPlaintext {
			return 0, nil, fail(AlertRecordOverflow, "change_cipher_spec record of %d bytes", len(body))
		}
		return 0, nil, c.changeCipherSpec(body)
	}
	nonce, err := c.in.nextNonce()
	if err != nil {
		return 0, nil, err
	}
	plain, err := c.in.aead.Open(body[:0], nonce, body, buf[:HeaderLen])
	if err != nil {
		return 0, nil, fail(AlertBadRecordMAC, "record %d does not authenticate", c.in.seq-1)
	}
	if buf[0] != typeApplicationData {
		return 0, nil, fail(AlertUnexpectedMessage, "protected record of outer type %d", buf[0])
	}
	if len(plain) > MaxInnerPlaintext {
		return 0, nil, fail(AlertRecordOverflow, "inner plaintext of %d bytes", len(plain))
	}
	// TLSInnerPlaintext: content, the real type, then zero padding.
	i := len(plain) - 1
	for i >= 0 && plain[i] == 0 {
		i--
	}
	if i < 0 {
		// An empty one too (RFC 8446 §5.4): crypto/tls takes that for
		// empty application data.
		return 0, nil, fail(AlertUnexpectedMessage, "record with no content type")
	}
	typ, content := plain[i], plain[:i]
	if typ == typeApplicationData && len(content) > 0 {
		c.useless = 0
	}
	// Handshake messages MUST NOT be interleaved with other record types
	// (RFC 8446 §5.1).
	if c.hs.inProgress() && typ != typeHandshake {
		return 0, nil, fail(AlertUnexpectedMessage, "record of type %d inside a fragmented handshake message", typ)
	}
	switch typ {
	case typeApplicationData:
		if len(content) == 0 {
			return n, nil, c.uselessRecord()
		}
		return n, content, nil
	case typeAlert:
		if len(content) != alertBodyLen {
			return 0, nil, fail(AlertUnexpectedMessage, "alert of %d bytes", len(content))
		}
		// TLS 1.3 alerts are all fatal but close_notify and user_canceled,
		// whatever level they say (RFC 8446 §6.1).
		switch content[1] {
		case AlertCloseNotify:
			return n, nil, ErrCloseNotify
		case AlertUserCanceled:
			return n, nil, c.uselessRecord()
		}
		return 0, nil, AlertReceived(content[1])
	case typeHandshake:
		if len(content) == 0 {
			return 0, nil, fail(AlertUnexpectedMessage, "empty handshake record")
		}
		if err := c.handshakeData(content); err != nil {
			return 0, nil, err
		}
		return n, nil, nil
	case typeChangeCipherSpec:
		return 0, nil, c.changeCipherSpec(content)
	}
	return 0, nil, fail(AlertUnexpectedMessage, "content type %d after the handshake", typ)
}

// uselessRecord counts a record that carried no application data.
func (c *Conn) uselessRecord() error {
	c.useless++
	if c.useless > MaxUselessRecords {
		return fail(AlertUnexpectedMessage, "%d records in a row without application data", c.useless)
	}
	return nil
}

// changeCipherSpec refuses a change_cipher_spec record, with the alert
// crypto/tls sends for a malformed one. RFC 8446 §5 allows one only during
// the handshake (crypto/tls skips a well-formed one after it).
func (c *Conn) changeCipherSpec(m []byte) error {
	if c.hs.inProgress() {
		return fail(AlertUnexpectedMessage, "change_cipher_spec inside a fragmented handshake message")
	}
	if len(m) != 1 || m[0] != 1 {
		return fail(AlertDecodeError, "malformed change_cipher_spec")
	}
	return fail(AlertUnexpectedMessage, "change_cipher_spec after the handshake")
}

// handshakeData takes a handshake record's content: whole messages, or
// parts of one, in order.
func (c *Conn) handshakeData(data []byte) error {
	r := &c.hs
	for len(data) > 0 {
		if r.hdrN < hsHeaderLen {
			k := copy(r.hdr[r.hdrN:], data)
			r.hdrN += k
			data = data[k:]
			if r.hdrN < hsHeaderLen {
				return nil
			}
			r.length = int(r.hdr[1])<<16 | int(r.hdr[2])<<8 | int(r.hdr[3])
			limit := maxHandshake
			if r.hdr[0] == hsCertificate {
				limit = maxHandshakeCertificate
			}
			if r.length > limit {
				return fail(AlertInternalError, "handshake message %d of %d bytes", r.hdr[0], r.length)
			}
		}
		k := min(r.length-r.bodyN, len(data))
		if r.bodyN < len(r.prefix) {
			copy(r.prefix[r.bodyN:], data[:k])
		}
		r.bodyN += k
		data = data[k:]
		if r.bodyN < r.length {
			return nil
		}
		typ, length, prefix := r.hdr[0], r.length, r.prefix
		*r = handshakeReader{}
		if err := c.handshakeMessage(typ, length, prefix[:min(length, len(prefix))], len(data) > 0); err != nil {
			return err
		}
	}
	return nil
}

// handshakeMessage handles a whole post-handshake message from the client,
// of which it is given the type, the body's length and its first bytes
// (up to 4); more reports bytes after it in its record. Only KeyUpdate is
// allowed. The checks and their order are crypto/tls's: malformed
// messages get decode_error, the 17th useless record unexpected_message,
// any other message unexpected_message.
func (c *Conn) handshakeMessage(typ byte, length int, prefix []byte, more bool) error {
	switch typ {
	case hsHelloRequest, hsEndOfEarlyData, hsServerHelloDone:
		if length != 0 {
			return fail(AlertDecodeError, "handshake message %d of %d bytes", typ, length)
		}
	case hsServerKeyExchange, hsClientKeyExchange, hsFinished:
		// Any body parses.
	case hsCertificateVerify:
		// signature algorithm, then a signature with a 16-bit length
		if length < 4 || 4+(int(prefix[2])<<8|int(prefix[3])) != length {
			return fail(AlertDecodeError, "malformed CertificateVerify")
		}
	case hsCertificateStatus:
		// status type ocsp(1), then a non-empty response with a 24-bit length
		if length < 4 || prefix[0] != 1 {
			return fail(AlertDecodeError, "malformed CertificateStatus")
		}
		if n := int(prefix[1])<<16 | int(prefix[2])<<8 | int(prefix[3]); n == 0 || 4+n != length {
			return fail(AlertDecodeError, "malformed CertificateStatus")
		}
	case hsKeyUpdate:
		if length != 1 || prefix[0] > keyUpdateRequested {
			return fail(AlertDecodeError, "malformed KeyUpdate")
		}
	case hsClientHello, hsServerHello, hsNewSessionTicket, hsEncryptedExtensions, hsCertificate, hsCertificateRequest:
		// Not parsed: refused below whatever they hold.
	default:
		return fail(AlertUnexpectedMessage, "unknown handshake message %d", typ)
	}
	if err := c.uselessRecord(); err != nil {
		return err
	}
	if typ != hsKeyUpdate {
		return fail(AlertUnexpectedMessage, "handshake message %d after the handshake", typ)
	}
	if prefix[0] == keyUpdateRequested {
		// Answer under the current keys, then move ours forward.
		c.pending = c.seal(c.pending, typeHandshake, []byte{hsKeyUpdate, 0, 0, 1, keyUpdateNotRequested})
		if err := c.out.update(); err != nil {
			return fail(AlertInternalError, "update write keys: %v", err)
		}
	}
	// A message before a key change ends its record (RFC 8446 §5.1).
	if more {
		return fail(AlertUnexpectedMessage, "KeyUpdate not at the end of its record")
	}
	if err := c.in.update(); err != nil {
		return fail(AlertInternalError, "update read keys: %v", err)
	}
	return nil
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

// SealAlert appends to dst what Pending holds, if anything (a KeyUpdate
// answer goes out under the keys it was sealed with, before the alert
// sealed under the next ones), then an alert record: close_notify as a
// warning, anything else fatal, as crypto/tls sends them.
func (c *Conn) SealAlert(dst []byte, desc uint8) []byte {
	dst = append(dst, c.Pending()...)
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
// serverSecret is left as it is (New takes it afterwards).
func TicketsSent(suiteID uint16, serverSecret []byte, written [][]byte) uint64 {
	s, err := suiteByID(suiteID)
	if err != nil {
		return 0
	}
	h := half{suite: s}
	defer h.wipe()
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
	if len(record) < HeaderLen+tagLen+1 || record[0] != typeApplicationData {
		return false
	}
	h.seq = seq
	nonce, err := h.nextNonce()
	if err != nil {
		return false
	}
	body := slices.Clone(record[HeaderLen:])
	plain, err := h.aead.Open(body[:0], nonce, body, record[:HeaderLen])
	clear(plain)
	return err == nil
}

package netloop

import (
	"fmt"

	"github.com/fleet-telemetry/fleet-telemetry/internal/tlsrecord"
)

// TLS handshake constants the ClientHello reader needs (RFC 8446 §5.1 and
// §4); the record layer's own are tlsrecord's.
const (
	recordTypeHandshake  = 22
	handshakeHeaderLen   = 4
	handshakeClientHello = 1
	// maxClientHelloLen is the largest ClientHello accepted: crypto/tls's
	// own limit for a handshake message.
	maxClientHelloLen = 1 << 16
)

// helloError is a first flight that cannot be a ClientHello; alert (0:
// none, the peer is not speaking TLS) is what to send before closing.
type helloError struct {
	alert uint8
	msg   string
}

func (e *helloError) Error() string { return "tls client hello: " + e.msg }

var errNotTLS = &helloError{msg: "first record does not look like a TLS handshake"}

// helloReader follows a connection's first TLS records on the event loop
// until they hold one whole handshake message, the ClientHello, however
// the peer split it into records. Only then does the connection take a
// handshake goroutine: a peer that sends part of a ClientHello and stops
// costs the bytes it sent, not a handshake slot.
//
// It does not interpret the ClientHello (crypto/tls does); it checks only
// what it must to know where the message ends.
type helloReader struct {
	// off is where the next record header starts in the stream; body is
	// how many bytes of the current record's body are still to come.
	off, body int
	// msgHdr collects the handshake message header; msgLeft is how many
	// message bytes are still to come once it is complete (-1 before).
	msgHdr  [handshakeHeaderLen]byte
	msgHdrN int
	msgLeft int
}

func newHelloReader() helloReader { return helloReader{msgLeft: -1} }

// scan continues over stream, the connection's bytes so far (stream[:off]
// was seen before). It reports whether the ClientHello is complete.
func (h *helloReader) scan(stream []byte) (bool, error) {
	for {
		if h.body == 0 {
			if len(stream)-h.off < tlsrecord.HeaderLen {
				return false, nil
			}
			hdr := stream[h.off : h.off+tlsrecord.HeaderLen]
			if hdr[0] != recordTypeHandshake || hdr[1] != 3 {
				if h.off == 0 {
					return false, errNotTLS
				}
				return false, &helloError{tlsrecord.AlertUnexpectedMessage, fmt.Sprintf("record type %d inside the ClientHello", hdr[0])}
			}
			n := int(hdr[3])<<8 | int(hdr[4])
			if n > tlsrecord.MaxPlaintext {
				return false, &helloError{tlsrecord.AlertRecordOverflow, fmt.Sprintf("record of %d bytes", n)}
			}
			if n == 0 {
				// RFC 8446 §5.1: no zero-length handshake fragments.
				return false, &helloError{tlsrecord.AlertDecodeError, "empty handshake record"}
			}
			h.off += tlsrecord.HeaderLen
			h.body = n
		}
		avail := min(h.body, len(stream)-h.off)
		if avail == 0 {
			return false, nil
		}
		p := stream[h.off : h.off+avail]
		h.off += avail
		h.body -= avail
		if h.msgLeft < 0 {
			k := copy(h.msgHdr[h.msgHdrN:], p)
			h.msgHdrN += k
			p = p[k:]
			if h.msgHdrN < handshakeHeaderLen {
				continue
			}
			if h.msgHdr[0] != handshakeClientHello {
				return false, &helloError{tlsrecord.AlertUnexpectedMessage, fmt.Sprintf("handshake message %d before a ClientHello", h.msgHdr[0])}
			}
			h.msgLeft = int(h.msgHdr[1])<<16 | int(h.msgHdr[2])<<8 | int(h.msgHdr[3])
			if h.msgLeft > maxClientHelloLen {
				return false, &helloError{tlsrecord.AlertDecodeError, fmt.Sprintf("ClientHello of %d bytes", h.msgLeft)}
			}
		}
		h.msgLeft -= min(h.msgLeft, len(p))
		if h.msgLeft == 0 {
			return true, nil
		}
	}
}

// alertRecord is a plaintext TLS fatal alert record.
func alertRecord(desc uint8) []byte {
	return []byte{21, 3, 3, 0, 2, 2, desc}
}

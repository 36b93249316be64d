package tlsrecord

import (
	"bytes"
	"errors"
	"testing"
)

// fuzzPeers are fixed secrets, so a fuzzer's input can be a real record.
func fuzzPeers() (server, client *Conn) {
	// New clears what it is given: each gets its own copies.
	cs, ss := func() []byte { return bytes.Repeat([]byte{1}, 32) }, func() []byte { return bytes.Repeat([]byte{2}, 32) }
	server, _ = New(TLS_AES_128_GCM_SHA256, cs(), ss(), 0)
	client, _ = New(TLS_AES_128_GCM_SHA256, ss(), cs(), 0)
	return server, client
}

// FuzzOpen feeds Open a stream: whole records the peer sealed (content,
// type and padding from the fuzzer), optionally corrupted at one byte, then
// arbitrary bytes. Open must never panic, never claim more bytes than it
// was given, never return data for a record that did not authenticate, and
// take each intact application-data record within the size limit and
// return its content.
func FuzzOpen(f *testing.F) {
	f.Add([]byte("hello"), byte(typeApplicationData), uint8(0), uint16(0), []byte{})
	f.Add([]byte{}, byte(typeApplicationData), uint8(3), uint16(0), []byte{23, 3, 3, 0, 1})
	f.Add([]byte{24, 0, 0, 1, 1}, byte(typeHandshake), uint8(0), uint16(0), []byte{})
	f.Add([]byte{1, 0}, byte(typeAlert), uint8(0), uint16(0), []byte{})
	f.Add([]byte{2, 40}, byte(typeAlert), uint8(0), uint16(0), []byte{})
	f.Add([]byte("x"), byte(typeApplicationData), uint8(0), uint16(7), []byte{})
	f.Add([]byte("x"), byte(20), uint8(200), uint16(0), []byte{0x17, 0x03, 0x03, 0x40, 0xff})
	f.Fuzz(func(t *testing.T, content []byte, typ byte, padding uint8, flip uint16, tail []byte) {
		if len(content) > 2*MaxPlaintext {
			return
		}
		server, client := fuzzPeers()
		inner := append(bytes.Clone(content), typ)
		inner = append(inner, make([]byte, padding)...)
		rec := client.seal(nil, inner[len(inner)-1], inner[:len(inner)-1])
		corrupted := false
		if flip > 0 {
			rec[int(flip)%len(rec)] ^= 0x80
			corrupted = true
		}
		intact := !corrupted && typ == typeApplicationData && len(inner) <= MaxInnerPlaintext
		stream := append(rec, tail...)
		in := stream
		for len(in) > 0 {
			n, data, err := server.Open(in)
			if n < 0 || n > len(in) {
				t.Fatalf("Open took %d of %d bytes", n, len(in))
			}
			if err != nil {
				if len(in) == len(stream) && intact {
					t.Fatalf("an intact record of %d bytes of data and %d of padding refused: %v", len(content), padding, err)
				}
				var e *Error
				var a AlertReceived
				if !errors.As(err, &e) && !errors.As(err, &a) && !errors.Is(err, ErrCloseNotify) {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
				return
			}
			if n == 0 {
				return // incomplete
			}
			if len(in) == len(stream) && intact && !bytes.Equal(data, content) {
				t.Fatalf("got %d bytes, sealed %d", len(data), len(content))
			}
			in = in[n:]
		}
	})
}

package netloop

import (
	"bytes"
	"io"
	"testing"

	"github.com/gobwas/ws"
)

// FuzzParseRequestLine feeds arbitrary bytes to what the loop does with an
// HTTP request: the request-line parser and gobwas/ws's upgrader over a
// reader of those bytes. Neither may panic; an accepted upgrade must have
// come from a GET request line.
func FuzzParseRequestLine(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"))
	f.Add([]byte("GET /status HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte("POST /?a=b HTTP/1.0\r\n\r\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Add([]byte("GET  HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, req []byte) {
		method, path, err := parseRequestLine(req)
		if err == nil && (len(method) == 0 || len(path) == 0 || path[0] != '/') {
			t.Fatalf("accepted %q with an empty method or a path not starting with /", req)
		}
		var u ws.Upgrader
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(req), io.Discard}
		// Our parser is the stricter gate (the daemon answers 400 before
		// the upgrader sees a line it refuses); where both accept, they
		// must agree that it is a GET.
		if _, uerr := u.Upgrade(rw); uerr == nil && err == nil && string(method) != "GET" {
			t.Fatalf("upgrader accepted %q, which our parser reads as method %q", req, method)
		}
	})
}

// FuzzHelloReader feeds arbitrary first flights to the loop's ClientHello
// reader, whole and in pieces of every size the input's first byte
// chooses. It may not panic or read past what it was given, and how the
// bytes were cut into reads must not change its verdict: complete at the
// same byte, or refused.
func FuzzHelloReader(f *testing.F) {
	hello := append([]byte{22, 3, 1, 0, 8, 1, 0, 0, 4}, 3, 3, 0, 0)
	f.Add(append([]byte{1}, hello...))
	f.Add(append([]byte{3}, 22, 3, 1, 0, 1, 1, 22, 3, 1, 0, 7, 0, 0, 4, 3, 3, 0, 0))
	f.Add([]byte{7, 0x16, 0x03, 0x01, 0x40, 0x00})
	f.Add([]byte{2, 'G', 'E', 'T', ' ', '/'})
	f.Add([]byte{5, 22, 3, 1, 0, 0})
	f.Add([]byte{4, 22, 3, 1, 0, 4, 1, 1, 0, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		step, stream := int(in[0])%17+1, in[1:]
		whole := newHelloReader()
		wholeDone, wholeErr := whole.scan(stream)
		if whole.off > len(stream) {
			t.Fatalf("read to %d of %d bytes", whole.off, len(stream))
		}
		pieces := newHelloReader()
		var done bool
		var err error
		at := 0
		for at < len(stream) && !done && err == nil {
			at = min(at+step, len(stream))
			done, err = pieces.scan(stream[:at])
			if pieces.off > at {
				t.Fatalf("read to %d of %d bytes", pieces.off, at)
			}
		}
		if done != wholeDone || (err != nil) != (wholeErr != nil) {
			t.Fatalf("whole: done=%v err=%v; in pieces of %d: done=%v err=%v", wholeDone, wholeErr, step, done, err)
		}
		if done {
			// The first prefix in pieces that completes also completes
			// when read whole, and the one before it does not.
			if ok, _ := newHelloReaderScan(stream[:at]); !ok {
				t.Fatalf("complete at byte %d in pieces, not when read whole", at)
			}
			if at > step {
				if ok, _ := newHelloReaderScan(stream[:at-step]); ok {
					t.Fatalf("complete by byte %d when read whole, at %d in pieces", at-step, at)
				}
			}
		}
	})
}

func newHelloReaderScan(stream []byte) (bool, error) {
	h := newHelloReader()
	return h.scan(stream)
}

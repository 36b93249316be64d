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

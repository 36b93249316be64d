package introspect

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"net/http"
)

// statusPage is the status page: markup, style and script in one file,
// nothing loaded from elsewhere.
//
//go:embed status.html
var statusPage []byte

// pageCSP lets the page run its own style and script (by hash) and fetch
// from its own origin, and nothing else: strings a vehicle chose (its
// certificate's CN, its Version header) can never become script.
var pageCSP = "default-src 'none'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; " +
	"frame-ancestors 'none'; style-src " + inlineHash("style") + "; script-src " + inlineHash("script")

// inlineHash is the CSP source of the page's one element of that name.
func inlineHash(tag string) string {
	open, end := []byte("<"+tag+">"), []byte("</"+tag+">")
	i := bytes.Index(statusPage, open)
	j := bytes.Index(statusPage, end)
	if i < 0 || j < i {
		panic("introspect: status.html has no <" + tag + "> element")
	}
	sum := sha256.Sum256(statusPage[i+len(open) : j])
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

func (h *Handler) page(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", pageCSP)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(statusPage)
}

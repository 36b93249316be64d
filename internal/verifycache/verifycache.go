// Package verifycache remembers certificate chains that verified, so a peer
// that reconnects with the same certificates skips chain building and the
// CA's signature check (an ECDSA verify and ~12 % of a full handshake's
// server CPU in a reconnect storm).
//
// An entry is keyed by a SHA-256 of every certificate the peer presented,
// in order, and of the host name checked; it holds the validity window of
// the chain that verified and is used only inside it. The trusted roots and
// key usages are fixed per Cache: build a new Cache when they change (a
// configuration reload). Only successes are remembered.
//
// The cache does not replace the TLS proof of possession: crypto/tls still
// checks the peer's handshake signature with the leaf's public key.
package verifycache

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"sync"
	"time"
)

// Options configure a Cache.
type Options struct {
	// Roots are the trusted roots (for a server, its client CAs).
	Roots *x509.CertPool
	// KeyUsages the leaf must allow (x509.ExtKeyUsageClientAuth for a
	// server checking vehicles). Empty means server authentication, as in
	// x509.VerifyOptions.
	KeyUsages []x509.ExtKeyUsage
	// MaxEntries bounds the cache; when it is full a slice of entries is
	// dropped. Zero means 65536.
	MaxEntries int
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Cache is safe for concurrent use.
type Cache struct {
	opts Options
	mu   sync.Mutex
	m    map[[sha256.Size]byte]window
}

// window is the validity of a chain that verified, in Unix nanoseconds.
type window struct{ notBefore, notAfter int64 }

// New returns an empty cache.
func New(o Options) *Cache {
	if o.MaxEntries <= 0 {
		o.MaxEntries = 65536
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Cache{opts: o, m: make(map[[sha256.Size]byte]window)}
}

// ErrNoCertificate is returned when the peer presented none.
var ErrNoCertificate = errors.New("verifycache: no certificate presented")

// Verify checks that certs (leaf first, then the intermediates the peer
// sent) chain to the roots, for dnsName when it is not empty. It reports
// whether the answer came from the cache. Errors are x509's.
func (c *Cache) Verify(certs []*x509.Certificate, dnsName string) (cached bool, err error) {
	if len(certs) == 0 {
		return false, ErrNoCertificate
	}
	key := keyOf(certs, dnsName)
	now := c.opts.Now()
	t := now.UnixNano()
	c.mu.Lock()
	w, ok := c.m[key]
	c.mu.Unlock()
	if ok && t >= w.notBefore && t <= w.notAfter {
		return true, nil
	}
	opts := x509.VerifyOptions{
		Roots:       c.opts.Roots,
		DNSName:     dnsName,
		CurrentTime: now,
		KeyUsages:   c.opts.KeyUsages,
	}
	if len(certs) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, ic := range certs[1:] {
			opts.Intermediates.AddCert(ic)
		}
	}
	chains, err := certs[0].Verify(opts)
	if err != nil {
		if ok {
			c.mu.Lock()
			delete(c.m, key)
			c.mu.Unlock()
		}
		return false, err
	}
	c.put(key, validity(chains))
	return false, nil
}

// validity is the window in which every certificate of every verified
// chain is valid: the chains x509 found are all valid now, and the cached
// answer must not outlive the shortest-lived of them.
func validity(chains [][]*x509.Certificate) window {
	w := window{notBefore: minInt64, notAfter: maxInt64}
	for _, chain := range chains {
		for _, cert := range chain {
			w.notBefore = max(w.notBefore, cert.NotBefore.UnixNano())
			w.notAfter = min(w.notAfter, cert.NotAfter.UnixNano())
		}
	}
	return w
}

const (
	minInt64 = -1 << 63
	maxInt64 = 1<<63 - 1
)

func (c *Cache) put(key [sha256.Size]byte, w window) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.opts.MaxEntries {
		// Drop an eighth, in map order (effectively random): cheaper than
		// tracking recency, and a dropped entry costs one full verify.
		drop := max(1, c.opts.MaxEntries/8)
		for k := range c.m {
			delete(c.m, k)
			if drop--; drop == 0 {
				break
			}
		}
	}
	c.m[key] = w
}

// Len is the number of entries.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// keyOf hashes the DER of every certificate, each prefixed by its length so
// that two different lists cannot hash the same bytes, then the host name.
func keyOf(certs []*x509.Certificate, dnsName string) [sha256.Size]byte {
	h := sha256.New()
	var n [4]byte
	for _, cert := range certs {
		putLen(&n, len(cert.Raw))
		h.Write(n[:])
		h.Write(cert.Raw)
	}
	putLen(&n, len(dnsName))
	h.Write(n[:])
	h.Write([]byte(dnsName))
	var key [sha256.Size]byte
	h.Sum(key[:0])
	return key
}

func putLen(b *[4]byte, n int) {
	b[0], b[1], b[2], b[3] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
}

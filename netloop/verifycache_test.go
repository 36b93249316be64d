package netloop

import (
	"testing"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
)

// A vehicle that reconnects with the same certificate is answered from the
// verified-chain cache; a new TLS configuration (SIGHUP) starts a new cache,
// so a certificate whose CA is no longer trusted is refused even though it
// verified a moment before.
func TestVerifiedCertCacheHitsAndReloadForgets(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	hits, misses := verifyCacheHits.Get(), verifyCacheMisses.Get()
	for i := range 3 {
		c := e.dial(t, vinA)
		tx := []string{"a", "b", "c"}[i]
		c.Send(newRecord(vinA, "V", tx))
		expectAck(t, c, tx, "V")
		c.Close()
	}
	if got := verifyCacheMisses.Get() - misses; got != 1 {
		t.Fatalf("%d full verifications for one certificate dialled 3 times, want 1", got)
	}
	if got := verifyCacheHits.Get() - hits; got != 2 {
		t.Fatalf("%d cache hits, want 2", got)
	}

	// Reload with a configuration that trusts another CA only.
	other, err := devca.New()
	if err != nil {
		t.Fatal(err)
	}
	d := devca.Dir{Path: e.certs}
	cfg, err := NewTLSConfig(TLSOptions{CertFile: d.File(devca.ServerCertFile), KeyFile: d.File(devca.ServerKeyFile)})
	if err != nil {
		t.Fatal(err)
	}
	cfg.ClientCAs = other.Pool()
	e.srv.SetTLSConfig(cfg)
	before := refusedHandshakeFailed.Get()
	c, err := rawTLS(t, e, e.clientTLS(t, vinA))
	if err == nil {
		_, err = c.Read(make([]byte, 1))
	}
	if err == nil {
		t.Fatal("a certificate of a CA no longer trusted was accepted after the reload")
	}
	waitFor(t, func() bool { return refusedHandshakeFailed.Get() > before })
}

// With the cache disabled every handshake verifies in full and none is
// counted as a cache answer.
func TestVerifiedCertCacheDisabled(t *testing.T) {
	e := newTestEnv(t, allTopics, func(o *Options) { o.VerifiedCertCache = -1 })
	hits, misses := verifyCacheHits.Get(), verifyCacheMisses.Get()
	for _, tx := range []string{"a", "b"} {
		c := e.dial(t, vinA)
		c.Send(newRecord(vinA, "V", tx))
		expectAck(t, c, tx, "V")
		c.Close()
	}
	if verifyCacheHits.Get() != hits || verifyCacheMisses.Get() != misses {
		t.Fatal("the disabled cache was consulted")
	}
}

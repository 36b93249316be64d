package verifycache

import (
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newCA(t *testing.T) *devca.CA {
	t.Helper()
	ca, err := devca.New()
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func leaf(t *testing.T, ca *devca.CA, o devca.Options) *x509.Certificate {
	t.Helper()
	c, _, _, err := ca.Issue(o)
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf
}

func clientCache(ca *devca.CA, clk *clock, max int) *Cache {
	return New(Options{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		MaxEntries: max, Now: clk.now})
}

func TestSecondVerifyIsCached(t *testing.T) {
	ca := newCA(t)
	clk := &clock{time.Now()}
	c := clientCache(ca, clk, 0)
	v := leaf(t, ca, devca.Options{CommonName: "5YJ3E1EA1KF000001"})
	for i, want := range []bool{false, true, true} {
		cached, err := c.Verify([]*x509.Certificate{v}, "")
		if err != nil {
			t.Fatalf("verify %d: %v", i, err)
		}
		if cached != want {
			t.Fatalf("verify %d: cached %v, want %v", i, cached, want)
		}
	}
}

func TestUnknownAuthorityIsNeverCached(t *testing.T) {
	trusted, other := newCA(t), newCA(t)
	c := clientCache(trusted, &clock{time.Now()}, 0)
	v := leaf(t, other, devca.Options{CommonName: "5YJ3E1EA1KF000001"})
	for i := range 3 {
		cached, err := c.Verify([]*x509.Certificate{v}, "")
		var ua x509.UnknownAuthorityError
		if !errors.As(err, &ua) || cached {
			t.Fatalf("verify %d: cached %v err %v, want an UnknownAuthorityError", i, cached, err)
		}
	}
	if c.Len() != 0 {
		t.Fatalf("%d entries after failures", c.Len())
	}
}

func TestWrongKeyUsageIsRefused(t *testing.T) {
	ca := newCA(t)
	c := clientCache(ca, &clock{time.Now()}, 0)
	server := leaf(t, ca, devca.Options{CommonName: "srv", Hosts: []string{"localhost"}})
	if _, err := c.Verify([]*x509.Certificate{server}, ""); err == nil {
		t.Fatal("a server-auth-only certificate verified as a client")
	}
}

// A cached answer must not outlive the certificate: past NotAfter the
// chain is verified again, and fails.
func TestCachedAnswerEndsWithValidity(t *testing.T) {
	ca := newCA(t)
	start := time.Now()
	clk := &clock{start}
	c := clientCache(ca, clk, 0)
	v := leaf(t, ca, devca.Options{CommonName: "5YJ3E1EA1KF000001",
		NotBefore: start.Add(-time.Minute), NotAfter: start.Add(time.Hour)})
	chain := []*x509.Certificate{v}
	if _, err := c.Verify(chain, ""); err != nil {
		t.Fatal(err)
	}
	clk.t = start.Add(59 * time.Minute)
	if cached, err := c.Verify(chain, ""); err != nil || !cached {
		t.Fatalf("inside the validity: cached %v err %v", cached, err)
	}
	clk.t = start.Add(61 * time.Minute)
	cached, err := c.Verify(chain, "")
	var inv x509.CertificateInvalidError
	if !errors.As(err, &inv) || inv.Reason != x509.Expired || cached {
		t.Fatalf("after NotAfter: cached %v err %v, want Expired", cached, err)
	}
	if c.Len() != 0 {
		t.Fatal("the expired entry was kept")
	}
	// Before NotBefore too (a clock stepped back).
	clk.t = start
	if _, err := c.Verify(chain, ""); err != nil {
		t.Fatal(err)
	}
	clk.t = start.Add(-2 * time.Minute)
	if cached, err := c.Verify(chain, ""); err == nil || cached {
		t.Fatalf("before NotBefore: cached %v err %v", cached, err)
	}
}

// The host name checked is part of the key: a chain that verified for one
// name is not an answer for another.
func TestHostNameIsPartOfTheKey(t *testing.T) {
	ca := newCA(t)
	c := New(Options{Roots: ca.Pool(), Now: (&clock{time.Now()}).now})
	srv := []*x509.Certificate{leaf(t, ca, devca.Options{CommonName: "srv", Hosts: []string{"localhost"}})}
	if _, err := c.Verify(srv, "localhost"); err != nil {
		t.Fatal(err)
	}
	cached, err := c.Verify(srv, "evil.example")
	var host x509.HostnameError
	if !errors.As(err, &host) || cached {
		t.Fatalf("other host: cached %v err %v, want a HostnameError", cached, err)
	}
}

func TestKeysDifferForDifferentLists(t *testing.T) {
	ca := newCA(t)
	a := leaf(t, ca, devca.Options{CommonName: "A"})
	b := leaf(t, ca, devca.Options{CommonName: "B"})
	keys := map[[32]byte]string{}
	for name, k := range map[string][32]byte{
		"a":       keyOf([]*x509.Certificate{a}, ""),
		"b":       keyOf([]*x509.Certificate{b}, ""),
		"ab":      keyOf([]*x509.Certificate{a, b}, ""),
		"ba":      keyOf([]*x509.Certificate{b, a}, ""),
		"a+host":  keyOf([]*x509.Certificate{a}, "localhost"),
		"a+host2": keyOf([]*x509.Certificate{a}, "localhosu"),
	} {
		if prev, dup := keys[k]; dup {
			t.Fatalf("%s and %s hash the same", name, prev)
		}
		keys[k] = name
	}
}

func TestSizeIsBounded(t *testing.T) {
	ca := newCA(t)
	c := clientCache(ca, &clock{time.Now()}, 16)
	for i := range 100 {
		v := leaf(t, ca, devca.Options{CommonName: "5YJ3E1EA1KF0000" + string(rune('0'+i/10)) + string(rune('0'+i%10))})
		if _, err := c.Verify([]*x509.Certificate{v}, ""); err != nil {
			t.Fatal(err)
		}
		if c.Len() > 16 {
			t.Fatalf("%d entries, bound 16", c.Len())
		}
	}
}

func TestNoCertificate(t *testing.T) {
	c := New(Options{})
	if _, err := c.Verify(nil, ""); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("err %v", err)
	}
}

// BenchmarkVerify compares a full chain verification with a cached answer.
func BenchmarkVerify(b *testing.B) {
	ca, err := devca.New()
	if err != nil {
		b.Fatal(err)
	}
	c, _, _, err := ca.Issue(devca.Options{CommonName: "5YJ3E1EA1KF000001"})
	if err != nil {
		b.Fatal(err)
	}
	chain := []*x509.Certificate{c.Leaf}
	b.Run("full", func(b *testing.B) {
		cache := New(Options{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, MaxEntries: 1})
		other := leaf2(b, ca)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			// Alternate two certificates in a one-entry cache: every call misses.
			ch := chain
			if i%2 == 1 {
				ch = other
			}
			if cached, err := cache.Verify(ch, ""); err != nil || cached {
				b.Fatal(cached, err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		cache := New(Options{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if _, err := cache.Verify(chain, ""); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if cached, err := cache.Verify(chain, ""); err != nil || !cached {
				b.Fatal(cached, err)
			}
		}
	})
}

func leaf2(b *testing.B, ca *devca.CA) []*x509.Certificate {
	c, _, _, err := ca.Issue(devca.Options{CommonName: "5YJ3E1EA1KF000002"})
	if err != nil {
		b.Fatal(err)
	}
	return []*x509.Certificate{c.Leaf}
}

package servercheck

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/timefmt"
)

// Input is what Diagnose looks at: the certificates a server sent and the
// vehicle configuration's view of it.
type Input struct {
	// Hostname is the name the vehicle connects to.
	Hostname string
	// Served are the certificates the server sent, its own first.
	Served []*x509.Certificate
	// CA are the vehicle configuration's ca certificates.
	CA []*x509.Certificate
	// SystemRoots, when set, are tried when the chain does not verify
	// against CA, to tell a CA the configuration lacks from a broken chain.
	SystemRoots *x509.CertPool
	// Now is the time of the check.
	Now time.Time
}

// Diagnosis is what a vehicle would find wrong with a served chain.
type Diagnosis struct {
	// Chain is the chain verified against the ca, the server's
	// certificate first and the ca certificate that anchors it last; nil
	// when it does not verify.
	Chain []*x509.Certificate
	// Problems make a vehicle refuse the server (or depend on something
	// only some vehicles have); Warnings do not.
	Problems, Warnings []string
}

// Diagnose checks served certificates as a vehicle with the given ca
// would, and names each thing wrong: dates, the name, a chain the server
// sends incomplete, a CA the configuration does not carry, a self-signed
// server certificate.
func Diagnose(in Input) Diagnosis {
	var d Diagnosis
	problem := func(f string, a ...any) { d.Problems = append(d.Problems, fmt.Sprintf(f, a...)) }
	warning := func(f string, a ...any) { d.Warnings = append(d.Warnings, fmt.Sprintf(f, a...)) }
	if len(in.Served) == 0 {
		problem("the server sent no certificate")
		return d
	}
	leaf := in.Served[0]
	now := in.Now

	// Dates.
	for i, c := range in.Served {
		what := "the server certificate " + Name(c)
		if i > 0 {
			what = fmt.Sprintf("certificate %d the server sends, %s,", i+1, Name(c))
		}
		switch {
		case now.After(c.NotAfter):
			problem("%s expired on %s, %s ago", what, timefmt.Stamp(c.NotAfter), timefmt.Span(now.Sub(c.NotAfter)))
		case now.Before(c.NotBefore):
			problem("%s is not valid before %s, %s from now (a certificate issued with a future date, or a clock that is wrong)", what, timefmt.Stamp(c.NotBefore), timefmt.Span(c.NotBefore.Sub(now)))
		case c.NotAfter.Sub(now) < 21*24*time.Hour:
			warning("%s expires on %s, in %s", what, timefmt.Stamp(c.NotAfter), timefmt.Span(c.NotAfter.Sub(now)))
		}
	}
	for _, c := range in.CA {
		if now.After(c.NotAfter) {
			problem("the ca certificate %s of the vehicle configuration expired on %s", Name(c), timefmt.Stamp(c.NotAfter))
		}
	}

	// The name.
	if err := leaf.VerifyHostname(in.Hostname); err != nil {
		problem("wrong name: the server certificate is not valid for %q; it names %s", in.Hostname, names(leaf))
	}

	// The chain.
	if len(in.CA) == 0 {
		problem("the vehicle configuration's ca holds no certificate: a vehicle would trust no server")
		return d
	}
	opts := x509.VerifyOptions{
		Roots:         pool(in.CA),
		Intermediates: pool(in.Served[1:]),
		CurrentTime:   verifyTime(in.Served, now),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	chains, err := leaf.Verify(opts)
	if err == nil {
		d.Chain = pick(chains)
		judgeChain(d.Chain, in.Served, warning, problem)
		return d
	}

	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage {
		problem("the server certificate %s is not for server authentication (its extended key usage is %s)", Name(leaf), usages(leaf))
		return d
	}
	if errors.As(err, &invalid) {
		problem("the chain does not verify against the vehicle configuration's ca: %v", err)
		return d
	}
	if selfSigned(leaf) {
		problem("self-signed: the server certificate %s is issued by itself, and the vehicle configuration's ca does not carry it: vehicles refuse it", Name(leaf))
		return d
	}
	path := servedPath(leaf, in.Served)
	top := path[len(path)-1]
	if in.SystemRoots != nil {
		o := opts
		o.Roots = in.SystemRoots
		if chains, err := leaf.Verify(o); err == nil {
			anchor := pick(chains)
			root := anchor[len(anchor)-1]
			problem("a CA the vehicle configuration does not carry: the server's chain verifies against this machine's system roots, up to %s, but not against the ca (it holds %s); put %s in the ca",
				Name(root), list(in.CA), Name(root))
			return d
		}
	}
	switch {
	case selfSigned(top):
		problem("a CA the vehicle configuration does not carry: the server's chain ends at the root %s, which the ca does not hold (it holds %s)", Name(top), list(in.CA))
	case len(path) == 1:
		problem("incomplete chain: the server sends only its own certificate, issued by %q, and the vehicle configuration's ca (%s) does not hold that issuer. "+
			"A server must send its intermediate certificates after its own (tls.server_cert: the server certificate, then each intermediate); "+
			"if %q is a root, the ca must carry it instead",
			leaf.Issuer.String(), list(in.CA), leaf.Issuer.String())
	default:
		problem("a CA the vehicle configuration does not carry: the server's chain ends at %s, issued by %q, which the ca does not hold (it holds %s)", Name(top), top.Issuer.String(), list(in.CA))
	}
	for _, c := range in.CA {
		if c.Subject.String() == top.Issuer.String() {
			warning("the ca holds a certificate named %s, but not the one that signed %s (another key: a re-issued CA?)", Name(c), Name(top))
		}
	}
	extra(path, in.Served, warning)
	return d
}

// judgeChain looks at a chain that verified: whether it needed
// intermediates the server did not send, whether the ca anchors it below
// a root, and what the server sends that is not part of it.
func judgeChain(chain, served []*x509.Certificate, warning, problem func(string, ...any)) {
	leaf := chain[0]
	anchor := chain[len(chain)-1]
	var missing []string
	for _, c := range chain[1:] {
		if !selfSigned(c) && !contains(served, c) {
			missing = append(missing, Name(c))
		}
	}
	switch {
	case len(missing) > 0:
		problem("incomplete chain: the server does not send %s; its certificate verifies only because the vehicle configuration's ca carries %s. "+
			"A server must send its intermediate certificates after its own (tls.server_cert: the server certificate, then each intermediate): "+
			"with a ca holding only the root, the chain does not verify",
			strings.Join(missing, " and "), strings.Join(missing, " and "))
	case anchor == leaf || anchor.Equal(leaf):
		if selfSigned(leaf) {
			warning("the server certificate is self-signed and trusted only because the ca carries this very certificate: each renewal needs a new vehicle configuration")
		} else {
			warning("the ca carries the server certificate itself rather than the CA that issued it: each renewal needs a new vehicle configuration")
		}
	case !selfSigned(anchor):
		warning("partial chain: the ca anchors the chain at %s, an intermediate issued by %q, not at a root; a vehicle that wants a chain up to a self-signed root refuses it, so put the root in the ca too (the reference server's check_server_cert.sh calls this a valid partial chain)",
			Name(anchor), anchor.Issuer.String())
	}
	extra(chain, served, warning)
}

// extra warns about certificates the server sends that are not on the
// chain.
func extra(chain, served []*x509.Certificate, warning func(string, ...any)) {
	for _, c := range served[1:] {
		if !contains(chain, c) {
			warning("the server also sends %s, which is not part of its certificate's chain", Name(c))
		}
	}
}

// servedPath follows issuers among the served certificates from the
// server's own: the chain as far as the server sends it.
func servedPath(leaf *x509.Certificate, served []*x509.Certificate) []*x509.Certificate {
	path := []*x509.Certificate{leaf}
	for cur := leaf; !selfSigned(cur) && len(path) <= len(served); {
		var next *x509.Certificate
		for _, c := range served {
			if !contains(path, c) && cur.CheckSignatureFrom(c) == nil {
				next = c
				break
			}
		}
		if next == nil {
			break
		}
		path = append(path, next)
		cur = next
	}
	return path
}

// verifyTime is the time the chain is verified at: now, moved into the
// window in which every served certificate is valid when now is outside
// it, so that the chain is judged apart from the dates (reported on their
// own).
func verifyTime(served []*x509.Certificate, now time.Time) time.Time {
	from, to := served[0].NotBefore, served[0].NotAfter
	for _, c := range served[1:] {
		if c.NotBefore.After(from) {
			from = c.NotBefore
		}
		if c.NotAfter.Before(to) {
			to = c.NotAfter
		}
	}
	switch {
	case from.After(to):
		return now
	case now.Before(from):
		return from
	case now.After(to):
		return to
	}
	return now
}

// pick prefers a chain that ends at a self-signed root, then the shortest.
func pick(chains [][]*x509.Certificate) []*x509.Certificate {
	best := chains[0]
	for _, c := range chains[1:] {
		bestRoot, cRoot := selfSigned(best[len(best)-1]), selfSigned(c[len(c)-1])
		if cRoot && !bestRoot || cRoot == bestRoot && len(c) < len(best) {
			best = c
		}
	}
	return best
}

// selfSigned reports whether c is signed by its own key under its own
// name (a root, or a self-signed server certificate).
func selfSigned(c *x509.Certificate) bool {
	return string(c.RawIssuer) == string(c.RawSubject) &&
		c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

func contains(list []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range list {
		if x.Equal(c) {
			return true
		}
	}
	return false
}

func pool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// Name names a certificate by its subject (or serial when it has none).
func Name(c *x509.Certificate) string {
	if s := c.Subject.String(); s != "" {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("(no subject, serial %s)", c.SerialNumber)
}

func list(certs []*x509.Certificate) string {
	var out []string
	for _, c := range certs {
		out = append(out, Name(c))
	}
	return strings.Join(out, ", ")
}

// Names lists the names a certificate is valid for.
func Names(c *x509.Certificate) []string {
	var out []string
	for _, n := range c.DNSNames {
		out = append(out, "DNS:"+n)
	}
	for _, ip := range c.IPAddresses {
		out = append(out, "IP:"+ip.String())
	}
	return out
}

func names(c *x509.Certificate) string {
	if n := Names(c); len(n) > 0 {
		return strings.Join(n, ", ")
	}
	if c.Subject.CommonName != "" {
		return fmt.Sprintf("no name in its subject alternative names (its common name %q is not used as a name by TLS clients)", c.Subject.CommonName)
	}
	return "no name at all"
}

func usages(c *x509.Certificate) string {
	var out []string
	for _, u := range c.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageClientAuth:
			out = append(out, "client authentication")
		case x509.ExtKeyUsageServerAuth:
			out = append(out, "server authentication")
		case x509.ExtKeyUsageCodeSigning:
			out = append(out, "code signing")
		case x509.ExtKeyUsageEmailProtection:
			out = append(out, "email protection")
		default:
			out = append(out, fmt.Sprintf("usage %d", u))
		}
	}
	for _, oid := range c.UnknownExtKeyUsage {
		out = append(out, oid.String())
	}
	if len(out) == 0 {
		return "empty"
	}
	return strings.Join(out, ", ")
}

// hostPort joins a hostname and port for dialing.
func hostPort(host string, port int) string { return net.JoinHostPort(host, fmt.Sprint(port)) }

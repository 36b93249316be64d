// Package servercheck connects to a telemetry server as a vehicle would
// (TLS 1.2 or newer, the configuration's hostname as SNI) and says in
// plain words what a vehicle would find wrong with it: a connection that
// is refused or times out, a server that does not speak TLS, a server
// certificate that expired, is not yet valid or is for another name, a
// chain the server sends incomplete, a CA the vehicle configuration does
// not carry, a self-signed certificate.
//
// It needs no client certificate: the server's certificates arrive before
// the client's, so they are read even when the server then refuses the
// handshake for the missing client certificate.
package servercheck

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// Options say whom to check and what a vehicle trusts.
type Options struct {
	// Hostname is the name the vehicle connects to: the SNI sent and the
	// name the certificate must carry.
	Hostname string
	// Port defaults to 443.
	Port int
	// Addr, when set, is dialed instead of Hostname:Port (a server that
	// DNS does not point at yet, a test).
	Addr string
	// CA are the certificates the vehicle configuration's ca holds.
	CA []*x509.Certificate
	// ClientCert, when set, is presented when the server asks for one,
	// and the check says whether the server took it.
	ClientCert *tls.Certificate
	// Timeout bounds the connection and the handshake each (default
	// 10 s).
	Timeout time.Duration
	// Now is the time certificates are checked at (default time.Now()).
	Now time.Time
	// SystemRoots are tried when the chain does not verify against CA;
	// nil: this machine's (x509.SystemCertPool), when it has them.
	SystemRoots *x509.CertPool
}

// Result is what a check found.
type Result struct {
	// Addr is the address dialed.
	Addr string
	// Version and CipherSuite are the handshake's, once known.
	Version, CipherSuite uint16
	// Served are the certificates the server sent, its own first.
	Served []*x509.Certificate
	// ClientCertRequested: the server asked for a client certificate.
	ClientCertRequested bool
	// ClientCertAccepted: the server took ClientCert (only when one was
	// given and asked for).
	ClientCertAccepted bool
	// HandshakeErr is how the handshake ended when it did not complete.
	HandshakeErr error
	// Chain is the chain verified against CA; nil when it does not verify.
	Chain []*x509.Certificate
	// Problems make a vehicle refuse the server (or depend on what only
	// some vehicles have); Warnings do not; Notes explain what happened.
	Problems, Warnings, Notes []string
}

// OK reports whether a vehicle trusts the server: it was reached and no
// problem was found.
func (r *Result) OK() bool { return len(r.Served) > 0 && len(r.Problems) == 0 }

// Check connects to the server once and reports what a vehicle would find
// wrong with it.
func Check(ctx context.Context, o Options) *Result {
	if o.Port == 0 {
		o.Port = 443
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	r := &Result{Addr: o.Addr}
	if r.Addr == "" {
		r.Addr = hostPort(o.Hostname, o.Port)
	}
	problem := func(f string, a ...any) { r.Problems = append(r.Problems, fmt.Sprintf(f, a...)) }

	dialer := net.Dialer{Timeout: o.Timeout}
	raw, err := dialer.DialContext(ctx, "tcp", r.Addr)
	if err != nil {
		problem("%s", dialProblem(err, r.Addr, o.Timeout))
		return r
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(o.Timeout))

	var seen *tls.ConnectionState
	conn := tls.Client(raw, &tls.Config{
		ServerName: o.Hostname,
		// The served chain is verified below against the vehicle
		// configuration's ca, so that each thing wrong with it can be
		// named; crypto/tls would stop at the first.
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			seen = &cs
			return nil
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			r.ClientCertRequested = true
			if o.ClientCert != nil {
				return o.ClientCert, nil
			}
			return &tls.Certificate{}, nil
		},
	})
	hsErr := conn.HandshakeContext(ctx)
	if seen != nil {
		r.Served, r.Version, r.CipherSuite = seen.PeerCertificates, seen.Version, seen.CipherSuite
	}
	if hsErr == nil {
		cs := conn.ConnectionState()
		r.Version, r.CipherSuite = cs.Version, cs.CipherSuite
	}
	if r.Served == nil {
		r.HandshakeErr = hsErr
		problem("%s", handshakeProblem(hsErr, r.Addr, o.Hostname, o.Timeout))
		return r
	}

	switch {
	case hsErr != nil && !r.ClientCertRequested:
		r.HandshakeErr = hsErr
		problem("the handshake failed after the server sent its certificates: %v", hsErr)
	case hsErr == nil && !r.ClientCertRequested:
		problem("the server did not ask for a client certificate: vehicles authenticate with theirs (mutual TLS), and a server that does not ask cannot tell which vehicle is connected. " +
			"A load balancer or proxy that terminates TLS in front of fleet-telemetry is the usual cause: let it pass TCP through")
	case o.ClientCert == nil && hsErr != nil:
		r.HandshakeErr = hsErr
		r.Notes = append(r.Notes, fmt.Sprintf("without a client certificate the server ended the handshake (%v) after sending its own certificates, which were checked", hsErr))
	case o.ClientCert == nil:
		// TLS 1.3: the refusal for the missing certificate comes after
		// the client's handshake is over; nothing waits for it.
	case hsErr != nil:
		r.HandshakeErr = hsErr
		problem("the server refused the client certificate: %v", hsErr)
	default:
		// In TLS 1.3 the server judges the client certificate after the
		// client's handshake is over: its refusal arrives as an alert.
		raw.SetReadDeadline(time.Now().Add(min(o.Timeout, 2*time.Second)))
		var b [1]byte
		_, err := conn.Read(b[:])
		var ne net.Error
		switch {
		case err == nil, errors.As(err, &ne) && ne.Timeout():
			r.ClientCertAccepted = true
		default:
			r.HandshakeErr = err
			problem("the server refused the client certificate: %v", err)
		}
	}

	roots := o.SystemRoots
	if roots == nil {
		roots, _ = x509.SystemCertPool()
	}
	d := Diagnose(Input{Hostname: o.Hostname, Served: r.Served, CA: o.CA, SystemRoots: roots, Now: o.Now})
	r.Chain = d.Chain
	r.Problems = append(r.Problems, d.Problems...)
	r.Warnings = append(r.Warnings, d.Warnings...)
	return r
}

// dialProblem says why a TCP connection failed.
func dialProblem(err error, addr string, timeout time.Duration) string {
	var dnsErr *net.DNSError
	var ne net.Error
	switch {
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return fmt.Sprintf("%s does not resolve: DNS has no address for %s", addr, dnsErr.Name)
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("cannot resolve %s: %v", addr, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("connection refused by %s: nothing listens there (or a firewall rejects the connection)", addr)
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Sprintf("connection to %s timed out after %s: a firewall that drops the packets, or the wrong address", addr, timeout)
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return fmt.Sprintf("%s is unreachable from here: %v", addr, err)
	}
	return fmt.Sprintf("cannot connect to %s: %v", addr, err)
}

// handshakeProblem says why a handshake ended before the server's
// certificates arrived.
func handshakeProblem(err error, addr, hostname string, timeout time.Duration) string {
	var rh tls.RecordHeaderError
	var ne net.Error
	if a, ok := remoteAlert(err); ok {
		s := fmt.Sprintf("the server at %s refused the handshake before sending a certificate: %v", addr, err)
		switch a {
		case 70: // protocol_version
			s += " (it offers no TLS version from 1.2 up, which vehicles need)"
		case 112: // unrecognized_name
			s += fmt.Sprintf(" (it serves no certificate for the name %q)", hostname)
		case 40: // handshake_failure
			s += " (no cipher suite or key exchange in common)"
		}
		return s
	}
	switch {
	case errors.As(err, &rh):
		h := string(rh.RecordHeader[:])
		if strings.HasPrefix(h, "HTTP/") {
			return fmt.Sprintf("%s does not speak TLS: it answered in plain HTTP", addr)
		}
		return fmt.Sprintf("%s does not speak TLS: it answered with bytes that are not a TLS record (%q)", addr, h)
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Sprintf("%s accepted the connection but sent no TLS handshake within %s", addr, timeout)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Sprintf("%s closed the connection during the handshake without sending a certificate (not a TLS server, or one that does not serve the name %q)", addr, hostname)
	case err == nil:
		return fmt.Sprintf("%s completed the handshake without sending a certificate", addr)
	}
	return fmt.Sprintf("the TLS handshake with %s failed before the server sent a certificate: %v", addr, err)
}

// remoteAlert returns the alert a peer sent, when err is one.
func remoteAlert(err error) (uint8, bool) {
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "remote error" || oe.Err == nil {
		return 0, false
	}
	for a := range 256 {
		if tls.AlertError(a).Error() == oe.Err.Error() {
			return uint8(a), true
		}
	}
	return 0, false
}

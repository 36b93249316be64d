package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/servercheck"
	"github.com/fleet-telemetry/fleet-telemetry/internal/timefmt"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicleconfig"
)

const checkServerUsage = `usage: fleet-telemetry check-server -config VEHICLE-CONFIG.json [-connect HOST:PORT] [-cert FILE -key FILE] [-timeout 10s]
       fleet-telemetry check-server -hostname H [-port 443] -ca FILE [-connect HOST:PORT] [-cert FILE -key FILE]

Connects to the server a vehicle configuration points at as a vehicle
would (TLS 1.2 or newer, the configuration's hostname as SNI), verifies the
certificate chain the server sends against the configuration's ca for that
hostname, and says in plain words what a vehicle would find wrong: a
connection refused or timing out, a server that does not speak TLS, a
server certificate that expired or is not valid yet, one for another name
(and which names it has), an incomplete chain (the server does not send
its intermediate certificates, so only a vehicle that already holds them
verifies it), a CA the configuration's ca does not carry, a self-signed
server certificate, a server that does not ask for a client certificate.

It prints what it checked on stdout: the server certificate's subject,
issuer, validity and names, the chain the server sends and the chain that
verifies. Exits 0 when a vehicle would trust the server; otherwise lists
the problems on stderr and exits 1 (2: a usage error). Warnings go to
stderr and do not fail.

No client certificate is needed: the server's certificates arrive before
the vehicle's, so they are checked even though the server then ends the
handshake for want of one. With -cert and -key, that certificate is
presented and the check also says whether the server accepts it.

-hostname, -port and -ca override the configuration's. -connect dials
another address (a server DNS does not point at yet) while SNI and the name
checked stay the hostname. When the chain does not verify against ca it is
tried against this machine's roots too, to tell a CA missing from the
configuration from a broken chain (SSL_CERT_FILE and SSL_CERT_DIR choose
those roots).
`

// checkServer implements `fleet-telemetry check-server`.
func checkServer(args []string) int {
	c := newCLI("check-server", checkServerUsage)
	configPath := c.String("config", "", "the vehicle configuration file (from vehicle-config)")
	hostname := c.String("hostname", "", "the name vehicles connect to (overrides the configuration's)")
	port := c.Int("port", 0, "the port vehicles connect to (default: the configuration's, or 443)")
	caFile := c.String("ca", "", "PEM file of the CA certificates vehicles trust (overrides the configuration's ca)")
	connect := c.String("connect", "", "dial this HOST:PORT instead of hostname:port")
	certFile := c.String("cert", "", "a client certificate (PEM) to present")
	keyFile := c.String("key", "", "the client certificate's key (PEM)")
	timeout := c.Duration("timeout", 10*time.Second, "bound on the connection and on the handshake, each")
	if code, done := c.parseFlags(args, true); done {
		return code
	}
	if (*certFile == "") != (*keyFile == "") {
		return c.usageError("-cert and -key go together")
	}
	fail := func(f string, a ...any) int {
		fmt.Fprintf(os.Stderr, "fleet-telemetry check-server: "+f+"\n", a...)
		return 1
	}

	o := servercheck.Options{Hostname: *hostname, Port: *port, Addr: *connect, Timeout: *timeout}
	var caText string
	if *configPath != "" {
		data, err := os.ReadFile(*configPath)
		if err != nil {
			return fail("%v", err)
		}
		cfg, err := vehicleconfig.Parse(data)
		if err != nil {
			return fail("%s: %v", *configPath, err)
		}
		if o.Hostname == "" {
			o.Hostname = cfg.Hostname
		}
		if o.Port == 0 {
			o.Port = cfg.Port
		}
		caText = cfg.CA
	} else if *hostname == "" || *caFile == "" {
		return c.usageError("give -config FILE, or -hostname and -ca")
	}
	if *caFile != "" {
		b, err := os.ReadFile(*caFile)
		if err != nil {
			return fail("-ca: %v", err)
		}
		caText = string(b)
	}
	ca, problems := vehicleconfig.ParseCA(caText)
	if len(problems) > 0 {
		return fail("%s", strings.Join(problems, "; "))
	}
	o.CA = ca
	if *certFile != "" {
		pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			return fail("-cert/-key: %v", err)
		}
		o.ClientCert = &pair
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2**timeout+time.Second)
	defer cancel()
	r := servercheck.Check(ctx, o)
	printServerCheck(os.Stdout, o, r)
	for _, w := range r.Warnings {
		fmt.Fprintf(os.Stderr, "warning: %s\n", w)
	}
	if !r.OK() {
		fmt.Fprintf(os.Stderr, "fleet-telemetry check-server: %s: %d problem(s):\n", r.Addr, len(r.Problems))
		for _, p := range r.Problems {
			fmt.Fprintf(os.Stderr, "  %s\n", p)
		}
		return 1
	}
	fmt.Printf("ok: a vehicle with this configuration trusts %s\n", o.Hostname)
	return 0
}

// printServerCheck prints what a check saw.
func printServerCheck(w io.Writer, o servercheck.Options, r *servercheck.Result) {
	line := func(label, f string, a ...any) { fmt.Fprintf(w, "%-12s %s\n", label, fmt.Sprintf(f, a...)) }
	server := fmt.Sprintf("%s, hostname %s", r.Addr, o.Hostname)
	if r.Version != 0 {
		server += fmt.Sprintf(", %s, %s", tls.VersionName(r.Version), tls.CipherSuiteName(r.CipherSuite))
	}
	line("server", "%s", server)
	if len(r.Served) == 0 {
		return
	}
	leaf := r.Served[0]
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	var validity string
	switch {
	case now.After(leaf.NotAfter):
		validity = "EXPIRED"
	case now.Before(leaf.NotBefore):
		validity = "NOT YET VALID"
	default:
		validity = "expires in " + timefmt.Span(leaf.NotAfter.Sub(now))
	}
	names := strings.Join(servercheck.Names(leaf), ", ")
	if names == "" {
		names = "(none)"
	}
	line("subject", "%s", leaf.Subject)
	line("issuer", "%s", leaf.Issuer)
	line("valid", "%s to %s (%s)", timefmt.Stamp(leaf.NotBefore), timefmt.Stamp(leaf.NotAfter), validity)
	line("names", "%s", names)
	line("sent chain", "%d certificate(s): %s", len(r.Served), chainString(r.Served, nil))
	if r.Chain != nil {
		line("verified", "%s", chainString(r.Chain, r.Served))
	} else {
		line("verified", "no: the chain does not verify against the configuration's ca")
	}
	client := "not asked for"
	if r.ClientCertRequested {
		client = "asked for"
		switch {
		case o.ClientCert == nil:
			client += ", none presented (vehicles present theirs; this check needs none)"
		case r.ClientCertAccepted:
			client += ", presented and accepted"
		default:
			client += ", presented and refused"
		}
	}
	line("client cert", "%s", client)
	for _, n := range r.Notes {
		line("note", "%s", n)
	}
}

// chainString shows a chain leaf first; with served, each certificate the
// server did not send is marked as coming from the ca.
func chainString(chain, served []*x509.Certificate) string {
	var parts []string
	for i, c := range chain {
		s := servercheck.Name(c)
		if served != nil && i > 0 && !containsCert(served, c) {
			s += " (from ca)"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " <- ")
}

func containsCert(list []*x509.Certificate, c *x509.Certificate) bool {
	for _, x := range list {
		if x.Equal(c) {
			return true
		}
	}
	return false
}

// Package vehicleconfig builds and checks a vehicle configuration: what a
// vehicle is told (through the Fleet API's fleet_telemetry_config) to
// stream to a telemetry server. It holds the server's hostname and port,
// the CA certificates the vehicle trusts for that server (PEM text), the
// fields to stream with an interval each, the alert audiences to push, and
// optionally when the configuration expires:
//
//	{"hostname": "telemetry.example.com", "port": 443,
//	 "ca": "-----BEGIN CERTIFICATE-----\n...",
//	 "fields": {"VehicleSpeed": {"interval_seconds": 10}},
//	 "alert_types": ["service"], "exp": 1767225600}
//
// Field names are checked against the Field enum of
// proto/telemetry/vehicle_data.proto.
package vehicleconfig

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/timefmt"
)

// DefaultPort is the port a vehicle connects to when the configuration
// names none.
const DefaultPort = 443

// Config is a vehicle configuration. Its JSON form is the file's.
type Config struct {
	Hostname string `json:"hostname"`
	Port     int    `json:"port,omitempty"`
	// CA is PEM text: the certificates the vehicle trusts for the server.
	CA         string           `json:"ca"`
	Fields     map[string]Field `json:"fields,omitempty"`
	AlertTypes []string         `json:"alert_types,omitempty"`
	// Exp is when the configuration expires, in Unix seconds (0: never).
	Exp int64 `json:"exp,omitempty"`
}

// Field is one streamed field's settings.
type Field struct {
	IntervalSeconds int `json:"interval_seconds"`
}

// Report is what a check found: problems make a configuration unusable;
// warnings are worth a look but do not.
type Report struct {
	Problems []string
	Warnings []string
}

// OK reports whether the check found no problem.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// Options are what Build makes a configuration from.
type Options struct {
	Hostname string
	// Port defaults to DefaultPort.
	Port int
	// CAPEM is the content of a PEM file of CA certificates; only its
	// certificates go into the configuration.
	CAPEM []byte
	// Fields is a comma-separated list of Name:seconds.
	Fields string
	// AlertTypes are the alert audiences to push ("service").
	AlertTypes []string
	// Exp is when the configuration expires, Unix seconds (0: not set).
	Exp int64
	// Now is the time certificates and Exp are checked at (default
	// time.Now()).
	Now time.Time
}

// Build makes a configuration from o and checks it as Check would. It
// returns the configuration's JSON (indented, newline-terminated) only
// when the report has no problem.
func Build(o Options) ([]byte, Report) {
	c := newChecker(o.Now)
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	cfg := Config{Hostname: o.Hostname, Port: o.Port, AlertTypes: o.AlertTypes, Exp: o.Exp}
	c.hostname(o.Hostname)
	c.port(int64(o.Port))
	if len(o.CAPEM) == 0 {
		c.problem("no ca given: the PEM file of the CA certificate(s) that issued the server's certificate chain")
	} else {
		certs := c.ca(string(o.CAPEM))
		var b strings.Builder
		for _, cert := range certs {
			b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
		}
		cfg.CA = b.String()
	}
	cfg.Fields = c.fieldSpec(o.Fields)
	if o.AlertTypes != nil {
		c.alertTypes(o.AlertTypes)
	}
	if o.Exp != 0 {
		c.exp(o.Exp)
	}
	if !c.r.OK() {
		return nil, c.r
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(cfg); err != nil {
		c.problem(fmt.Sprintf("encode: %v", err))
		return nil, c.r
	}
	return buf.Bytes(), c.r
}

// Check checks a configuration file's content at now (the zero time:
// time.Now()), naming every problem it finds, not just the first.
func Check(data []byte, now time.Time) Report {
	c := newChecker(now)
	obj, err := decodeObject(data)
	if err != nil {
		c.problem(err.Error())
		return c.r
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch k {
		case "hostname", "port", "ca", "fields", "alert_types", "exp":
		default:
			c.warning(fmt.Sprintf("%q is not a key this check knows (hostname, port, ca, fields, alert_types, exp): it is not checked", k))
		}
	}

	required(c, obj, "hostname", "the name vehicles connect to, which the server certificate must carry",
		"a string", c.hostname)

	if p, present := obj["port"]; present {
		if n, ok := integer(p); ok {
			c.port(n)
		} else {
			c.problem(fmt.Sprintf("port must be a whole number from 1 to 65535, not %s", show(p)))
		}
	}

	required(c, obj, "ca", "the PEM text of the CA certificate(s) that issued the server's certificate chain",
		"a string of PEM text", func(text string) { c.ca(text) })
	required(c, obj, "fields", "the vehicle would stream nothing",
		`an object like {"VehicleSpeed": {"interval_seconds": 10}}`, c.fields)

	if v, present := obj["alert_types"]; present {
		list, ok := v.([]any)
		var types []string
		for _, e := range list {
			s, isString := e.(string)
			ok = ok && isString
			types = append(types, s)
		}
		if ok {
			c.alertTypes(types)
		} else {
			c.problem(fmt.Sprintf(`alert_types must be a list of strings like ["service"], not %s`, show(v)))
		}
	}

	if v, present := obj["exp"]; present {
		if n, ok := integer(v); ok {
			c.exp(n)
		} else {
			c.problem(fmt.Sprintf("exp must be a whole number of Unix seconds, not %s", show(v)))
		}
	}
	return c.r
}

// required checks a key obj must hold: absent or null, it is a problem
// saying what the key is for (missing); of another type than T, a problem
// saying what it must be (want, "a string"); else check takes its value.
func required[T any](c *checker, obj map[string]any, key, missing, want string, check func(T)) {
	switch v, ok := obj[key].(T); {
	case obj[key] == nil:
		c.problem(key + " is missing: " + missing)
	case !ok:
		c.problem(fmt.Sprintf("%s must be %s, not %s", key, want, kind(obj[key])))
	default:
		check(v)
	}
}

// Parse reads the hostname, port (DefaultPort when absent), ca and fields
// of a configuration file, checking only that they have the right types
// and that hostname and ca are there: what a tool that connects as the
// vehicle needs. Check says everything else.
func Parse(data []byte) (*Config, error) {
	if _, err := decodeObject(data); err != nil {
		return nil, err
	}
	var cfg Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("vehicle config: %w", err)
	}
	var missing []string
	if cfg.Hostname == "" {
		missing = append(missing, "hostname")
	}
	if cfg.CA == "" {
		missing = append(missing, "ca")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("vehicle config: no %s", strings.Join(missing, " and no "))
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	return &cfg, nil
}

// ParseCA reads PEM text as a vehicle's ca: certificates only. It returns
// the certificates it read and what is wrong with the text (anything but
// certificates, certificates that do not parse, no certificate at all).
// It does not look at the certificates' dates.
func ParseCA(text string) ([]*x509.Certificate, []string) {
	var certs []*x509.Certificate
	var problems []string
	rest := []byte(text)
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		n++
		if block.Type != "CERTIFICATE" {
			p := fmt.Sprintf("ca: PEM block %d is %q, not a CERTIFICATE", n, block.Type)
			if strings.Contains(block.Type, "PRIVATE KEY") {
				p += ": a private key must never go into a vehicle configuration"
			}
			problems = append(problems, p)
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			problems = append(problems, fmt.Sprintf("ca: certificate %d does not parse: %v", n, err))
			continue
		}
		certs = append(certs, cert)
	}
	switch {
	case n == 0 && strings.Contains(text, `\n`) && !strings.Contains(text, "\n"):
		problems = append(problems, `ca holds no PEM certificate: its text has the two characters \n where line breaks belong (escaped twice?)`)
	case n == 0:
		problems = append(problems, "ca holds no PEM certificate (PEM text starts with -----BEGIN CERTIFICATE-----)")
	case len(certs) == 0 && len(problems) == n:
		problems = append(problems, "ca holds no certificate")
	case len(bytes.TrimSpace(rest)) > 0:
		problems = append(problems, fmt.Sprintf("ca: text after PEM block %d is not PEM: %q", n, clip(string(bytes.TrimSpace(rest)), 40)))
	}
	return certs, problems
}

// describe names a certificate by its subject, for messages.
func describe(c *x509.Certificate) string {
	if s := c.Subject.String(); s != "" {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("(no subject, serial %s)", c.SerialNumber)
}

type checker struct {
	now time.Time
	r   Report
}

func newChecker(now time.Time) *checker {
	if now.IsZero() {
		now = time.Now()
	}
	return &checker{now: now}
}

func (c *checker) problem(s string) { c.r.Problems = append(c.r.Problems, s) }
func (c *checker) warning(s string) { c.r.Warnings = append(c.r.Warnings, s) }

func (c *checker) hostname(h string) {
	if h == "" {
		c.problem("hostname is empty: the name vehicles connect to, which the server certificate must carry")
		return
	}
	if i := strings.Index(h, "://"); i >= 0 {
		c.problem(fmt.Sprintf("hostname %q holds a URL scheme: give the bare name", h))
		return
	}
	if strings.ContainsRune(h, '/') {
		c.problem(fmt.Sprintf("hostname %q holds a path: give the bare name", h))
		return
	}
	if host, port, err := net.SplitHostPort(h); err == nil {
		c.problem(fmt.Sprintf("hostname %q holds a port: give %q as hostname and %s as port", h, host, port))
		return
	}
	if net.ParseIP(h) != nil {
		return
	}
	if len(h) > 253 {
		c.problem(fmt.Sprintf("hostname %q is longer than 253 characters", clip(h, 40)))
		return
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if !validLabel(label) {
			c.problem(fmt.Sprintf("hostname %q is not a DNS name: %q is not a valid label (letters, digits and inner hyphens, 1 to 63 of them)", h, label))
			return
		}
	}
}

func validLabel(l string) bool {
	if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for _, r := range l {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

func (c *checker) port(p int64) {
	if p < 1 || p > 65535 {
		c.problem(fmt.Sprintf("port %d is out of range: a TCP port is 1 to 65535", p))
	}
}

// ca checks the ca text and its certificates' dates, and returns the
// certificates.
func (c *checker) ca(text string) []*x509.Certificate {
	certs, problems := ParseCA(text)
	for _, p := range problems {
		c.problem(p)
	}
	for _, cert := range certs {
		name := describe(cert)
		switch {
		case c.now.After(cert.NotAfter):
			c.problem(fmt.Sprintf("ca certificate %s expired on %s", name, timefmt.Stamp(cert.NotAfter)))
		case c.now.Before(cert.NotBefore):
			c.problem(fmt.Sprintf("ca certificate %s is not valid before %s", name, timefmt.Stamp(cert.NotBefore)))
		case cert.NotAfter.Sub(c.now) < 30*24*time.Hour:
			c.warning(fmt.Sprintf("ca certificate %s expires on %s, in %s", name, timefmt.Stamp(cert.NotAfter), timefmt.Span(cert.NotAfter.Sub(c.now))))
		}
		if !cert.IsCA {
			c.warning(fmt.Sprintf("ca certificate %s is not a CA certificate: a vehicle can trust the server with it only if the server presents exactly this certificate", name))
		}
	}
	return certs
}

// fieldSpec parses Name:seconds,Name:seconds and checks each entry.
func (c *checker) fieldSpec(spec string) map[string]Field {
	out := map[string]Field{}
	seen := map[string]bool{}
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, secs, ok := strings.Cut(item, ":")
		name, secs = strings.TrimSpace(name), strings.TrimSpace(secs)
		if seen[name] {
			c.problem(fmt.Sprintf("fields: %s is given twice", name))
			continue
		}
		seen[name] = true
		if !ok || secs == "" {
			c.problem(fmt.Sprintf("fields: %q has no interval: give Name:seconds, like %s:10", item, name))
			continue
		}
		n, err := strconv.ParseInt(secs, 10, 64)
		known := c.fieldName(name)
		if err != nil {
			c.problem(fmt.Sprintf("fields: %s interval %q is not a whole number of seconds", name, secs))
			continue
		}
		if c.interval(name, "interval_seconds", n, 1) && known {
			out[name] = Field{IntervalSeconds: int(n)}
		}
	}
	if len(seen) == 0 {
		c.problem("no fields given: the vehicle would stream nothing (-fields VehicleSpeed:10,Location:30 ...)")
	}
	return out
}

// fields checks a configuration file's fields object.
func (c *checker) fields(m map[string]any) {
	if len(m) == 0 {
		c.problem("fields is empty: the vehicle would stream nothing")
		return
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		if !c.fieldName(name) {
			continue
		}
		settings, ok := m[name].(map[string]any)
		if !ok {
			c.problem(fmt.Sprintf(`fields.%s must be an object like {"interval_seconds": 10}, not %s`, name, show(m[name])))
			continue
		}
		if _, ok := settings["interval_seconds"]; !ok {
			c.problem(fmt.Sprintf("fields.%s has no interval_seconds", name))
		}
		keys := make([]string, 0, len(settings))
		for k := range settings {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v := settings[k]
			switch k {
			case "interval_seconds", "resend_interval_seconds":
				n, ok := integer(v)
				if !ok {
					c.problem(fmt.Sprintf("fields.%s.%s must be a whole number of seconds, not %s", name, k, show(v)))
				} else if k == "interval_seconds" {
					c.interval(name, k, n, 1)
				} else {
					c.interval(name, k, n, 0)
				}
			case "minimum_delta":
				if f, ok := number(v); !ok || f < 0 {
					c.problem(fmt.Sprintf("fields.%s.minimum_delta must be a number of 0 or more, not %s", name, show(v)))
				}
			default:
				c.warning(fmt.Sprintf("fields.%s.%s is not a setting this check knows (interval_seconds, minimum_delta, resend_interval_seconds): it is not checked", name, k))
			}
		}
	}
}

// fieldName reports whether name is a field, and otherwise says which
// names are close.
func (c *checker) fieldName(name string) bool {
	if IsField(name) {
		return true
	}
	if isPlaceholder(name) {
		c.problem(fmt.Sprintf("fields: %s is a placeholder in the Field enum, not a field a vehicle streams", name))
		return false
	}
	p := fmt.Sprintf("fields: %q is not a field name", name)
	if s := Suggest(name, 3); len(s) > 0 {
		p += fmt.Sprintf("; did you mean %s?", orList(s))
	} else {
		p += " (fleet-telemetry vehicle-config -list-fields prints them all)"
	}
	c.problem(p)
	return false
}

// interval checks a field's interval setting against its least value.
func (c *checker) interval(name, key string, n, least int64) bool {
	if n < least || n > math.MaxInt32 {
		c.problem(fmt.Sprintf("fields.%s.%s is %d: it must be %d or more seconds", name, key, n, least))
		return false
	}
	return true
}

func (c *checker) alertTypes(types []string) {
	seen := map[string]bool{}
	for _, t := range types {
		switch {
		case strings.TrimSpace(t) == "":
			c.problem("alert_types holds an empty name")
		case seen[t]:
			c.warning(fmt.Sprintf("alert_types lists %q twice", t))
		case t != "service":
			c.warning(fmt.Sprintf(`alert_types %q: the reference server's documentation recommends "service" only`, t))
		}
		seen[t] = true
	}
}

func (c *checker) exp(n int64) {
	t := time.Unix(n, 0)
	switch {
	case n > 1e11:
		c.problem(fmt.Sprintf("exp %d looks like milliseconds: it is Unix seconds (%d)", n, n/1000))
	case n <= 0:
		c.problem(fmt.Sprintf("exp %d is not a time: it is Unix seconds", n))
	case !t.After(c.now):
		c.problem(fmt.Sprintf("exp %d (%s) is in the past: the configuration has expired", n, timefmt.Stamp(t)))
	}
}

// decodeObject reads data as one JSON object, numbers kept as
// json.Number.
func decodeObject(data []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line, col := position(data, se.Offset)
			return nil, fmt.Errorf("not valid JSON: %v (line %d, column %d)", err, line, col)
		}
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty")
		}
		return nil, fmt.Errorf("not valid JSON: %v", err)
	}
	if dec.More() {
		return nil, errors.New("not valid JSON: more than one value")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("the file holds %s, not a JSON object", kind(v))
	}
	return obj, nil
}

func position(data []byte, offset int64) (line, col int) {
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	before := data[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(offset) - (bytes.LastIndexByte(before, '\n') + 1)
	return line, col
}

func integer(v any) (int64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	i, err := strconv.ParseInt(string(n), 10, 64)
	return i, err == nil
}

func number(v any) (float64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, false
	}
	f, err := n.Float64()
	return f, err == nil
}

func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return kind(v)
	}
	return clip(string(b), 40)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func orList(s []string) string {
	if len(s) == 1 {
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/introspect"
	"github.com/fleet-telemetry/fleet-telemetry/netloop"
)

// defaultConfigPath is the config file the systemd unit runs the daemon
// with: conns and status read its monitoring port when given nothing else.
const defaultConfigPath = "/etc/fleet-telemetry/config.json"

// introOpts are the flags conns and status share: where the daemon's
// monitoring port is.
type introOpts struct {
	config  string
	dev     bool
	addr    string
	json    bool
	timeout time.Duration
}

func (o *introOpts) register(c *cli) {
	c.StringVar(&o.config, "config", "", "the daemon's config file: its monitoring.prometheus_metrics_host and _port (default "+defaultConfigPath+" when it exists)")
	c.BoolVar(&o.dev, "dev", false, "the embedded dev config's monitoring port (127.0.0.1:9273, what make run serves)")
	c.StringVar(&o.addr, "addr", "", "the monitoring port as HOST:PORT (instead of -config or -dev)")
	c.BoolVar(&o.json, "json", false, "print the daemon's JSON as it came (indented)")
	c.DurationVar(&o.timeout, "timeout", 5*time.Second, "give up after this long")
}

// monitoringAddr is the monitoring port to ask.
func (o *introOpts) monitoringAddr() (string, error) {
	if o.addr != "" {
		if o.config != "" || o.dev {
			return "", errors.New("give -addr, -config or -dev, not two of them")
		}
		if _, _, err := net.SplitHostPort(o.addr); err != nil {
			return "", fmt.Errorf("-addr %q: %w", o.addr, err)
		}
		return o.addr, nil
	}
	path := o.config
	if path == "" && !o.dev {
		if _, err := os.Stat(defaultConfigPath); err != nil {
			return "", fmt.Errorf("no daemon to ask: pass -addr HOST:PORT, -config FILE or -dev (%s: %w)", defaultConfigPath, err)
		}
		path = defaultConfigPath
	}
	cfg, _, err := loadConfig(path, o.dev)
	if err != nil {
		return "", err
	}
	m := cfg.Monitoring
	if m == nil || m.PrometheusMetricsPort <= 0 {
		return "", errors.New("the config serves no monitoring port: set monitoring.prometheus_metrics_port (/connz, /varz and the status page are served there)")
	}
	host := m.PrometheusMetricsHost
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1" // bound to every address: this host's is one of them
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, strconv.Itoa(m.PrometheusMetricsPort)), nil
}

// ask fetches an answer from the daemon's monitoring port with get and
// prints it: as the daemon's JSON with -json, else with human. The exit
// code is 2 when there is no port to ask, 1 when the request or the
// printing failed, else 0; errors go to stderr under cmd's name.
func ask[T any](o *introOpts, cmd string, get func(context.Context, *introspect.Client) (T, error), human func(T)) (T, int) {
	var v T
	addr, err := o.monitoringAddr()
	if err != nil {
		fmt.Fprintf(os.Stderr, "fleet-telemetry %s: %v\n", cmd, err)
		return v, 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	v, err = get(ctx, &introspect.Client{Addr: addr})
	if err != nil {
		fmt.Fprintf(os.Stderr, "fleet-telemetry %s: %v\n", cmd, err)
		return v, 1
	}
	if !o.json {
		human(v)
		return v, 0
	}
	if err := printJSON(os.Stdout, v); err != nil {
		return v, 1
	}
	return v, 0
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

const connsUsage = `usage: fleet-telemetry conns [-vin V] [-sort KEY] [-reverse] [-limit N] [-offset N] [-json]
                            [-config FILE | -dev | -addr HOST:PORT]

Lists the vehicles connected to a running daemon, from /connz on its
monitoring port: VIN, client type, remote address, how long connected, TLS
version, records and bytes received, records rate-limited and refused,
the last record's age, acks owed and bytes buffered. -vin keeps the VINs
that contain V (any case). With -vin, the exit status is 1 when no
connected vehicle matches.

Sort keys: ` + "vin (default), cid, connected_since, records, bytes, last_record, rate_limited, refused, acks_owed, buffered" + `
`

// conns implements `fleet-telemetry conns`.
func conns(args []string) int {
	c := newCLI("conns", connsUsage)
	var o introOpts
	o.register(c)
	vin := c.String("vin", "", "only VINs containing this (any case)")
	sortKey := c.String("sort", "vin", "sort key (see above)")
	reverse := c.Bool("reverse", false, "flip the sort key's natural direction")
	limit := c.Int("limit", netloop.DefaultConnLimit, fmt.Sprintf("at most this many vehicles (up to %d)", netloop.MaxConnLimit))
	offset := c.Int("offset", 0, "skip this many of the sorted list")
	if code, done := c.parseFlags(args, true); done {
		return code
	}
	key, err := netloop.ParseConnSort(*sortKey)
	if err != nil {
		return c.usageError(err.Error())
	}
	if *limit <= 0 || *limit > netloop.MaxConnLimit || *offset < 0 {
		return c.usageError(fmt.Sprintf("-limit must be 1..%d and -offset at least 0", netloop.MaxConnLimit))
	}
	q := netloop.ConnQuery{VIN: *vin, Sort: key, Reverse: *reverse, Limit: *limit, Offset: *offset}
	p, code := ask(&o, "conns",
		func(ctx context.Context, cl *introspect.Client) (netloop.ConnPage, error) { return cl.Connz(ctx, q) },
		func(p netloop.ConnPage) { printConns(os.Stdout, p, *vin, time.Now()) })
	if code != 0 {
		return code
	}
	if *vin != "" && p.Total == 0 {
		return 1
	}
	return 0
}

// printConns writes a page of vehicles as a table.
func printConns(out io.Writer, p netloop.ConnPage, vin string, now time.Time) {
	if p.Total == 0 {
		if vin != "" {
			fmt.Fprintf(out, "no connected vehicle's VIN contains %q\n", vin)
		} else {
			fmt.Fprintln(out, "no vehicle connected")
		}
		return
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "VIN\tCLIENT\tREMOTE\tCONNECTED\tTLS\tRECORDS\tBY TYPE\tBYTES\tRATE-LIMITED\tREFUSED\tLAST RECORD\tACKS OWED\tBUFFERED")
	for _, c := range p.Conns {
		last := "never"
		if c.LastRecordAt != nil {
			last = fmtSpan(now.Sub(*c.LastRecordAt)) + " ago"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%d\t%s\t%d\t%s\n",
			c.VIN, c.ClientType, c.RemoteAddr, fmtSpan(now.Sub(c.ConnectedSince)), c.TLSVersion, c.RecordsIn,
			byTopic(c.RecordsByTopic), fmtBytes(int64(c.BytesIn)), c.RateLimited, c.Refused, last, c.AcksOwed,
			fmtBytes(c.BufferedBytes))
	}
	w.Flush()
	fmt.Fprintf(out, "%d-%d of %d vehicles, by %s%s\n", p.Offset+min(1, len(p.Conns)), p.Offset+len(p.Conns), p.Total,
		p.Sort, map[bool]string{true: " (reversed)"}[p.Reverse])
}

// byTopic is "V 10, alerts 2" (sorted by name), or "-".
func byTopic(m map[string]uint64) string {
	if len(m) == 0 {
		return "-"
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = k + " " + strconv.FormatUint(m[k], 10)
	}
	return strings.Join(parts, ", ")
}

// fmtSpan is a duration rounded for people: 850ms, 42s, 3m12s, 5h3m, 2d4h.
func fmtSpan(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	}
	days := int(d / (24 * time.Hour))
	return fmt.Sprintf("%dd%dh", days, int((d-time.Duration(days)*24*time.Hour)/time.Hour))
}

const statusUsage = `usage: fleet-telemetry status [-json] [-config FILE | -dev | -addr HOST:PORT]

Shows a running daemon's state, from /varz on its monitoring port: version
and uptime, connections, TLS handshakes (failures by reason), records per
second over the last 10 s and refusals by reason, connection memory, the
spool (size, oldest record, free disk), each forwarder lane (cursor, lag,
oldest record waiting, last error) and the budgets in force.
`

// status implements `fleet-telemetry status`.
func status(args []string) int {
	c := newCLI("status", statusUsage)
	var o introOpts
	o.register(c)
	if code, done := c.parseFlags(args, true); done {
		return code
	}
	_, code := ask(&o, "status",
		func(ctx context.Context, cl *introspect.Client) (introspect.Varz, error) { return cl.Varz(ctx, false) },
		func(v introspect.Varz) { printStatus(os.Stdout, v) })
	return code
}

// printStatus writes the daemon's state for people.
func printStatus(out io.Writer, v introspect.Varz) {
	rev := v.Build.Revision
	if v.Build.Modified {
		rev += "-modified"
	}
	fmt.Fprintf(out, "fleet-telemetry %s (revision %s, %s), up %s, vehicles on %s\n\n",
		v.Build.Version, rev, v.Build.GoVersion, fmtSpan(time.Duration(v.UptimeSeconds*float64(time.Second))), v.Listen)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "connections\t%d vehicles, %d open, %d accepted%s\n", v.Connections.Vehicles, v.Connections.Open,
		v.Connections.Accepted, reasons("; refused: ", v.Connections.Refused))
	fmt.Fprintf(w, "handshakes\t%d ok, %d running%s\n", v.Handshakes.OK, v.Handshakes.Running, reasons("; failed: ", v.Handshakes.Failed))
	fmt.Fprintf(w, "records\t%.1f/s over 10 s; %d received (%s), %d spooled, %d acked%s\n", v.Records.PerSecond,
		v.Records.Received, fmtBytes(int64(v.Records.BytesReceived)), v.Records.Spooled, v.Records.AcksSent,
		reasons("; refused: ", v.Records.Refused))
	fmt.Fprintf(w, "memory\tconnection buffers %s of %s, handshakes %s of %s\n", fmtBytes(v.Memory.BufferedBytes),
		fmtBytes(v.Budgets.MaxBufferedBytes), fmtBytes(v.Memory.HandshakeBytes), fmtBytes(v.Budgets.MaxHandshakeBytes))
	sp := v.Spool
	spool := fmt.Sprintf("%s, %d records", fmtBytes(sp.Bytes), sp.Records)
	if sp.Records > 0 {
		spool += fmt.Sprintf(" (seq %d..%d), oldest %s old", sp.FirstSeq, sp.LastSeq,
			fmtSpan(time.Duration(sp.OldestRecordAgeSeconds*float64(time.Second))))
	}
	if sp.QuarantinedRecords > 0 {
		spool += fmt.Sprintf(", %d quarantined", sp.QuarantinedRecords)
	}
	if v.Budgets.SpoolMaxBytes > 0 {
		spool += ", max " + fmtBytes(v.Budgets.SpoolMaxBytes)
	}
	fmt.Fprintf(w, "spool\t%s; %s\n", spool, sp.Dir)
	free := fmtBytes(sp.DiskFreeBytes)
	if sp.DiskFreeError != "" {
		free = "unknown (" + sp.DiskFreeError + ")"
	}
	floor := "no floor"
	if v.Budgets.SpoolMinFreeBytes > 0 {
		floor = "floor " + fmtBytes(v.Budgets.SpoolMinFreeBytes)
	}
	fmt.Fprintf(w, "disk free\t%s (%s)\n", free, floor)
	b := v.Budgets
	idle := "off"
	if b.IdleTimeout >= 0 {
		idle = fmtSpan(time.Duration(b.IdleTimeout * float64(time.Second)))
	}
	rate := "off"
	if b.RateLimitRecords > 0 {
		rate = fmt.Sprintf("%d records per %s", b.RateLimitRecords, fmtSpan(time.Duration(b.RateLimitInterval*float64(time.Second))))
	}
	fmt.Fprintf(w, "budgets\t%d connections, %d handshakes at once, %s handshake memory, %s buffers (%s per connection),\n",
		b.MaxConnections, b.MaxHandshakes, fmtBytes(b.MaxHandshakeBytes), fmtBytes(b.MaxBufferedBytes), fmtBytes(int64(b.MaxConnectionBytes)))
	fmt.Fprintf(w, "\t%d replies in flight, messages up to %s, idle timeout %s, rate limit %s\n",
		b.MaxInFlight, fmtBytes(int64(b.MaxMessageSize)), idle, rate)
	w.Flush()

	fmt.Fprintln(out)
	if len(v.Lanes) == 0 {
		fmt.Fprintln(out, "no forwarder lanes")
		return
	}
	w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "LANE\tCURSOR\tLAG\tOLDEST WAITING\tQUARANTINED\tLAST ERROR")
	for _, l := range v.Lanes {
		oldest := "-"
		if l.OldestWaitingSeconds > 0 {
			oldest = fmtSpan(time.Duration(l.OldestWaitingSeconds * float64(time.Second)))
		}
		lastErr := "-"
		if l.LastError != "" {
			lastErr = fmt.Sprintf("%s (%s ago)", l.LastError, fmtSpan(v.Now.Sub(time.UnixMilli(l.LastErrorMs))))
		}
		fmt.Fprintf(w, "%s/%s\t%d\t%d\t%s\t%d\t%s\n", l.Forwarder, l.RecordType, l.Cursor, l.Lag, oldest, l.Quarantined, lastErr)
	}
	w.Flush()
}

// reasons is prefix and "reason n, ..." for the non-zero counts, sorted by
// reason; empty when there are none.
func reasons(prefix string, m map[string]uint64) string {
	names := make([]string, 0, len(m))
	for k, n := range m {
		if n > 0 {
			names = append(names, k)
		}
	}
	if len(names) == 0 {
		return ""
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = k + " " + strconv.FormatUint(m[k], 10)
	}
	return prefix + strings.Join(parts, ", ")
}

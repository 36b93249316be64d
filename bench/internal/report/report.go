// Package report holds a benchmark run's results and renders them as a
// text table, JSON and a self-contained HTML page with inline SVG charts.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// Latency summarises a histogram, in microseconds.
type Latency struct {
	Count                       int64
	MeanUs, P50Us, P90Us, P99Us float64
	P999Us, MaxUs               float64
	Buckets                     []Bucket `json:",omitempty"`
}

// Bucket is a histogram bucket in microseconds.
type Bucket struct {
	LoUs, HiUs float64
	Count      int64
}

// Sample is one point of the time series (taken every second).
type Sample struct {
	T            float64 // seconds since the scenario started
	Conns        int64
	AckedPerSec  float64
	P99Us        float64 // p99 of the acks in this second
	ServerRSSKiB int64
	ServerCPUPct float64
	BenchRSSKiB  int64
	BenchCPUPct  float64
}

// Result is one scenario's outcome.
type Result struct {
	Scenario string
	Command  string
	Started  time.Time
	// Params are the scenario's settings (connections, in flight, rate ...).
	Params map[string]any

	// MeasuredSeconds is the window the rates and CPU figures cover
	// (after warm-up).
	MeasuredSeconds float64
	Conns           int64
	Sent, Acked     int64
	AckedPerSec     float64
	ErrorReplies    int64
	Mismatches      int64
	Unexpected      int64
	Missing         int64
	ConnErrors      int64
	DialErrors      int64
	Failures        []string `json:",omitempty"`
	FailureCount    int

	Latency *Latency `json:",omitempty"`
	// DiskFloor is the spool file system's own commit latency (a write
	// and fdatasync, as one commit), probed before and after the window:
	// the floor under the ack latency.
	DiskFloor *Latency `json:",omitempty"`
	Handshake *Latency `json:",omitempty"`
	// HandshakesPerSec is completed connections (TLS + upgrade) per second.
	HandshakesPerSec float64 `json:",omitempty"`

	// Forwarded is what the daemon's forwarders sent to their sinks in the
	// window and ForwarderLagEnd the records they had still to send at its
	// end (from the spawned daemon's /metrics). CPU per record is the
	// whole production path's cost only when Forwarded keeps up with Acked.
	Forwarded       int64 `json:",omitempty"`
	ForwarderLagEnd int64 `json:",omitempty"`

	ServerPID int `json:",omitempty"`
	// ServerCPUUsPerRecord is server CPU time / records acked in the window.
	ServerCPUUsPerRecord float64 `json:",omitempty"`
	// ServerCPUUsPerHandshake is server CPU time / connections in a storm.
	ServerCPUUsPerHandshake float64 `json:",omitempty"`
	ServerCPUPct            float64 `json:",omitempty"`
	// ServerWaitPct is the time the daemon's threads were runnable but not
	// running (waiting for a CPU), summed over its threads, as a
	// percentage of the window: ack latency that neither the network nor
	// the disk explains. Zero where the kernel keeps no schedstats.
	ServerWaitPct    float64 `json:",omitempty"`
	ServerRSSBaseKiB int64   `json:",omitempty"`
	ServerRSSKiB     int64   `json:",omitempty"`
	// ServerRSSPerConnKiB is (RSS with the connections − RSS before) / conns.
	ServerRSSPerConnKiB float64 `json:",omitempty"`
	BenchRSSKiB         int64   `json:",omitempty"`
	BenchRSSPerConnKiB  float64 `json:",omitempty"`
	BenchCPUPct         float64 `json:",omitempty"`
	// BenchWaitPct is ServerWaitPct for the bench: time its threads waited
	// for a CPU is added to the latencies it measures.
	BenchWaitPct float64 `json:",omitempty"`

	Samples []Sample `json:",omitempty"`
	OK      bool
}

// Run is a whole invocation.
type Run struct {
	Command string
	Host    string
	Started time.Time
	Note    string `json:",omitempty"`
	Results []*Result
}

// WriteJSON writes the run as indented JSON.
func WriteJSON(path string, r *Run) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func f1(v float64) string {
	if v == 0 {
		return "-"
	}
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// Table writes a human-readable summary.
func Table(w io.Writer, r *Run) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tconns\tacked\tacked/s\tp50 µs\tp90 µs\tp99 µs\tp99.9 µs\tmax µs\tsrv µs/rec\tfwd %\tsrv RSS KiB\tKiB/conn\tconn/s\tsrv CPU%\tbench CPU%\tfailures\t")
	for _, x := range r.Results {
		l := x.Latency
		if l == nil {
			l = &Latency{}
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t\n",
			x.Scenario, x.Conns, x.Acked, f1(x.AckedPerSec), f1(l.P50Us), f1(l.P90Us), f1(l.P99Us), f1(l.P999Us), f1(l.MaxUs),
			f1(x.ServerCPUUsPerRecord), f1(x.ForwardedPct()), x.ServerRSSKiB, f1(x.ServerRSSPerConnKiB), f1(x.HandshakesPerSec),
			f1(x.ServerCPUPct), f1(x.BenchCPUPct), x.FailureCount)
	}
	tw.Flush()
	for _, x := range r.Results {
		status := "OK"
		if !x.OK {
			status = "FAILED"
		}
		fmt.Fprintf(w, "\n%s %s: %v\n", x.Scenario, status, params(x.Params))
		if x.Handshake != nil && x.HandshakesPerSec > 0 {
			fmt.Fprintf(w, "  handshakes: %.0f/s, connect+TLS+upgrade p50 %s µs p99 %s µs; server CPU %s µs per connection\n",
				x.HandshakesPerSec, f1(x.Handshake.P50Us), f1(x.Handshake.P99Us), f1(x.ServerCPUUsPerHandshake))
		}
		if x.ServerRSSPerConnKiB > 0 {
			fmt.Fprintf(w, "  server RSS %d KiB before, %d KiB with %d connections: %.2f KiB per connection; bench RSS %.2f KiB per connection\n",
				x.ServerRSSBaseKiB, x.ServerRSSKiB, x.Conns, x.ServerRSSPerConnKiB, x.BenchRSSPerConnKiB)
		}
		if f := x.DiskFloor; f != nil && f.Count > 0 {
			fmt.Fprintf(w, "  disk floor (write + fdatasync on the spool's file system, %d before and after the window): p50 %s µs p99 %s µs p99.9 %s µs\n",
				f.Count, f1(f.P50Us), f1(f.P99Us), f1(f.P999Us))
			if l := x.Latency; l != nil && l.Count > 0 && f.P99Us > 0 && f.P999Us > 0 {
				fmt.Fprintf(w, "  ack latency against the floor: p99 %.2f×, p99.9 %.2f× the floor's\n", l.P99Us/f.P99Us, l.P999Us/f.P999Us)
			}
		}
		if x.ServerPID > 0 && x.MeasuredSeconds > 0 {
			fmt.Fprintf(w, "  server: its threads waited %.1f%% of the window for a CPU (summed over threads)\n", x.ServerWaitPct)
		}
		if x.MeasuredSeconds > 0 {
			fmt.Fprintf(w, "  bench: its threads waited %.1f%% of the window for a CPU (this delay is in the latencies above)\n", x.BenchWaitPct)
		}
		if pct := x.ForwardedPct(); pct > 0 {
			fmt.Fprintf(w, "  forwarded to sinks in the window: %d records (%.0f%% of acked); forwarder lag at the end: %d records\n",
				x.Forwarded, pct, x.ForwarderLagEnd)
			if pct < 95 {
				fmt.Fprintf(w, "  note: the forwarders fell behind, so server CPU per record counts ingesting every acked record but forwarding only %.0f%% of them\n", pct)
			}
		}
		fmt.Fprintf(w, "  sent %d acked %d error replies %d mismatches %d unexpected %d missing %d connection errors %d dial errors %d\n",
			x.Sent, x.Acked, x.ErrorReplies, x.Mismatches, x.Unexpected, x.Missing, x.ConnErrors, x.DialErrors)
		for _, f := range x.Failures {
			fmt.Fprintf(w, "  ! %s\n", f)
		}
	}
}

// ForwardedPct is Forwarded as a percentage of the records acked in the
// window (0 when unknown).
func (x *Result) ForwardedPct() float64 {
	if x.Forwarded <= 0 || x.AckedPerSec <= 0 || x.MeasuredSeconds <= 0 {
		return 0
	}
	return float64(x.Forwarded) * 100 / (x.AckedPerSec * x.MeasuredSeconds)
}

func params(p map[string]any) string {
	var parts []string
	for _, k := range sortedKeys(p) {
		parts = append(parts, fmt.Sprintf("%s=%v", k, p[k]))
	}
	return strings.Join(parts, " ")
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

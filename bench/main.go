// Command bench is fleet-telemetry's load generator. It simulates vehicles
// (one client certificate per VIN, minted on the fly from a CA key) against
// a running daemon, or against one it starts itself (-spawn), checks every
// ack against what it sent, and reports throughput, ack latency, server CPU
// per record and server memory per connection.
//
//	bench -scenario throughput -addr 127.0.0.1:4443 -server-pid PID
//	bench -spawn -scenario idle,throughput,rate,storm -json out.json -html out.html
//
// See docs/performance.md for the scenarios and measured figures.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"time"
)

func main() { os.Exit(run(os.Args[1:])) }

const benchUsage = `usage: bench [-scenario throughput] [-addr 127.0.0.1:4443 -server-pid PID | -spawn] [flags]

Simulates vehicles against a running daemon (-addr), or against one it
starts itself for each scenario (-spawn), checks every ack, and reports
throughput, ack latency, server CPU per record and memory per connection.
See docs/performance.md.

flags:
`

// options are the command line.
type options struct {
	scenarios string
	// target
	addr, serverName string
	serverPID        int
	// spawn
	spawn                      bool
	daemonBin, brokerBin, sink string
	serverCPUs, brokerCPUs     string
	ackMode, serverLogLevel    string
	serverPprofPort            int
	serverMetricsPort          int
	profile                    string
	workDir                    string
	keep                       bool
	// certificates
	certsDir, caCert, caKey string
	// load shape
	conns, inflight      int
	rateConns            int
	rate                 float64
	idleConns            int
	stormWorkers         int
	duration, warmup     string
	soakDuration         string
	settle, hold         string
	datums               string
	recordBytes          int
	alertsPct, errorsPct float64
	sources              int
	dialConcurrency      int
	drainTimeout         string
	resume               bool
	clientCurves         string
	// output
	jsonOut, htmlOut, note string
	diskFloor              time.Duration
	diskFloorDir           string
	quiet                  bool
	selfProfile            string
}

func run(args []string) int {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&o.scenarios, "scenario", "throughput", "comma-separated scenarios: idle, throughput, rate, storm, soak; or \"standard\" (idle,throughput,rate,storm)")
	fs.StringVar(&o.addr, "addr", "127.0.0.1:4443", "daemon address (ignored with -spawn)")
	fs.StringVar(&o.serverName, "server-name", "localhost", "TLS server name to verify")
	fs.IntVar(&o.serverPID, "server-pid", 0, "daemon's pid: report its CPU per record and RSS per connection from /proc")
	fs.BoolVar(&o.spawn, "spawn", false, "start a kfake broker and a fresh daemon (config written by the bench) for each scenario")
	fs.StringVar(&o.daemonBin, "daemon-bin", "bin/fleet-telemetry", "daemon binary for -spawn")
	fs.StringVar(&o.brokerBin, "broker-bin", "bin/kfakebroker", "kfakebroker binary for -spawn (go build -o bin/kfakebroker ./test/kfakebroker)")
	fs.DurationVar(&o.diskFloor, "disk-floor", 2*time.Second, "throughput, rate and soak: probe the spool's file system (write + fdatasync, as a commit) for this long before and again after the window, and report its latency next to the acks' (0: no probe)")
	fs.StringVar(&o.diskFloorDir, "disk-floor-dir", "", "where to probe without -spawn: a directory on the daemon's spool file system")
	fs.StringVar(&o.sink, "sink", "kafka", "with -spawn: where V, alerts and errors records go: kafka, logger or none")
	fs.StringVar(&o.serverCPUs, "server-cpus", "", "with -spawn: taskset CPU list for the daemon (e.g. 0)")
	fs.StringVar(&o.brokerCPUs, "broker-cpus", "", "with -spawn: taskset CPU list for the broker (e.g. 1)")
	fs.StringVar(&o.ackMode, "ack-mode", "spool", "with -spawn: the daemon's ack_mode (spool or receive)")
	fs.StringVar(&o.serverLogLevel, "server-log-level", "info", "with -spawn: the daemon's log_level")
	fs.IntVar(&o.serverPprofPort, "server-pprof-port", 0, "with -spawn: serve the daemon's /debug/pprof on this port")
	fs.IntVar(&o.serverMetricsPort, "server-metrics-port", 0, "with -spawn: serve the daemon's /metrics on this port")
	fs.StringVar(&o.profile, "profile", "", "save a CPU profile of the daemon taken over the measurement window of the throughput, rate or storm scenario (when the run profiles several, each goes to FILE with -SCENARIO before its extension) to this file (needs -server-pprof-port)")
	fs.StringVar(&o.workDir, "work-dir", "", "with -spawn: directory for configs, spools and logs (default: a new temporary one)")
	fs.BoolVar(&o.keep, "keep", false, "with -spawn: keep the work directory")
	fs.StringVar(&o.certsDir, "certs", "var/dev-certs", "dev certificate directory (make run's); created as \"fleet-telemetry certs dev\" does when missing")
	fs.StringVar(&o.caCert, "ca-cert", "", "CA certificate that signs the vehicles' certificates (default CERTS/ca.crt)")
	fs.StringVar(&o.caKey, "ca-key", "", "CA private key (default CERTS/ca.key)")
	fs.IntVar(&o.conns, "conns", 200, "throughput: connections")
	fs.IntVar(&o.inflight, "inflight", 8, "throughput: records in flight per connection")
	fs.IntVar(&o.rateConns, "rate-conns", 200, "rate and soak: connections")
	fs.Float64Var(&o.rate, "rate", 10, "rate and soak: records per second per connection")
	fs.IntVar(&o.idleConns, "idle-conns", 2000, "idle: connections to hold")
	fs.IntVar(&o.stormWorkers, "storm-workers", 64, "storm: concurrent connect/send/disconnect loops")
	fs.StringVar(&o.duration, "duration", "10s", "measured duration of throughput, rate and storm (after -warmup)")
	fs.StringVar(&o.warmup, "warmup", "2s", "unmeasured warm-up before the measured window")
	fs.StringVar(&o.soakDuration, "soak-duration", "10m", "soak: measured duration")
	fs.StringVar(&o.settle, "settle", "10s", "idle: wait after the last connection before reading the server's RSS")
	fs.StringVar(&o.hold, "hold", "0s", "idle: keep the connections open this much longer after the measurement")
	fs.StringVar(&o.datums, "datums", "10-40", "datums per V record: N or MIN-MAX")
	fs.IntVar(&o.recordBytes, "record-bytes", 0, "pad V payloads to about this many bytes (0: natural size)")
	fs.Float64Var(&o.alertsPct, "alerts-pct", 1, "percentage of records sent as alerts")
	fs.Float64Var(&o.errorsPct, "errors-pct", 0.5, "percentage of records sent as errors")
	fs.IntVar(&o.sources, "sources", 0, "spread connections over this many loopback source addresses 127.0.0.2, 127.0.0.3, ... (0: one per 25,000 connections, none below that)")
	fs.IntVar(&o.dialConcurrency, "dial-concurrency", 64, "connections being set up at once")
	fs.StringVar(&o.drainTimeout, "drain-timeout", "15s", "how long to wait for the acks still owed at the end")
	fs.BoolVar(&o.resume, "resume", false, "storm: allow TLS session resumption (default: every connection is a full handshake)")
	fs.StringVar(&o.clientCurves, "client-curves", "", "key exchanges the simulated vehicles offer, comma-separated (x25519mlkem768, x25519, p256, p384); default Go's, which offers X25519MLKEM768 first")
	fs.StringVar(&o.jsonOut, "json", "", "write the results as JSON to this file")
	fs.StringVar(&o.htmlOut, "html", "", "write a self-contained HTML report to this file")
	fs.StringVar(&o.note, "note", "", "free text put in the reports (e.g. \"busy machine\")")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress line")
	fs.StringVar(&o.selfProfile, "self-profile", "", "save a CPU profile of the bench itself (the whole run) to this file: shows when the load generator, not the daemon, is the limit")
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	usage := func(w io.Writer) {
		fmt.Fprint(w, benchUsage)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(os.Stdout)
			return 0
		}
		fmt.Fprintf(os.Stderr, "bench: %v\n\n", err)
		usage(os.Stderr)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	b, err := newBench(&o, "bench "+strings.Join(args, " "))
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 2
	}
	defer b.close()
	if os.Getenv("GOGC") == "" {
		// The bench's garbage is short-lived handshake and record state;
		// collecting less often leaves more of its core for load. (Set
		// here, not in the environment the spawned daemon inherits.)
		debug.SetGCPercent(400)
	}
	if o.selfProfile != "" {
		f, err := os.Create(o.selfProfile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(os.Stderr, "bench: self-profile: %v\n", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	return b.runAll()
}

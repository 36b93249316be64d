package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/bench/internal/diskfloor"
	"github.com/fleet-telemetry/fleet-telemetry/bench/internal/hist"
	"github.com/fleet-telemetry/fleet-telemetry/bench/internal/procstat"
	"github.com/fleet-telemetry/fleet-telemetry/bench/internal/report"
	"github.com/fleet-telemetry/fleet-telemetry/bench/internal/sim"
	"github.com/fleet-telemetry/fleet-telemetry/bench/internal/spawn"
	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
)

type bench struct {
	o       *options
	run     *report.Run
	corpus  *sim.Corpus
	minter  *sim.Minter // caches certificates (small fleets, storms)
	nocache *sim.Minter // mints per dial (idle fleets of 100k)
	sources []net.IP
	workDir string
	tmpDir  bool
	dur     map[string]time.Duration
	tty     bool
}

func newBench(o *options, cmdline string) (*bench, error) {
	b := &bench{o: o, dur: map[string]time.Duration{}}
	for name, s := range map[string]string{"duration": o.duration, "warmup": o.warmup, "soak": o.soakDuration,
		"settle": o.settle, "hold": o.hold, "drain": o.drainTimeout} {
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("-%s: %w", name, err)
		}
		b.dur[name] = d
	}
	if o.caCert == "" {
		o.caCert = filepath.Join(o.certsDir, devca.CACertFile)
	}
	if o.caKey == "" {
		o.caKey = filepath.Join(o.certsDir, devca.CAKeyFile)
	}
	if _, err := os.Stat(o.caKey); errors.Is(err, os.ErrNotExist) {
		// As `fleet-telemetry certs dev DIR` does (and `make run`).
		if _, err := devca.WriteDir(o.certsDir, nil); err != nil {
			return nil, err
		}
		fmt.Fprintf(os.Stderr, "bench: created dev certificates in %s\n", o.certsDir)
	}
	var err error
	if b.minter, err = sim.NewMinter(o.caCert, o.caKey, true); err != nil {
		return nil, err
	}
	curves, err := sim.ParseCurves(o.clientCurves)
	if err != nil {
		return nil, fmt.Errorf("-client-curves: %w", err)
	}
	b.minter.Curves = curves
	if b.nocache, err = sim.NewMinter(o.caCert, o.caKey, false); err != nil {
		return nil, err
	}
	b.nocache.Curves = curves
	spec := sim.PayloadSpec{AlertsPct: o.alertsPct, ErrorsPct: o.errorsPct, Bytes: o.recordBytes}
	lo, hi, ok := strings.Cut(o.datums, "-")
	if spec.MinDatums, err = strconv.Atoi(lo); err != nil || spec.MinDatums < 1 {
		return nil, fmt.Errorf("-datums %q: want N or MIN-MAX", o.datums)
	}
	spec.MaxDatums = spec.MinDatums
	if ok {
		if spec.MaxDatums, err = strconv.Atoi(hi); err != nil || spec.MaxDatums < spec.MinDatums {
			return nil, fmt.Errorf("-datums %q: want N or MIN-MAX", o.datums)
		}
	}
	b.corpus = sim.NewCorpus(spec, 512, uint64(time.Now().UnixNano()))
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		b.tty = true
	}
	maxConns := max(o.conns, o.rateConns, o.idleConns, o.stormWorkers)
	nsrc := o.sources
	if nsrc == 0 && maxConns > 25000 {
		nsrc = (maxConns + 24999) / 25000
	}
	for i := range nsrc {
		b.sources = append(b.sources, net.IPv4(127, 0, byte((i+2)>>8), byte((i+2)&0xff)))
	}
	raiseFDLimit(uint64(maxConns) + 4096)
	host, _ := os.Hostname()
	b.run = &report.Run{Command: cmdline, Host: host, Started: time.Now(), Note: o.note}
	if o.spawn {
		if o.workDir == "" {
			if b.workDir, err = os.MkdirTemp("", "fleet-telemetry-bench"); err != nil {
				return nil, err
			}
			b.tmpDir = true
		} else {
			b.workDir = o.workDir
			if err := os.MkdirAll(b.workDir, 0o755); err != nil {
				return nil, err
			}
		}
	}
	return b, nil
}

// raiseFDLimit lifts RLIMIT_NOFILE to want (root may raise the hard limit up
// to fs.nr_open; others get soft = hard). Daemons started with -spawn
// inherit it.
func raiseFDLimit(want uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if nrOpen, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(nrOpen)), 10, 64); err == nil && want > n {
			want = n
		}
	}
	if want < lim.Cur {
		return
	}
	if want > lim.Max {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}); err == nil {
			return
		}
		fmt.Fprintf(os.Stderr, "bench: cannot raise the open-file limit to %d (hard limit %d)\n", want, lim.Max)
		want = lim.Max
	}
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: lim.Max})
}

func (b *bench) close() {
	if b.tmpDir && !b.o.keep {
		os.RemoveAll(b.workDir)
	}
}

func (b *bench) runAll() int {
	code := 0
	for _, name := range b.scenarioList() {
		res, err := b.runOne(name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: %s: %v\n", name, err)
			code = 1
			if res == nil {
				continue
			}
		}
		b.run.Results = append(b.run.Results, res)
		if !res.OK {
			code = 1
		}
	}
	fmt.Println()
	report.Table(os.Stdout, b.run)
	if b.o.jsonOut != "" {
		if err := report.WriteJSON(b.o.jsonOut, b.run); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			code = 1
		}
	}
	if b.o.htmlOut != "" {
		if err := report.WriteHTML(b.o.htmlOut, b.run); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
			code = 1
		}
	}
	if code != 0 {
		fmt.Fprintln(os.Stderr, "bench: FAILED")
	}
	return code
}

// target is the daemon one scenario runs against.
type target struct {
	addr string
	pid  int
	// metricsPort serves the spawned daemon's /metrics (0: not spawned).
	metricsPort int
	daemon      *spawn.Proc
	broker      *spawn.Proc
	// floorDir is a directory on the spool's file system, for the disk
	// floor probe ("": none).
	floorDir string
}

func (t *target) stop() {
	if t.daemon != nil {
		t.daemon.Stop(40 * time.Second)
	}
	if t.broker != nil {
		t.broker.Stop(10 * time.Second)
	}
}

func (b *bench) start(name string) (*target, error) {
	if !b.o.spawn {
		return &target{addr: b.o.addr, pid: b.o.serverPID, floorDir: b.o.diskFloorDir}, nil
	}
	dir := filepath.Join(b.workDir, fmt.Sprintf("%s-%d", name, time.Now().UnixNano()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	t := &target{metricsPort: b.o.serverMetricsPort, floorDir: dir}
	if t.metricsPort == 0 {
		// The forwarding figures come from the daemon's /metrics.
		p, err := e2e.PickPort(b.o.serverPprofPort)
		if err != nil {
			return nil, err
		}
		t.metricsPort = p
	}
	cfg := &spawn.DaemonConfig{Dir: dir, CertDir: b.o.certsDir, Sink: b.o.sink, AckMode: b.o.ackMode,
		LogLevel: b.o.serverLogLevel, PprofPort: b.o.serverPprofPort, MetricsPort: t.metricsPort}
	if b.o.sink == "kafka" {
		br, err := spawn.StartBroker(b.o.brokerBin, b.o.brokerCPUs, dir)
		if err != nil {
			return nil, err
		}
		t.broker, cfg.BrokerAddr = br, br.Addr
	}
	d, err := spawn.StartDaemon(b.o.daemonBin, b.o.serverCPUs, cfg)
	if err != nil {
		t.stop()
		return nil, err
	}
	t.daemon, t.addr, t.pid = d, d.Addr, d.PID()
	fmt.Fprintf(os.Stderr, "bench: %s: daemon pid %d on %s (config %s, log %s)\n", name, t.pid, t.addr, filepath.Join(dir, "config.json"), d.Log)
	// Let the forwarders connect before anything is measured.
	time.Sleep(500 * time.Millisecond)
	return t, nil
}

func (b *bench) runOne(name string) (*report.Result, error) {
	switch name {
	case "idle", "throughput", "rate", "storm", "soak":
	default:
		return nil, fmt.Errorf("unknown scenario (idle, throughput, rate, storm, soak, standard)")
	}
	t, err := b.start(name)
	if err != nil {
		return nil, err
	}
	defer t.stop()
	r := &scenarioRun{b: b, t: t, st: &sim.Stats{}, start: time.Now(),
		res: &report.Result{Scenario: name, Command: b.run.Command, Started: time.Now(), ServerPID: t.pid, Params: map[string]any{}}}
	r.res.Params["record_bytes_mean_V"] = b.corpus.MeanVBytes
	r.res.Params["datums"] = b.o.datums
	probe := (name == "throughput" || name == "rate" || name == "soak") && t.floorDir != "" && b.o.diskFloor > 0
	var floor hist.H
	if probe {
		r.probeDisk(&floor)
	}
	switch name {
	case "idle":
		err = r.idle()
	case "throughput":
		err = r.load(b.o.conns, b.o.inflight, 0, b.dur["duration"])
	case "rate":
		err = r.load(b.o.rateConns, 0, b.o.rate, b.dur["duration"])
	case "soak":
		err = r.load(b.o.rateConns, 0, b.o.rate, b.dur["soak"])
	case "storm":
		err = r.storm()
	}
	if probe {
		r.probeDisk(&floor)
		r.res.DiskFloor = latency(floor.Snapshot())
	}
	r.finish()
	if t.daemon != nil && t.daemon.Exited() {
		r.res.OK = false
		r.res.Failures = append(r.res.Failures, "the daemon exited during the run (see "+t.daemon.Log+")")
		r.res.FailureCount++
	}
	return r.res, err
}

// probeDisk measures the spool file system's own commit latency into h
// (see diskfloor), while the daemon is idle: before and after the window.
func (r *scenarioRun) probeDisk(h *hist.H) {
	if err := diskfloor.Probe(diskfloor.Options{Dir: r.t.floorDir, Duration: r.b.o.diskFloor}, h); err != nil {
		r.res.Failures = append(r.res.Failures, err.Error())
		r.res.FailureCount++
	}
}

// scenarioRun is one scenario in progress.
type scenarioRun struct {
	b     *bench
	t     *target
	st    *sim.Stats
	res   *report.Result
	start time.Time
	conns atomic.Int64

	stopSampler chan struct{}
	samplerDone chan struct{}
	mu          sync.Mutex
	samples     []report.Sample

	// window bounds
	m0, m1         procstat.Sample
	b0, b1         procstat.Sample
	acked0, acked1 int64
	hs0, hs1       int64
	t0, t1         time.Time
	// records the daemon's forwarders sent, and their lag at the end
	fwd0, fwd1, lag1 int64
	refused          int64 // records the daemon refused since it started, at the window's end
	fwdErr           error
	// profiling is the daemon CPU profile being fetched over the window
	profiling sync.WaitGroup
}

func (r *scenarioRun) dialOpts(i int) sim.DialOptions {
	o := sim.DialOptions{Addr: r.t.addr, ServerName: r.b.o.serverName, Timeout: 30 * time.Second}
	if len(r.b.sources) > 0 {
		o.Local = r.b.sources[i%len(r.b.sources)]
	}
	return o
}

// startSampler samples the server and the bench every second and draws the
// progress line.
func (r *scenarioRun) startSampler() {
	r.stopSampler, r.samplerDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(r.samplerDone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		prevS, _ := procstat.Read(r.t.pid)
		prevB, _ := procstat.Read(0)
		prevAcked := r.st.Acked.Load()
		prevH := r.st.Latency.Snapshot()
		prevT := time.Now()
		lastLine := time.Now()
		for {
			select {
			case <-r.stopSampler:
				if !r.b.o.quiet && r.b.tty {
					fmt.Fprintln(os.Stderr)
				}
				return
			case <-tick.C:
			}
			now := time.Now()
			dt := now.Sub(prevT).Seconds()
			smp := report.Sample{T: now.Sub(r.start).Seconds(), Conns: r.conns.Load()}
			acked := r.st.Acked.Load()
			smp.AckedPerSec = float64(acked-prevAcked) / dt
			h := r.st.Latency.Snapshot()
			smp.P99Us = float64(h.Sub(prevH).Quantile(0.99)) / 1e3
			if r.t.pid > 0 {
				if s, err := procstat.Read(r.t.pid); err == nil {
					smp.ServerRSSKiB = s.RSSKiB
					smp.ServerCPUPct = 100 * (s.CPU - prevS.CPU).Seconds() / dt
					prevS = s
				}
			}
			if s, err := procstat.Read(0); err == nil {
				smp.BenchRSSKiB = s.RSSKiB
				smp.BenchCPUPct = 100 * (s.CPU - prevB.CPU).Seconds() / dt
				prevB = s
			}
			prevAcked, prevH, prevT = acked, h, now
			r.mu.Lock()
			r.samples = append(r.samples, smp)
			r.mu.Unlock()
			if r.b.o.quiet {
				continue
			}
			line := fmt.Sprintf("[%s] %3.0fs conns %d sent %d acked %d (%.0f/s) p99 %.0fµs hs %d srv cpu %.0f%% rss %.0fMiB bench cpu %.0f%% rss %.0fMiB fail %d",
				r.res.Scenario, smp.T, smp.Conns, r.st.Sent.Load(), acked, smp.AckedPerSec, smp.P99Us, r.st.Handshakes.Load(),
				smp.ServerCPUPct, float64(smp.ServerRSSKiB)/1024, smp.BenchCPUPct, float64(smp.BenchRSSKiB)/1024, r.failCount())
			if r.b.tty {
				fmt.Fprintf(os.Stderr, "\r\033[K%s", line)
			} else if now.Sub(lastLine) >= 10*time.Second {
				fmt.Fprintln(os.Stderr, line)
				lastLine = now
			}
		}
	}()
}

func (r *scenarioRun) failCount() int {
	_, n := r.st.Failures()
	return n
}

// markStart and markEnd bound the measured window.
func (r *scenarioRun) markStart() {
	r.m0, _ = procstat.Read(r.t.pid)
	r.b0, _ = procstat.Read(0)
	r.acked0, r.hs0, r.t0 = r.st.Acked.Load(), r.st.Handshakes.Load(), time.Now()
	if r.t.metricsPort > 0 {
		var c spawn.DaemonCounters
		c, r.fwdErr = spawn.Scrape(r.t.metricsPort)
		r.fwd0 = c.ForwarderSent
	}
	r.st.Measure.Store(true)
	r.startProfile()
}

// profiled reports whether -profile covers a scenario.
func profiled(scenario string) bool {
	switch scenario {
	case "throughput", "rate", "storm":
		return true
	}
	return false
}

// profilePath is where a scenario's profile goes: -profile FILE itself when
// the run profiles one scenario, else FILE with "-SCENARIO" before its
// extension (daemon.pprof → daemon-rate.pprof).
func (b *bench) profilePath(scenario string) string {
	n := 0
	for _, s := range b.scenarioList() {
		if profiled(s) {
			n++
		}
	}
	if n <= 1 {
		return b.o.profile
	}
	ext := filepath.Ext(b.o.profile)
	return strings.TrimSuffix(b.o.profile, ext) + "-" + scenario + ext
}

// scenarioList is -scenario as a list ("standard" expanded).
func (b *bench) scenarioList() []string {
	list := b.o.scenarios
	if list == "standard" {
		list = "idle,throughput,rate,storm"
	}
	var out []string
	for _, name := range strings.Split(list, ",") {
		out = append(out, strings.TrimSpace(name))
	}
	return out
}

// startProfile fetches a CPU profile of the daemon over the measured window
// (-profile FILE with -server-pprof-port) for the throughput, rate and
// storm scenarios; markEnd waits for it.
func (r *scenarioRun) startProfile() {
	if !profiled(r.res.Scenario) || r.b.o.profile == "" || r.b.o.serverPprofPort <= 0 {
		return
	}
	secs := max(1, int(r.b.dur["duration"].Seconds())-1)
	path := r.b.profilePath(r.res.Scenario)
	r.profiling.Go(func() {
		if err := fetchProfile(r.b.o.serverPprofPort, secs, path); err != nil {
			fmt.Fprintf(os.Stderr, "bench: profile: %v\n", err)
		}
	})
}

func (r *scenarioRun) markEnd() {
	r.st.Measure.Store(false)
	r.m1, _ = procstat.Read(r.t.pid)
	r.b1, _ = procstat.Read(0)
	r.acked1, r.hs1, r.t1 = r.st.Acked.Load(), r.st.Handshakes.Load(), time.Now()
	if r.t.metricsPort > 0 && r.fwdErr == nil {
		var c spawn.DaemonCounters
		c, r.fwdErr = spawn.Scrape(r.t.metricsPort)
		r.fwd1, r.lag1, r.refused = c.ForwarderSent, c.ForwarderLag, c.RecordsRefused
		if r.fwdErr == nil && r.refused > 0 {
			// Acked or answered but not kept (a payload that does not
			// decode, a record type no sink takes sent under another
			// vehicle's sender id): the run measured refusals, not the
			// production path.
			r.st.Fail("the daemon refused %d records (fleet_records_refused_total)", r.refused)
		}
		if r.fwdErr == nil && c.SenderMismatches > 0 {
			// Kept, but under the certificate's VIN, not the one the bench
			// meant (a TLS session resumed under another vehicle's
			// certificate, for instance).
			r.st.Fail("the daemon took %d records under another vehicle's sender id (fleet_records_sender_id_mismatch_total)", c.SenderMismatches)
		}
	}
	r.profiling.Wait()
}

func latency(s *hist.Snapshot) *report.Latency {
	us := func(ns int64) float64 { return float64(ns) / 1e3 }
	l := &report.Latency{Count: s.Total, MeanUs: s.Mean() / 1e3, P50Us: us(s.Quantile(0.5)), P90Us: us(s.Quantile(0.9)),
		P99Us: us(s.Quantile(0.99)), P999Us: us(s.Quantile(0.999)), MaxUs: us(s.Max)}
	for _, bk := range s.Buckets() {
		l.Buckets = append(l.Buckets, report.Bucket{LoUs: us(bk.Lo), HiUs: us(bk.Hi), Count: bk.Count})
	}
	return l
}

// finish fills the result from the counters and the window.
func (r *scenarioRun) finish() {
	if r.stopSampler != nil {
		close(r.stopSampler)
		<-r.samplerDone
	}
	x := r.res
	x.Samples = r.samples
	x.Sent, x.Acked = r.st.Sent.Load(), r.st.Acked.Load()
	x.ErrorReplies, x.Mismatches, x.Unexpected = r.st.ErrorReplies.Load(), r.st.Mismatches.Load(), r.st.Unexpected.Load()
	x.ConnErrors, x.DialErrors = r.st.ConnErrors.Load(), r.st.DialErrors.Load()
	x.Failures, x.FailureCount = r.st.Failures()
	if !r.t1.IsZero() {
		secs := r.t1.Sub(r.t0).Seconds()
		x.MeasuredSeconds = secs
		n := r.acked1 - r.acked0
		x.AckedPerSec = float64(n) / secs
		cpu := (r.m1.CPU - r.m0.CPU).Seconds() * 1e6
		if r.t.pid > 0 {
			x.ServerCPUPct = cpu / 1e4 / secs
			if n > 0 && x.Scenario != "storm" {
				x.ServerCPUUsPerRecord = cpu / float64(n)
			}
			if hs := r.hs1 - r.hs0; hs > 0 {
				x.ServerCPUUsPerHandshake = cpu / float64(hs)
			}
			if x.ServerRSSKiB == 0 {
				x.ServerRSSKiB = r.m1.RSSKiB
			}
			x.ServerWaitPct = (r.m1.RunDelay - r.m0.RunDelay).Seconds() * 100 / secs
		}
		if r.t.metricsPort > 0 && r.fwdErr == nil {
			x.Forwarded, x.ForwarderLagEnd = r.fwd1-r.fwd0, r.lag1
		}
		x.BenchCPUPct = (r.b1.CPU - r.b0.CPU).Seconds() * 100 / secs
		x.BenchWaitPct = (r.b1.RunDelay - r.b0.RunDelay).Seconds() * 100 / secs
		if hs := r.hs1 - r.hs0; hs > 0 {
			x.HandshakesPerSec = float64(hs) / secs
		}
	}
	if x.BenchRSSKiB == 0 {
		x.BenchRSSKiB = r.b1.RSSKiB
	}
	if s := r.st.Latency.Snapshot(); s.Total > 0 {
		x.Latency = latency(s)
	}
	if s := r.st.Handshake.Snapshot(); s.Total > 0 {
		x.Handshake = latency(s)
		x.Handshake.Buckets = nil
	}
	x.OK = x.FailureCount == 0 && x.ErrorReplies == 0 && x.Mismatches == 0 && x.Unexpected == 0 &&
		x.Missing == 0 && x.ConnErrors == 0 && x.DialErrors == 0
}

// dialAll opens n connections (VINs offset+0 .. offset+n-1) with
// dial-concurrency workers; idle connections mint their certificate per dial
// and keep a small read buffer.
func (r *scenarioRun) dialAll(n, offset int, idle bool) []*sim.Conn {
	conns := make([]*sim.Conn, n)
	minter := r.b.minter
	if idle {
		minter = r.b.nocache
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range max(1, min(r.b.o.dialConcurrency, n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				vin := sim.VIN(offset + i)
				o := r.dialOpts(i)
				if idle {
					o.ReadBuf = 512
				}
				t0 := time.Now()
				c, err := sim.Dial(context.Background(), o, vin, minter.TLSConfig(vin, r.b.o.serverName, nil), r.start)
				if err != nil {
					r.st.DialErrors.Add(1)
					r.st.Fail("dial %s (from %v): %v", vin, o.Local, err)
					continue
				}
				r.st.Handshakes.Add(1)
				r.st.Handshake.Record(int64(time.Since(t0)))
				conns[i] = c
				r.conns.Add(1)
			}
		}()
	}
	wg.Wait()
	out := conns[:0]
	for _, c := range conns {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// idle holds N connections and reports the server's RSS per connection.
func (r *scenarioRun) idle() error {
	n := r.b.o.idleConns
	r.res.Params["connections"] = n
	r.res.Params["settle"] = r.b.o.settle
	r.res.Params["sources"] = len(r.b.sources)
	// The daemon's baseline after start-up.
	base, _ := procstat.Read(r.t.pid)
	bbase, _ := procstat.Read(0)
	r.res.ServerRSSBaseKiB = base.RSSKiB
	r.startSampler()
	conns := r.dialAll(n, 0, true)
	var closing atomic.Bool
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.ReadReplies(r.st, 0, nil)
			if !closing.Load() {
				r.st.ConnErrors.Add(1)
				r.st.Fail("%s: connection ended while idle: %v", c.VIN, err)
			}
			r.conns.Add(-1)
		}()
	}
	r.markStart()
	time.Sleep(r.b.dur["settle"])
	r.markEnd()
	r.res.Conns = int64(len(conns))
	r.res.ServerRSSKiB = r.m1.RSSKiB
	r.res.BenchRSSKiB = r.b1.RSSKiB
	if len(conns) > 0 && r.t.pid > 0 {
		r.res.ServerRSSPerConnKiB = float64(r.m1.RSSKiB-base.RSSKiB) / float64(len(conns))
	}
	if len(conns) > 0 {
		r.res.BenchRSSPerConnKiB = float64(r.b1.RSSKiB-bbase.RSSKiB) / float64(len(conns))
	}
	time.Sleep(r.b.dur["hold"])
	closing.Store(true)
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	return nil
}

// load runs C connections either with W records in flight each (rate 0)
// or at rate records/s each.
func (r *scenarioRun) load(nconns, inflight int, rate float64, dur time.Duration) error {
	p := r.res.Params
	p["connections"] = nconns
	if rate > 0 {
		p["rate_per_conn"] = rate
	} else {
		p["inflight"] = inflight
	}
	p["duration"] = dur.String()
	p["warmup"] = r.b.o.warmup
	p["sink"] = r.b.o.sink
	r.startSampler()
	conns := r.dialAll(nconns, 0, false)
	r.res.Conns = int64(len(conns))
	stop := make(chan struct{})
	var stopping atomic.Bool
	var writers, readers sync.WaitGroup
	for i, c := range conns {
		sem := make(chan struct{}, max(inflight, 1))
		for range inflight {
			sem <- struct{}{}
		}
		onReply := func() {
			select {
			case sem <- struct{}{}:
			default:
			}
		}
		if rate > 0 {
			onReply = nil
		}
		readers.Add(1)
		go func() {
			defer readers.Done()
			err := c.ReadReplies(r.st, 0, onReply)
			if !stopping.Load() {
				r.st.ConnErrors.Add(1)
				r.st.Fail("%s: connection failed: %v", c.VIN, err)
			}
			r.conns.Add(-1)
		}()
		writers.Add(1)
		go func() {
			defer writers.Done()
			var err error
			if rate > 0 {
				err = r.rateWriter(c, i, len(conns), rate, stop)
			} else {
				err = r.windowWriter(c, sem, inflight, stop)
			}
			if err != nil && !stopping.Load() {
				r.st.ConnErrors.Add(1)
				r.st.Fail("%s: send: %v", c.VIN, err)
			}
		}()
	}
	time.Sleep(r.b.dur["warmup"])
	r.markStart()
	time.Sleep(dur)
	r.markEnd()
	close(stop)
	writers.Wait()
	// Every record sent is owed an ack.
	deadline := time.Now().Add(r.b.dur["drain"])
	for {
		owed := 0
		for _, c := range conns {
			owed += c.Outstanding()
		}
		if owed == 0 || time.Now().After(deadline) || r.conns.Load() == 0 {
			if owed > 0 {
				r.res.Missing = int64(owed)
				r.st.Fail("%d records never acked within %s of the end", owed, r.b.o.drainTimeout)
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stopping.Store(true)
	for _, c := range conns {
		c.Close()
	}
	readers.Wait()
	return nil
}

// windowWriter keeps up to inflight records in flight: each ack frees a
// slot; freed slots are refilled in one write.
func (r *scenarioRun) windowWriter(c *sim.Conn, sem chan struct{}, inflight int, stop chan struct{}) error {
	for {
		select {
		case <-stop:
			return nil
		case <-sem:
		}
		n := 1
	more:
		for n < inflight {
			select {
			case <-sem:
				n++
			default:
				break more
			}
		}
		if err := c.Send(n, r.b.corpus, r.st); err != nil {
			return err
		}
	}
}

// rateWriter sends one record every 1/rate seconds (phases spread over the
// connections); a late tick sends at once, so no send is skipped.
func (r *scenarioRun) rateWriter(c *sim.Conn, i, n int, rate float64, stop chan struct{}) error {
	interval := time.Duration(float64(time.Second) / rate)
	// Connection i of n starts i/n of an interval in, so the n senders
	// are spread evenly over each interval, as independent vehicles are,
	// instead of sending in one burst.
	next := time.Now().Add(time.Duration(int64(interval) * int64(i) / int64(max(n, 1))))
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	for {
		select {
		case <-stop:
			return nil
		case <-timer.C:
		}
		if err := c.Send(1, r.b.corpus, r.st); err != nil {
			return err
		}
		next = next.Add(interval)
		timer.Reset(time.Until(next))
	}
}

// storm connects, sends one record, waits for its ack and disconnects, over
// and over from storm-workers goroutines.
func (r *scenarioRun) storm() error {
	workers := r.b.o.stormWorkers
	dur := r.b.dur["duration"]
	p := r.res.Params
	p["workers"] = workers
	p["duration"] = dur.String()
	p["resume"] = r.b.o.resume
	if r.b.o.clientCurves != "" {
		p["client_curves"] = r.b.o.clientCurves
	}
	r.startSampler()
	var stop atomic.Bool
	var wg sync.WaitGroup
	warm := time.Now().Add(r.b.dur["warmup"])
	end := warm.Add(dur)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Worker w cycles through its own 8 VINs. A vehicle resumes
			// only its own session: crypto/tls keys a client's sessions by
			// server name, so one shared cache would resume another VIN's
			// session, and the daemon would refuse that VIN's records as
			// sent under someone else's certificate.
			var sessions [8]tls.ClientSessionCache
			if r.b.o.resume {
				for i := range sessions {
					sessions[i] = tls.NewLRUClientSessionCache(1)
				}
			}
			for k := 0; !stop.Load(); k++ {
				vin := sim.VIN(w*8 + k%8)
				cache := sessions[k%8]
				o := r.dialOpts(w)
				o.Timeout = 10 * time.Second
				t0 := time.Now()
				c, err := sim.Dial(context.Background(), o, vin, r.b.minter.TLSConfig(vin, r.b.o.serverName, cache), r.start)
				if err != nil {
					if !stop.Load() {
						r.st.DialErrors.Add(1)
						r.st.Fail("dial %s: %v", vin, err)
						time.Sleep(10 * time.Millisecond)
					}
					continue
				}
				r.st.Handshakes.Add(1)
				if r.st.Measure.Load() {
					r.st.Handshake.Record(int64(time.Since(t0)))
				}
				r.conns.Add(1)
				err = c.Send(1, r.b.corpus, r.st)
				if err == nil {
					_ = c.SetReadDeadline(time.Now().Add(r.b.dur["drain"]))
					err = c.ReadReplies(r.st, 1, nil)
				}
				if err != nil {
					r.st.ConnErrors.Add(1)
					r.st.Fail("%s: %v", vin, err)
				}
				c.Close()
				r.conns.Add(-1)
			}
		}()
	}
	// Certificates are minted on the first round; measure after warm-up.
	time.Sleep(time.Until(warm))
	r.markStart()
	time.Sleep(time.Until(end))
	r.markEnd()
	stop.Store(true)
	wg.Wait()
	r.res.Conns = int64(workers)
	return nil
}

func fetchProfile(port, secs int, path string) error {
	cl := http.Client{Timeout: time.Duration(secs+30) * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", port, secs))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("pprof: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

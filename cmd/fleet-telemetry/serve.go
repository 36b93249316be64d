package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/stdout"
	"github.com/fleet-telemetry/fleet-telemetry/internal/admin"
	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/introspect"
	"github.com/fleet-telemetry/fleet-telemetry/internal/memtrim"
	"github.com/fleet-telemetry/fleet-telemetry/internal/sdnotify"
	"github.com/fleet-telemetry/fleet-telemetry/netloop"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// devCertsDir is where -dev keeps its certificates (relative to the working
// directory, like the embedded config's paths).
const devCertsDir = "var/dev-certs"

const serveUsage = `usage: fleet-telemetry [serve] -config FILE
       fleet-telemetry [serve] -dev

Runs the daemon: listens for vehicles, spools their records and forwards
them to the sinks the config file routes them to. SIGTERM or SIGINT stop it
gracefully; SIGHUP reloads the TLS certificate, key and CA files.
`

// loadConfig reads the config file at path, or with dev the embedded dev
// config, and applies the environment's overrides.
func loadConfig(path string, dev bool) (*config.Config, []string, error) {
	var (
		cfg      *config.Config
		warnings []string
		err      error
	)
	switch {
	case path != "" && dev:
		return nil, nil, errors.New("give -config or -dev, not both")
	case dev:
		cfg, warnings, err = config.Dev()
	case path != "":
		cfg, warnings, err = config.Load(path)
	default:
		return nil, nil, errors.New("no configuration: pass -config FILE (or -dev for a local trial)")
	}
	if err != nil {
		return nil, nil, err
	}
	cfg.ApplyEnv(os.Getenv)
	return cfg, warnings, nil
}

func newLogger(cfg *config.Config) *slog.Logger {
	var level slog.Level
	switch strings.ToLower(cfg.LogLevel) {
	case "debug":
		level = slog.LevelDebug
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.JSONLogEnable {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func serve(args []string) int {
	c := newCLI("serve", serveUsage)
	configPath := c.String("config", "", "reference-format JSON config file")
	dev := c.Bool("dev", false, "run on the embedded dev config: 127.0.0.1:4443, dev certificates in ./var/dev-certs, spool in ./var/spool, records to stdout")
	showVersion := c.Bool("version", false, "print the version and exit")
	if code, done := c.parseFlags(args, false); done {
		return code
	}
	bi := readBuildInfo()
	if *showVersion {
		fmt.Println(bi)
		return 0
	}
	cfg, warnings, err := loadConfig(*configPath, *dev)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fleet-telemetry: %v\n", err)
		return 2
	}
	log := newLogger(cfg)
	slog.SetDefault(log)
	log.Info("fleet-telemetry", "version", bi.Version, "revision", bi.RevisionString(), "go", bi.GoVersion)
	registerBuildInfoMetric(bi)
	for _, w := range warnings {
		log.Warn(w)
	}
	if err := cfg.Validate(); err != nil {
		log.Error("invalid configuration", "err", err)
		return 2
	}
	if *dev {
		if _, err := devca.WriteDir(devCertsDir, devca.DefaultVINs); err != nil {
			log.Error("dev certificates", "err", err)
			return 1
		}
		log.Info("dev mode", "certs", devCertsDir, "vehicles", strings.Join(devca.DefaultVINs, ","))
	}
	if err := runDaemon(cfg, bi, log); err != nil {
		log.Error("fleet-telemetry stopped", "err", err)
		return 1
	}
	return 0
}

func runDaemon(cfg *config.Config, bi buildInfo, log *slog.Logger) error {
	started := time.Now()
	minProcs(log)
	// Taken first: a stop that comes while the daemon starts (systemctl
	// stop right after start) waits in the channel for the loop below and
	// gets the graceful shutdown, instead of the default action killing
	// the process half started.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	tlsCfg, err := netloop.NewTLSConfig(netloop.TLSOptions{
		CertFile: cfg.TLS.ServerCert, KeyFile: cfg.TLS.ServerKey, CAFile: cfg.TLS.CAFile, UseEngCA: cfg.UseDefaultEngCA,
	})
	if err != nil {
		return err
	}
	// /connz and /varz answer 503 until the listener and forwarders run.
	intro := introspect.New(introspect.Options{Started: started, Logger: log, Build: introspect.Build{
		Version: bi.Version, Revision: bi.Revision, Modified: bi.Modified, GoVersion: bi.GoVersion}})
	defer intro.Close()
	stopMonitoring, err := startMonitoring(cfg.Monitoring, intro, log)
	if err != nil {
		return err
	}
	defer stopMonitoring()
	dispatchers := cfg.Dispatchers()
	names := make([]string, 0, len(dispatchers))
	for n := range dispatchers {
		names = append(names, n)
	}
	sort.Strings(names)
	// Each dispatcher reads the spool in lanes, one per record type.
	var lanes []string
	for _, n := range names {
		lanes = append(lanes, forwarder.LaneNames(n, dispatchers[n])...)
	}
	sp, err := openSpool(spool.Options{Dir: cfg.Spool.Dir, MaxBytes: cfg.Spool.MaxBytes, MinFreeBytes: cfg.Spool.MinFree(),
		Consumers: lanes, Logger: log, PreallocateLogs: true,
		// A commit stalled on a full disk gives up the stop after this,
		// still inside systemd's TimeoutStopSec (40 s) after the graceful
		// part (shutdown_timeout, 25 s by default).
		CloseTimeout: 10 * time.Second}, sigs, log)
	if err != nil || sp == nil {
		return err
	}
	spoolClosed := false
	defer func() {
		if !spoolClosed {
			_ = sp.Close()
		}
	}()
	adminSrv, err := admin.Listen(admin.DefaultSocketPath(cfg.Spool.Dir), sp, log)
	if err != nil {
		log.Warn("admin socket not available; `fleet-telemetry spool` cannot reach this daemon", "err", err)
	} else {
		defer adminSrv.Close()
	}
	srv, err := netloop.New(serverOptions(cfg, tlsCfg, sp, log))
	if err != nil {
		return err
	}
	var fwds []*forwarder.Forwarder
	enc := forwarder.Encoder{Namespace: cfg.Namespace, JSON: cfg.TransmitDecodedRecords}
	for _, name := range names {
		sink, err := newSink(name, cfg, enc, dispatchers[name], log)
		if err != nil {
			return err
		}
		if c, ok := sink.(interface{ Close() error }); ok {
			defer c.Close()
		}
		f, err := forwarder.New(sp, sink, forwarder.Options{Name: name, Topics: dispatchers[name], Logger: log,
			Delivered: deliveredHook(cfg, name, srv)})
		if err != nil {
			return err
		}
		fwds = append(fwds, f)
	}
	if adminSrv != nil {
		adminSrv.SetForwarders(fwds)
	}
	fwdCtx, stopFwds := context.WithCancel(context.Background())
	var fwdWG sync.WaitGroup
	fwdErrs := make(chan error, len(fwds))
	for _, f := range fwds {
		fwdWG.Add(1)
		go func() {
			defer fwdWG.Done()
			if err := f.Run(fwdCtx); err != nil {
				fwdErrs <- err
			}
		}()
	}
	defer func() { stopFwds(); fwdWG.Wait() }()

	// The plain status endpoint is up before READY: health checks may use it.
	stopStatus, err := startStatusServer(cfg, log)
	if err != nil {
		return err
	}
	defer stopStatus()
	if err := srv.Start(); err != nil {
		return err
	}
	intro.Attach(introspect.Source{Server: srv, Spool: sp, Forwarders: fwds, Listen: srv.Addr().String(),
		SpoolDir: cfg.Spool.Dir, SpoolMaxBytes: cfg.Spool.MaxBytes, SpoolMinFreeBytes: cfg.Spool.MinFree()})
	log.Info("listening", "addr", srv.Addr().String(), "spool", cfg.Spool.Dir, "dispatchers", strings.Join(names, ","))
	if err := sdnotify.Notify(sdnotify.Ready, sdnotify.Status("listening on "+srv.Addr().String())); err != nil {
		log.Warn("systemd notify", "err", err)
	}
	watchdogCtx, stopWatchdog := context.WithCancel(context.Background())
	defer stopWatchdog()
	// After a reconnect storm, hand the handshakes' garbage back.
	go memtrim.Run(watchdogCtx, memtrim.Options{Logger: log})
	go sdnotify.RunWatchdog(watchdogCtx, log, func() error {
		select {
		case <-srv.Done():
			return errors.New("event loops stopped")
		default:
			return nil
		}
	})

	var runErr error
wait:
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGHUP {
				reloadTLS(cfg, srv, log)
				continue
			}
			log.Info("shutting down", "signal", s.String())
		case <-srv.Done():
			runErr = errors.New("event loops stopped unexpectedly")
		case err := <-fwdErrs:
			runErr = err
		}
		break wait
	}

	if err := sdnotify.Notify(sdnotify.Stopping); err != nil {
		log.Warn("systemd notify", "err", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownWithin())
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("netloop shutdown", "err", err)
	}
	stopFwds()
	fwdWG.Wait()
	for _, f := range fwds {
		if err := f.Drain(ctx); err != nil {
			log.Warn("forwarder did not drain; records stay in the spool for the next start", "err", err)
		}
	}
	if adminSrv != nil {
		adminSrv.Close()
	}
	spoolClosed = true
	if err := sp.Close(); err != nil {
		return fmt.Errorf("close spool: %w", err)
	}
	log.Info("stopped")
	return runErr
}

// openSpool opens the spool, waiting while the disk is too full to replay
// its logs (a full disk at start would otherwise be a start that never
// finishes, or a restart loop). It says so once, and in systemd's status;
// a stop signal while it waits returns (nil, nil): a clean exit. A SIGHUP
// while it waits is put back for the main loop (certificates to reload).
func openSpool(o spool.Options, sigs chan os.Signal, log *slog.Logger) (*spool.Spool, error) {
	waiting, hup := false, false
	defer func() {
		if hup {
			select {
			case sigs <- syscall.SIGHUP:
			default:
			}
		}
	}()
	for {
		sp, err := spool.Open(o)
		if !errors.Is(err, spool.ErrDiskFull) {
			if waiting && err == nil {
				log.Info("disk has room again; spool opened")
			}
			return sp, err
		}
		if !waiting {
			waiting = true
			log.Error("disk too full to open the spool; waiting for free space", "err", err)
			if nerr := sdnotify.Notify(sdnotify.Status("waiting for free space to open the spool")); nerr != nil {
				log.Warn("systemd notify", "err", nerr)
			}
		}
		select {
		case s := <-sigs:
			if s == syscall.SIGHUP {
				hup = true
				continue
			}
			log.Info("stopped while waiting for disk space", "signal", s.String())
			return nil, nil
		case <-time.After(2 * time.Second):
		}
	}
}

// newSink builds the sink a dispatcher name stands for; recordTypes are the
// types routed to it. Sinks with a Close method are closed at exit, after
// the forwarders stopped.
func newSink(name string, cfg *config.Config, enc forwarder.Encoder, recordTypes []string, log *slog.Logger) (forwarder.Sink, error) {
	switch name {
	case "logger":
		return stdout.New(stdout.Options{Out: os.Stdout, Logger: log})
	case "kafka":
		return newKafkaSink(cfg, enc, log)
	case "kinesis":
		return newKinesisSink(cfg, enc, log)
	case "pubsub":
		return newPubsubSink(cfg, enc, recordTypes, log)
	case "mqtt":
		return newMQTTSink(cfg, enc, log)
	case "redis":
		return newRedisSink(cfg, enc, log)
	case "nats":
		return newNATSSink(cfg, enc, log)
	case "zmq":
		return newZMQSink(cfg, enc, log)
	}
	return nil, fmt.Errorf("dispatcher %q is not supported by this version", name)
}

// serverOptions maps the config file to the listener's options.
func serverOptions(cfg *config.Config, tlsCfg *tls.Config, sp *spool.Spool, log *slog.Logger) netloop.Options {
	o := netloop.Options{
		Addr:                 net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)),
		TLS:                  tlsCfg,
		Spool:                sp,
		RoutedTopics:         cfg.RoutedTopics(),
		Connectivity:         len(cfg.Records["connectivity"]) > 0,
		QuietHandshakeErrors: cfg.QuietHandshakeErrors,
		// An escape hatch while the native TLS 1.3 record layer is new.
		CryptoTLSRecords: cfg.CryptoTLSRecords,
		Logger:           log,
	}
	if cfg.AckMode == "receive" {
		o.AckMode = netloop.AckOnReceipt
	}
	for t := range cfg.ReliableAckSources {
		o.ReliableTopics = append(o.ReliableTopics, t)
	}
	o.ReliableAckDispatchers = cfg.ReliableAckSources
	o.SignalTrackingVINs = cfg.VinsSignalTrackingEnabled
	if rl := cfg.RateLimit; rl != nil && rl.Enabled {
		o.RateLimit = netloop.RateLimit{Limit: rl.MessageLimit, Interval: time.Duration(rl.MessageIntervalTime) * time.Second}
	}
	if allowed, _ := cfg.AllowedVINs(); allowed != nil {
		o.AllowVIN = func(vin string) bool { return allowed[vin] }
	}
	if cfg.IdleTimeout != nil {
		o.IdleTimeout = cfg.IdleTimeout.Duration
		if o.IdleTimeout == 0 {
			o.IdleTimeout = -1 // "0" in the file disables it
		}
	}
	if cfg.HandshakeTimeout != nil {
		o.HandshakeTimeout = cfg.HandshakeTimeout.Duration
	}
	if cfg.RequestTimeout != nil {
		o.RequestTimeout = cfg.RequestTimeout.Duration
	}
	return o
}

// deliveredHook releases the acks of records whose reliable-ack source is
// this dispatcher, once it confirmed them.
func deliveredHook(cfg *config.Config, dispatcher string, srv *netloop.Server) func([]spool.Record) {
	var types []string
	for t, d := range cfg.ReliableAckSources {
		if d == dispatcher {
			types = append(types, t)
		}
	}
	if len(types) == 0 {
		return nil
	}
	return func(batch []spool.Record) {
		for i := range batch {
			if slices.Contains(types, string(batch[i].Topic)) {
				srv.Delivered(batch[i].Seq)
			}
		}
	}
}

// reloadTLS rebuilds the TLS configuration from its files (SIGHUP): new
// handshakes use it, established connections keep theirs. A bad file keeps
// the old configuration.
func reloadTLS(cfg *config.Config, srv *netloop.Server, log *slog.Logger) {
	tlsCfg, err := netloop.NewTLSConfig(netloop.TLSOptions{
		CertFile: cfg.TLS.ServerCert, KeyFile: cfg.TLS.ServerKey, CAFile: cfg.TLS.CAFile, UseEngCA: cfg.UseDefaultEngCA,
	})
	if err != nil {
		log.Error("reload failed; keeping the current certificates", "err", err)
		return
	}
	srv.SetTLSConfig(tlsCfg)
	log.Info("reloaded TLS certificates", "server_cert", cfg.TLS.ServerCert, "ca_file", cfg.TLS.CAFile)
}

// startStatusServer serves plain-HTTP /status on status_port, like the
// reference (for load balancer health checks that cannot do mTLS).
func startStatusServer(cfg *config.Config, log *slog.Logger) (func(), error) {
	if cfg.StatusPort == 0 {
		return func() {}, nil
	}
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.StatusPort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("status_port: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("status server stopped", "err", err)
		}
	}()
	log.Info("serving status", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
	}, nil
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/stdout"
	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/netloop"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// devCertsDir is where -dev keeps its certificates (relative to the working
// directory, like the embedded config's paths).
const devCertsDir = "var/dev-certs"

// shutdownTimeout bounds the graceful part of a stop.
const shutdownTimeout = 25 * time.Second

func loadForServe(fs *flag.FlagSet, args []string) (*Config, []string, bool, error) {
	configPath := fs.String("config", "", "reference-format JSON config file")
	dev := fs.Bool("dev", false, "run on the embedded dev config: 127.0.0.1:4443, dev certificates in ./var/dev-certs, spool in ./var/spool, records to stdout")
	if err := fs.Parse(args); err != nil {
		return nil, nil, false, err
	}
	switch {
	case *configPath != "" && *dev:
		return nil, nil, false, errors.New("give -config or -dev, not both")
	case *dev:
		c, w, err := ParseConfig(devConfigJSON)
		return c, w, true, err
	case *configPath != "":
		c, w, err := LoadConfig(*configPath)
		return c, w, false, err
	}
	return nil, nil, false, errors.New("no configuration: pass -config FILE (or -dev for a local trial)")
}

func checkConfig(args []string) int {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	cfg, warnings, _, err := loadForServe(fs, args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fleet-telemetry: %v\n", err)
		return 2
	}
	for _, w := range warnings {
		fmt.Fprintf(os.Stderr, "warning: %s\n", w)
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "fleet-telemetry: invalid configuration:\n  %s\n", strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return 2
	}
	fmt.Println("configuration ok")
	return 0
}

func newLogger(cfg *Config) *slog.Logger {
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
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg, warnings, dev, err := loadForServe(fs, args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fleet-telemetry: %v\n", err)
		return 2
	}
	log := newLogger(cfg)
	slog.SetDefault(log)
	for _, w := range warnings {
		log.Warn(w)
	}
	if err := cfg.Validate(); err != nil {
		log.Error("invalid configuration", "err", err)
		return 2
	}
	if dev {
		if _, err := devca.WriteDir(devCertsDir, devca.DefaultVINs); err != nil {
			log.Error("dev certificates", "err", err)
			return 1
		}
		log.Info("dev mode", "certs", devCertsDir, "vehicles", strings.Join(devca.DefaultVINs, ","))
	}
	if err := runDaemon(cfg, log); err != nil {
		log.Error("fleet-telemetry stopped", "err", err)
		return 1
	}
	return 0
}

func runDaemon(cfg *Config, log *slog.Logger) error {
	tlsCfg, err := netloop.NewTLSConfig(netloop.TLSOptions{
		CertFile: cfg.TLS.ServerCert, KeyFile: cfg.TLS.ServerKey, CAFile: cfg.TLS.CAFile, UseEngCA: cfg.UseDefaultEngCA,
	})
	if err != nil {
		return err
	}
	stopMonitoring, err := startMonitoring(cfg.Monitoring, log)
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
	sp, err := spool.Open(spool.Options{Dir: cfg.Spool.Dir, MaxBytes: cfg.Spool.MaxBytes, Consumers: names, Logger: log})
	if err != nil {
		return err
	}
	spoolClosed := false
	defer func() {
		if !spoolClosed {
			_ = sp.Close()
		}
	}()
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
		f, err := forwarder.New(sp, sink, forwarder.Options{Name: name, Topics: dispatchers[name], Logger: log})
		if err != nil {
			return err
		}
		fwds = append(fwds, f)
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

	srv, err := netloop.New(netloop.Options{
		Addr:         net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)),
		TLS:          tlsCfg,
		Spool:        sp,
		RoutedTopics: cfg.RoutedTopics(),
		Logger:       log,
	})
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	log.Info("listening", "addr", srv.Addr().String(), "spool", cfg.Spool.Dir, "dispatchers", strings.Join(names, ","))

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	var runErr error
	select {
	case s := <-sigs:
		log.Info("shutting down", "signal", s.String())
	case <-srv.Done():
		runErr = errors.New("event loops stopped unexpectedly")
	case err := <-fwdErrs:
		runErr = err
	}

	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("netloop shutdown", "err", err)
	}
	stopFwds()
	fwdWG.Wait()
	for _, f := range fwds {
		if err := f.Drain(ctx); err != nil {
			log.Warn("forwarder did not drain before the shutdown timeout; records stay in the spool", "err", err)
		}
	}
	spoolClosed = true
	if err := sp.Close(); err != nil {
		return fmt.Errorf("close spool: %w", err)
	}
	log.Info("stopped")
	return runErr
}

// newSink builds the sink a dispatcher name stands for; recordTypes are the
// types routed to it. Sinks with a Close method are closed at exit, after
// the forwarders stopped.
func newSink(name string, cfg *Config, enc forwarder.Encoder, recordTypes []string, log *slog.Logger) (forwarder.Sink, error) {
	switch name {
	case "logger":
		return stdout.New(stdout.Options{Out: os.Stdout, Logger: log})
	case "kafka":
		return newKafkaSink(cfg, enc, log)
	case "kinesis":
		return newKinesisSink(cfg, enc, log)
	case "pubsub":
		return newPubsubSink(cfg, enc, recordTypes, log)
	}
	return nil, fmt.Errorf("dispatcher %q is not supported by this version", name)
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/admin"
	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// spoolOpts are the flags every spool subcommand takes.
type spoolOpts struct {
	config   string
	dev      bool
	dir      string
	admin    string
	json     bool
	progress bool

	cfg    *config.Config // loaded from config, if given
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
}

// register adds the common flags to fs, keeping values parsed earlier as
// defaults (they may come before or after the subcommand's name).
func (o *spoolOpts) register(fs *flag.FlagSet) {
	fs.StringVar(&o.config, "config", o.config, "daemon config file: gives spool.dir (and the sinks, for replay)")
	fs.BoolVar(&o.dev, "dev", o.dev, "the embedded dev config's spool (./var/spool, what make run writes), from the directory make run runs in")
	fs.StringVar(&o.dir, "dir", o.dir, "spool directory (default "+config.DefaultSpoolDir+", or spool.dir of -config)")
	fs.StringVar(&o.admin, "admin", o.admin, "the daemon's admin socket (default <spool dir>/"+admin.SocketName+")")
	fs.BoolVar(&o.json, "json", o.json, "machine-readable output")
	fs.BoolVar(&o.progress, "progress", o.progress, "show the progress bar even when stderr is not a terminal")
}

// resolve loads the config and fills the spool directory and socket path.
func (o *spoolOpts) resolve() error {
	if o.config != "" || o.dev {
		cfg, _, err := loadConfig(o.config, o.dev)
		if err != nil {
			return err
		}
		o.cfg = cfg
		if o.dir == "" {
			o.dir = cfg.Spool.Dir
		}
	}
	if o.dir == "" {
		o.dir = config.DefaultSpoolDir
	}
	if o.admin == "" {
		o.admin = admin.DefaultSocketPath(o.dir)
	}
	return nil
}

// spoolSource is a spool seen through the running daemon's admin socket or
// opened directly (read-only) when no daemon runs.
type spoolSource interface {
	Info(ctx context.Context) (spool.Info, error)
	// Scan calls fn for every record with from <= seq <= to (0: no bound),
	// optionally filtered by q's VIN and topic.
	Scan(ctx context.Context, from, to uint64, q admin.Query, fn func(spool.RawRecord) error) error
	// Last returns the newest n records matching q, oldest first.
	Last(ctx context.Context, n int, q admin.Query) ([]spool.RawRecord, error)
	// Describe says where the data comes from.
	Describe() string
	// Kind is "admin" or "direct".
	Kind() string
	Close() error
}

type adminSource struct{ c *admin.Client }

func (a adminSource) Info(ctx context.Context) (spool.Info, error) { return a.c.Info(ctx) }

func (a adminSource) Scan(ctx context.Context, from, to uint64, q admin.Query, fn func(spool.RawRecord) error) error {
	q.From, q.To, q.Last, q.Follow = from, to, 0, false
	return a.c.Records(ctx, q, fn)
}

func (a adminSource) Last(ctx context.Context, n int, q admin.Query) ([]spool.RawRecord, error) {
	q.Last, q.Follow = n, false
	var out []spool.RawRecord
	err := a.c.Records(ctx, q, func(r spool.RawRecord) error {
		out = append(out, r)
		return nil
	})
	return out, err
}

func (a adminSource) Describe() string { return "running daemon, admin socket " + a.c.Path() }
func (a adminSource) Kind() string     { return "admin" }
func (a adminSource) Close() error     { return a.c.Close() }

type directSource struct {
	v *spool.View
}

func (d directSource) Info(context.Context) (spool.Info, error) { return d.v.Info() }

func (d directSource) Scan(ctx context.Context, from, to uint64, q admin.Query, fn func(spool.RawRecord) error) error {
	match := q.Matcher()
	return spool.ScanRaw(ctx, d.v, from, to, func(r spool.RawRecord) error {
		if match != nil && !match(r) {
			return nil
		}
		return fn(r)
	})
}

func (d directSource) Last(ctx context.Context, n int, q admin.Query) ([]spool.RawRecord, error) {
	return spool.LastRaw(ctx, d.v, n, q.Matcher())
}

func (d directSource) Describe() string { return "stopped daemon, spool opened read-only" }
func (d directSource) Kind() string     { return "direct" }
func (d directSource) Close() error     { return d.v.Close() }

// errDaemonRunning is returned when the spool is locked by a daemon whose
// admin socket does not answer.
var errDaemonRunning = errors.New("daemon running: use its admin socket")

// adminClient returns a client if the admin socket answers.
func (o *spoolOpts) adminClient(ctx context.Context) (*admin.Client, error) {
	if _, err := os.Stat(o.admin); err != nil {
		return nil, err
	}
	c := admin.NewClient(o.admin)
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.Info(ictx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// open talks to the daemon when its admin socket answers, and otherwise
// opens the spool itself, read-only. It never waits for a lock: a spool
// locked by a daemon whose socket does not answer is an error.
func (o *spoolOpts) open(ctx context.Context) (spoolSource, error) {
	c, adminErr := o.adminClient(ctx)
	if adminErr == nil {
		return adminSource{c}, nil
	}
	v, err := spool.OpenView(o.dir, o.log)
	if err != nil {
		if errors.Is(err, spool.ErrLocked) {
			return nil, fmt.Errorf("%w: the spool %s is open in another process and the admin socket %s does not answer (%v)",
				errDaemonRunning, o.dir, o.admin, adminErr)
		}
		return nil, err
	}
	return directSource{v: v}, nil
}

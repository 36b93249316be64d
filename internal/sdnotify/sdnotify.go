// Package sdnotify tells systemd about the daemon's state over the
// sd_notify(3) protocol: one datagram of newline-separated KEY=VALUE
// assignments, sent to the unix datagram socket named by the NOTIFY_SOCKET
// environment variable. It uses only the standard library.
//
// When NOTIFY_SOCKET is unset (the daemon runs outside systemd, or the unit
// is not Type=notify) every function is a no-op that returns nil.
package sdnotify

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// States the daemon sends. Several can go in one Notify call.
const (
	// Ready tells systemd that start-up is complete: a Type=notify unit
	// counts as started, and units ordered after it start, only then.
	Ready = "READY=1"
	// Stopping tells systemd that the daemon began its graceful shutdown.
	Stopping = "STOPPING=1"
	// Watchdog is the keep-alive ping for units with WatchdogSec=.
	Watchdog = "WATCHDOG=1"
)

// Status returns the STATUS= assignment that `systemctl status` shows.
func Status(text string) string {
	return "STATUS=" + strings.ReplaceAll(text, "\n", " ")
}

// Enabled reports whether NOTIFY_SOCKET names a socket to notify.
func Enabled() bool {
	return os.Getenv("NOTIFY_SOCKET") != ""
}

// socketAddr turns NOTIFY_SOCKET into an address. A leading '@' names a
// socket in the abstract namespace; Go's net package maps it to the leading
// NUL byte the kernel expects.
func socketAddr(v string) (*net.UnixAddr, error) {
	if len(v) < 2 || (v[0] != '/' && v[0] != '@') {
		return nil, fmt.Errorf("sdnotify: NOTIFY_SOCKET %q is neither an absolute path nor an abstract socket name", v)
	}
	return &net.UnixAddr{Name: v, Net: "unixgram"}, nil
}

// Notify sends the given assignments (e.g. Ready, Status("…")) in one
// datagram. It returns nil without sending anything when NOTIFY_SOCKET is
// unset.
func Notify(states ...string) error {
	v := os.Getenv("NOTIFY_SOCKET")
	if v == "" || len(states) == 0 {
		return nil
	}
	addr, err := socketAddr(v)
	if err != nil {
		return err
	}
	// A fresh socket per message: messages are rare, and a connection made
	// now cannot have gone stale (the manager may re-create its socket).
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("sdnotify: connect %s: %w", v, err)
	}
	defer conn.Close()
	msg := strings.Join(states, "\n")
	n, err := conn.Write([]byte(msg))
	if err != nil {
		return fmt.Errorf("sdnotify: send %q: %w", msg, err)
	}
	if n != len(msg) {
		return fmt.Errorf("sdnotify: send %q: short write of %d bytes", msg, n)
	}
	return nil
}

// WatchdogInterval returns how often the daemon should ping the watchdog:
// half of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises. It returns 0
// when the watchdog is off: WATCHDOG_USEC unset, or WATCHDOG_PID set to
// another process's id (the variables were inherited, not meant for us). A
// malformed value is an error.
func WatchdogInterval() (time.Duration, error) {
	usec := os.Getenv("WATCHDOG_USEC")
	if usec == "" {
		return 0, nil
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" {
		p, err := strconv.Atoi(pid)
		if err != nil || p <= 0 {
			return 0, fmt.Errorf("sdnotify: WATCHDOG_PID %q is not a process id", pid)
		}
		if p != os.Getpid() {
			return 0, nil
		}
	}
	us, err := strconv.ParseUint(usec, 10, 63)
	if err != nil || us == 0 {
		return 0, fmt.Errorf("sdnotify: WATCHDOG_USEC %q is not a positive number of microseconds", usec)
	}
	return time.Duration(us) * time.Microsecond / 2, nil
}

// RunWatchdog pings the watchdog at WatchdogInterval until ctx ends. It
// returns at once when NOTIFY_SOCKET is unset or the watchdog is off.
// healthy, if not nil, is asked before each ping: while it returns an
// error no ping is sent, so systemd's watchdog fires (by default with
// SIGABRT, which makes the Go runtime dump every goroutine to the journal)
// and Restart= applies. A wedged process stops pinging by itself.
func RunWatchdog(ctx context.Context, log *slog.Logger, healthy func() error) {
	if log == nil {
		log = slog.Default()
	}
	if !Enabled() {
		return
	}
	interval, err := WatchdogInterval()
	if err != nil {
		log.Warn("systemd watchdog disabled", "err", err)
		return
	}
	if interval <= 0 {
		return
	}
	log.Debug("systemd watchdog", "ping_every", interval.String())
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false // log each change of state once, not every tick
	ping := func() {
		if healthy != nil {
			if err := healthy(); err != nil {
				if !failing {
					log.Error("unhealthy: no longer pinging the systemd watchdog", "err", err)
				}
				failing = true
				return
			}
		}
		if err := Notify(Watchdog); err != nil {
			if !failing {
				log.Warn("systemd watchdog ping", "err", err)
			}
			failing = true
			return
		}
		if failing {
			log.Info("pinging the systemd watchdog again")
		}
		failing = false
	}
	ping()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			ping()
		}
	}
}

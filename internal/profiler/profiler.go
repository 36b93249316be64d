// Package profiler serves the reference server's profiling endpoints on
// the profiler port, next to net/http/pprof's:
//
//	GET /gc_stats                  the runtime's GC statistics as JSON
//	GET /live_profiler?mode=on|off a CPU profile written to a file
//
// /live_profiler answers 405 when no file is configured, 400 without a
// mode (or with another one), 304 when profiling already is in the mode
// asked for, and 200 once it switched.
package profiler

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"sync"
	"time"
)

// Options configure a Profiler.
type Options struct {
	// Path is the file /live_profiler?mode=on writes the CPU profile to
	// (created or truncated; it is complete once mode=off or Stop).
	// Empty: /live_profiler answers 405.
	Path string
	// Logger receives a line when profiling starts and stops (default
	// slog.Default).
	Logger *slog.Logger
}

// Profiler holds the state of the live CPU profile.
type Profiler struct {
	o  Options
	mu sync.Mutex
	f  *os.File // the profile being written; nil when off
}

// New returns a Profiler; Register serves its endpoints.
func New(o Options) *Profiler {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Profiler{o: o}
}

// Register adds GET /gc_stats and GET /live_profiler to mux.
func (p *Profiler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /gc_stats", gcStats)
	mux.HandleFunc("GET /live_profiler", p.liveProfiler)
}

// gcStats writes debug.ReadGCStats as JSON: LastGC, NumGC, PauseTotal
// (ns), the recent Pause durations (ns, newest first) and their PauseEnd
// times, and PauseQuantiles (min, 25 %, 50 %, 75 %, max; ns).
func gcStats(w http.ResponseWriter, _ *http.Request) {
	s := debug.GCStats{PauseQuantiles: make([]time.Duration, 5)}
	debug.ReadGCStats(&s)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s)
}

func (p *Profiler) liveProfiler(w http.ResponseWriter, r *http.Request) {
	if p.o.Path == "" {
		http.Error(w, "live profiling is off: monitoring.profiling_path is not set", http.StatusMethodNotAllowed)
		return
	}
	mode := r.URL.Query().Get("mode")
	if mode != "on" && mode != "off" {
		http.Error(w, `mode must be "on" or "off"`, http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if (mode == "on") == (p.f != nil) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if mode == "off" {
		if err := p.stop(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "cpu profile written to %s\n", p.o.Path)
		return
	}
	f, err := os.Create(p.o.Path)
	if err != nil {
		http.Error(w, fmt.Sprintf("profiler: %v", err), http.StatusInternalServerError)
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		// A CPU profile is already being taken (/debug/pprof/profile).
		f.Close()
		http.Error(w, fmt.Sprintf("profiler: %v", err), http.StatusConflict)
		return
	}
	p.f = f
	p.o.Logger.Info("cpu profiling started", "path", p.o.Path)
	fmt.Fprintf(w, "cpu profiling into %s\n", p.o.Path)
}

// stop ends the profile being written (mu held).
func (p *Profiler) stop() error {
	if p.f == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := p.f.Close()
	p.f = nil
	if err != nil {
		return fmt.Errorf("profiler: close %s: %w", p.o.Path, err)
	}
	p.o.Logger.Info("cpu profiling stopped", "path", p.o.Path)
	return nil
}

// Stop ends a profile still being written, so that its file is complete
// (at the daemon's stop).
func (p *Profiler) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stop()
}

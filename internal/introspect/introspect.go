// Package introspect serves the operator's live view of a running daemon on
// its monitoring port, next to /metrics:
//
//	GET /connz?vin=&sort=&reverse=&limit=&offset=
//	    200, application/json: a netloop.ConnPage, the connected vehicles
//	    (VIN, client type, remote address, TLS, counters), filtered by a
//	    part of the VIN, sorted and paged, with the total that matched.
//	GET /varz[?history=1]
//	    200, application/json: a Varz, the daemon's health in one object
//	    (uptime, version, connections, handshakes, records per second,
//	    the spool, every forwarder lane, the budgets in force); with
//	    history=1 also the last minutes of records per second and lag.
//	GET /
//	    the status page: one HTML file with its own script (no external
//	    resources) that polls the two above.
//
// Until Attach gives it the running daemon, /connz and /varz answer 503.
// VINs are personal data: this is served where /metrics is, which binds
// 127.0.0.1 unless the operator configured another address.
package introspect

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/netloop"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// Build is the running binary, as `fleet-telemetry version` prints it.
type Build struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	Modified  bool   `json:"modified,omitempty"`
	GoVersion string `json:"go_version"`
}

// Options configure a Handler.
type Options struct {
	Build   Build
	Started time.Time // when the process started (default: New's call)
	// SampleEvery is the history's resolution (default 1 s) and
	// HistoryLength how many samples it keeps (default 300: five minutes).
	SampleEvery   time.Duration
	HistoryLength int
	Logger        *slog.Logger
}

// Source is the running daemon.
type Source struct {
	Server     *netloop.Server
	Spool      *spool.Spool
	Forwarders []*forwarder.Forwarder
	// Listen is the vehicle port's address; SpoolDir, SpoolMaxBytes and
	// SpoolMinFreeBytes are the spool's settings as configured.
	Listen            string
	SpoolDir          string
	SpoolMaxBytes     int64
	SpoolMinFreeBytes int64
}

// Handler serves /connz, /varz and the status page.
type Handler struct {
	o   Options
	src atomic.Pointer[Source]

	mu   sync.Mutex
	ring *ring

	stopOnce sync.Once
	stop     chan struct{}
	stopped  chan struct{}
}

// New prepares a Handler; it answers 503 until Attach.
func New(o Options) *Handler {
	if o.Started.IsZero() {
		o.Started = time.Now()
	}
	if o.SampleEvery <= 0 {
		o.SampleEvery = time.Second
	}
	if o.HistoryLength <= 0 {
		o.HistoryLength = 300
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Handler{o: o, ring: newRing(o.HistoryLength), stop: make(chan struct{}), stopped: make(chan struct{})}
}

// Register adds the routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /connz", h.connz)
	mux.HandleFunc("GET /varz", h.varz)
	mux.HandleFunc("GET /{$}", h.page)
}

// Attach gives the handler the running daemon and starts sampling its
// record rate and lag. Call it once.
func (h *Handler) Attach(src Source) {
	h.src.Store(&src)
	h.sample(time.Now())
	go h.run()
}

// Close stops the sampling (the routes keep answering from what they
// have).
func (h *Handler) Close() {
	h.stopOnce.Do(func() {
		close(h.stop)
		if h.src.Load() != nil {
			<-h.stopped
		}
	})
}

func (h *Handler) run() {
	defer close(h.stopped)
	t := time.NewTicker(h.o.SampleEvery)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case now := <-t.C:
			h.sample(now)
		}
	}
}

// sample records the record counter and the slowest lane's lag.
func (h *Handler) sample(now time.Time) {
	src := h.src.Load()
	var lag uint64
	for _, f := range src.Forwarders {
		for _, l := range f.Lanes() {
			lag = max(lag, l.Lag)
		}
	}
	h.mu.Lock()
	h.ring.add(sample{at: now, records: netloop.RecordsReceived(), lag: lag})
	h.mu.Unlock()
}

// source returns the attached daemon, or answers 503.
func (h *Handler) source(w http.ResponseWriter) *Source {
	src := h.src.Load()
	if src == nil {
		http.Error(w, "starting", http.StatusServiceUnavailable)
	}
	return src
}

func (h *Handler) connz(w http.ResponseWriter, r *http.Request) {
	q, err := ParseConnQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	src := h.source(w)
	if src == nil {
		return
	}
	writeJSON(w, src.Server.Conns(q))
}

// ParseConnQuery reads /connz's query parameters: vin, sort (one of
// netloop.ConnSorts), reverse (true/1), limit and offset.
func ParseConnQuery(v map[string][]string) (netloop.ConnQuery, error) {
	get := func(k string) string {
		if len(v[k]) > 0 {
			return v[k][0]
		}
		return ""
	}
	var q netloop.ConnQuery
	var err error
	q.VIN = get("vin")
	if q.Sort, err = netloop.ParseConnSort(get("sort")); err != nil {
		return q, err
	}
	if s := get("reverse"); s != "" {
		if q.Reverse, err = strconv.ParseBool(s); err != nil {
			return q, &paramError{"reverse", s}
		}
	}
	for _, p := range []struct {
		name string
		dst  *int
	}{{"limit", &q.Limit}, {"offset", &q.Offset}} {
		s := get(p.name)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return q, &paramError{p.name, s}
		}
		*p.dst = n
	}
	return q, nil
}

type paramError struct{ name, value string }

func (e *paramError) Error() string {
	return "bad " + e.name + " " + strconv.Quote(e.value)
}

func (h *Handler) varz(w http.ResponseWriter, r *http.Request) {
	src := h.source(w)
	if src == nil {
		return
	}
	v := h.build(src, time.Now())
	if s := r.URL.Query().Get("history"); s == "1" || s == "true" {
		h.mu.Lock()
		v.History = h.ring.history(h.o.SampleEvery)
		h.mu.Unlock()
	}
	writeJSON(w, v)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_ = json.NewEncoder(w).Encode(v)
}

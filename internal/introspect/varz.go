package introspect

import (
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/netloop"
)

// Varz is the daemon's state in one object (GET /varz).
type Varz struct {
	Now           time.Time `json:"now"`
	Started       time.Time `json:"started"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	Build         Build     `json:"build"`
	// Listen is the vehicle port.
	Listen      string      `json:"listen"`
	Connections Connections `json:"connections"`
	Handshakes  Handshakes  `json:"handshakes"`
	Records     Records     `json:"records"`
	Memory      Memory      `json:"memory"`
	Spool       SpoolStatus `json:"spool"`
	// Lanes are every forwarder's lanes (one per record type it takes).
	Lanes   []Lane   `json:"lanes"`
	Budgets Budgets  `json:"budgets"`
	History *History `json:"history,omitempty"`
}

// Connections are the vehicle port's connections.
type Connections struct {
	// Open TCP connections (handshaking included); Vehicles past the
	// WebSocket upgrade; Accepted since start.
	Open     int    `json:"open"`
	Vehicles int    `json:"vehicles"`
	Accepted uint64 `json:"accepted"`
	// Refused counts connections the server closed, by reason.
	Refused map[string]uint64 `json:"refused"`
}

// Handshakes are the TLS handshakes since start.
type Handshakes struct {
	OK      uint64            `json:"ok"`
	Running int64             `json:"running"`
	Failed  map[string]uint64 `json:"failed"`
}

// Records are the records received since start.
type Records struct {
	Received      uint64 `json:"received"`
	BytesReceived uint64 `json:"bytes_received"`
	Spooled       uint64 `json:"spooled"`
	AcksSent      uint64 `json:"acks_sent"`
	// PerSecond is the rate received over about the last 10 s.
	PerSecond float64 `json:"per_second_10s"`
	// Refused counts records not kept, by reason.
	Refused map[string]uint64 `json:"refused"`
}

// Memory is what connections hold now, against their budgets.
type Memory struct {
	BufferedBytes  int64 `json:"buffered_bytes"`
	HandshakeBytes int64 `json:"handshake_bytes"`
}

// SpoolStatus is the spool's contents and room.
type SpoolStatus struct {
	Dir                string `json:"dir"`
	Bytes              int64  `json:"bytes"`
	Records            int64  `json:"records"`
	QuarantinedRecords int64  `json:"quarantined_records"`
	FirstSeq           uint64 `json:"first_seq"`
	LastSeq            uint64 `json:"last_seq"`
	// OldestRecordAgeSeconds is the age of the oldest record kept (0:
	// empty).
	OldestRecordAgeSeconds float64 `json:"oldest_record_age_seconds"`
	// DiskFreeBytes is the file system's free space (-1 with
	// DiskFreeError when it could not be read).
	DiskFreeBytes int64  `json:"disk_free_bytes"`
	DiskFreeError string `json:"disk_free_error,omitempty"`
}

// Lane is one forwarder lane, with the age of the oldest record it is
// trying to deliver.
type Lane struct {
	forwarder.LaneStatus
	OldestWaitingSeconds float64 `json:"oldest_waiting_seconds"`
}

// Budgets are the limits in force: the listener's (defaults filled in)
// and the spool's (0: none).
type Budgets struct {
	netloop.Budgets
	SpoolMaxBytes     int64 `json:"spool_max_bytes"`
	SpoolMinFreeBytes int64 `json:"spool_min_free_bytes"`
}

// History is the last minutes, one point per sample: the records received
// per second between a sample and the one before, and the slowest lane's
// lag at the sample.
type History struct {
	IntervalSeconds  float64   `json:"interval_seconds"`
	AtMs             []int64   `json:"at_ms"`
	RecordsPerSecond []float64 `json:"records_per_second"`
	LagRecords       []uint64  `json:"lag_records"`
}

// build reads everything /varz shows.
func (h *Handler) build(src *Source, now time.Time) Varz {
	st := src.Server.Stats()
	v := Varz{
		Now: now.UTC(), Started: h.o.Started.UTC(), UptimeSeconds: now.Sub(h.o.Started).Seconds(),
		Build: h.o.Build, Listen: src.Listen,
		Connections: Connections{Open: st.Connections, Vehicles: st.Vehicles, Accepted: st.Accepted, Refused: st.ConnectionsRefused},
		Handshakes:  Handshakes{OK: st.HandshakesOK, Running: st.HandshakesRunning, Failed: st.HandshakesFailed},
		Records: Records{Received: st.RecordsReceived, BytesReceived: st.RecordBytes, Spooled: st.RecordsSpooled,
			AcksSent: st.AcksSent, Refused: st.RecordsRefused},
		Memory:  Memory{BufferedBytes: st.BufferedBytes, HandshakeBytes: st.HandshakeBytes},
		Lanes:   []Lane{},
		Budgets: Budgets{Budgets: src.Server.Budgets(), SpoolMaxBytes: src.SpoolMaxBytes, SpoolMinFreeBytes: src.SpoolMinFreeBytes},
	}
	h.mu.Lock()
	v.Records.PerSecond = h.ring.rate(now, st.RecordsReceived, 10*time.Second)
	h.mu.Unlock()

	ss := src.Spool.Stats()
	v.Spool = SpoolStatus{Dir: src.SpoolDir, Bytes: ss.Bytes, Records: ss.Records, QuarantinedRecords: ss.QuarantinedRecords,
		FirstSeq: ss.FirstSeq, LastSeq: ss.LastSeq}
	if ss.OldestReceivedAtMs > 0 {
		v.Spool.OldestRecordAgeSeconds = max(0, float64(now.UnixMilli()-ss.OldestReceivedAtMs)/1000)
	}
	if free, err := src.Spool.DiskFree(); err != nil {
		v.Spool.DiskFreeBytes, v.Spool.DiskFreeError = -1, err.Error()
	} else {
		v.Spool.DiskFreeBytes = free
	}
	for _, f := range src.Forwarders {
		for _, l := range f.Lanes() {
			lane := Lane{LaneStatus: l}
			if l.OldestWaitingMs > 0 {
				lane.OldestWaitingSeconds = max(0, float64(now.UnixMilli()-l.OldestWaitingMs)/1000)
			}
			v.Lanes = append(v.Lanes, lane)
		}
	}
	return v
}

// sample is the record counter and the slowest lane's lag at a moment.
type sample struct {
	at      time.Time
	records uint64
	lag     uint64
}

// ring keeps the last samples, oldest first from start.
type ring struct {
	buf   []sample
	start int
	n     int
}

func newRing(size int) *ring { return &ring{buf: make([]sample, size)} }

func (r *ring) add(s sample) {
	if r.n < len(r.buf) {
		r.buf[(r.start+r.n)%len(r.buf)] = s
		r.n++
		return
	}
	r.buf[r.start] = s
	r.start = (r.start + 1) % len(r.buf)
}

// at returns the i-th sample, oldest first.
func (r *ring) at(i int) sample { return r.buf[(r.start+i)%len(r.buf)] }

// rate is the records per second from the sample that starts a window of
// about w before now (the newest one at least w old, else the oldest) to
// records at now. With no sample, or none before now, it is 0.
func (r *ring) rate(now time.Time, records uint64, w time.Duration) float64 {
	if r.n == 0 {
		return 0
	}
	from := r.at(0)
	for i := r.n - 1; i >= 0; i-- {
		if s := r.at(i); !s.at.After(now.Add(-w)) {
			from = s
			break
		}
	}
	dt := now.Sub(from.at).Seconds()
	if dt <= 0 || records < from.records {
		return 0
	}
	return float64(records-from.records) / dt
}

// history renders the samples: each point's rate is from the one before
// (the first sample only starts the series).
func (r *ring) history(every time.Duration) *History {
	h := &History{IntervalSeconds: every.Seconds(), AtMs: []int64{}, RecordsPerSecond: []float64{}, LagRecords: []uint64{}}
	for i := 1; i < r.n; i++ {
		prev, cur := r.at(i-1), r.at(i)
		rate := 0.0
		if dt := cur.at.Sub(prev.at).Seconds(); dt > 0 && cur.records >= prev.records {
			rate = float64(cur.records-prev.records) / dt
		}
		h.AtMs = append(h.AtMs, cur.at.UnixMilli())
		h.RecordsPerSecond = append(h.RecordsPerSecond, rate)
		h.LagRecords = append(h.LagRecords, cur.lag)
	}
	return h
}

package netloop

// handshakeFailureReasons are the refusal reasons that mean a TLS
// handshake did not complete.
var handshakeFailureReasons = map[string]bool{
	reasonHandshakeFailed:  true,
	reasonHandshakeTimeout: true,
	reasonHandshakeMemory:  true,
	reasonBadClientHello:   true,
}

// Stats are the listener's counters since the process started (the
// fleet_* series of /metrics, read in one place) and its current
// figures.
type Stats struct {
	// Connections are the open TCP connections (handshaking included);
	// Vehicles the ones past the WebSocket upgrade.
	Connections int    `json:"connections"`
	Vehicles    int    `json:"vehicles"`
	Accepted    uint64 `json:"accepted"`
	// HandshakesOK counts completed TLS handshakes, HandshakesFailed the
	// failed ones by reason; HandshakesRunning are in progress.
	HandshakesOK      uint64            `json:"handshakes_ok"`
	HandshakesFailed  map[string]uint64 `json:"handshakes_failed"`
	HandshakesRunning int64             `json:"handshakes_running"`
	// ConnectionsRefused counts connections the server closed, by reason
	// (the handshake failures included); RecordsRefused records not kept,
	// by reason. Reasons never seen are left out.
	ConnectionsRefused map[string]uint64 `json:"connections_refused"`
	RecordsRefused     map[string]uint64 `json:"records_refused"`
	// RecordsReceived counts binary WebSocket messages, RecordBytes their
	// bytes; RecordsSpooled those handed to the spool; AcksSent the acks
	// written for them.
	RecordsReceived uint64 `json:"records_received"`
	RecordBytes     uint64 `json:"record_bytes_received"`
	RecordsSpooled  uint64 `json:"records_spooled"`
	AcksSent        uint64 `json:"acks_sent"`
	// BufferedBytes is what the connections hold beyond their fixed state
	// (against Budgets.MaxBufferedBytes); HandshakeBytes what unfinished
	// handshakes hold (against Budgets.MaxHandshakeBytes).
	BufferedBytes  int64 `json:"buffered_bytes"`
	HandshakeBytes int64 `json:"handshake_bytes"`
}

// Stats reads the listener's counters. The counters are the process's
// (one server per process in the daemon).
func (s *Server) Stats() Stats {
	st := Stats{
		Connections:        s.Connections(),
		Vehicles:           s.Vehicles(),
		Accepted:           connectionsAccepted.Get(),
		HandshakesOK:       handshakesOK.Get(),
		HandshakesFailed:   map[string]uint64{},
		HandshakesRunning:  handshakesRunning.Load(),
		ConnectionsRefused: map[string]uint64{},
		RecordsRefused:     map[string]uint64{},
		RecordsReceived:    recordsReceived.Get(),
		RecordBytes:        bytesReceived.Get(),
		RecordsSpooled:     recordsSpooled.Get(),
		AcksSent:           recordsAcked.Get(),
		BufferedBytes:      s.buffered.Load(),
		HandshakeBytes:     s.hsHeld.Load(),
	}
	for _, r := range connRefusals {
		n := r.c.Get()
		if handshakeFailureReasons[r.reason] {
			st.HandshakesFailed[r.reason] = n // zeros too: the reasons are few and fixed
		}
		if n > 0 {
			st.ConnectionsRefused[r.reason] = n
		}
	}
	for _, r := range recordRefusals {
		if n := r.c.Get(); n > 0 {
			st.RecordsRefused[r.reason] = n
		}
	}
	return st
}

// RecordsReceived is the number of binary WebSocket messages received
// since the process started (fleet_records_received_total).
func RecordsReceived() uint64 { return recordsReceived.Get() }

// Budgets are the limits a Server runs with, defaults filled in.
type Budgets struct {
	MaxConnections     int   `json:"max_connections"`
	MaxHandshakes      int   `json:"max_handshakes"`
	MaxHandshakeBytes  int64 `json:"max_handshake_bytes"`
	MaxBufferedBytes   int64 `json:"max_buffered_bytes"`
	MaxConnectionBytes int   `json:"max_connection_bytes"`
	MaxInFlight        int   `json:"max_in_flight"`
	MaxMessageSize     int   `json:"max_message_size"`
	// Timeouts in seconds; IdleTimeout is negative when disabled.
	HandshakeTimeout float64 `json:"handshake_timeout_seconds"`
	RequestTimeout   float64 `json:"request_timeout_seconds"`
	IdleTimeout      float64 `json:"idle_timeout_seconds"`
	// RateLimitRecords per RateLimitInterval seconds is the per-connection
	// record budget (0: none).
	RateLimitRecords  int     `json:"rate_limit_records"`
	RateLimitInterval float64 `json:"rate_limit_interval_seconds"`
	Loops             int     `json:"event_loops"`
}

// Budgets returns the limits in force.
func (s *Server) Budgets() Budgets {
	o := &s.opts
	return Budgets{
		MaxConnections: o.MaxConnections, MaxHandshakes: o.MaxHandshakes, MaxHandshakeBytes: o.MaxHandshakeBytes,
		MaxBufferedBytes: o.MaxBufferedBytes, MaxConnectionBytes: o.MaxConnectionBytes, MaxInFlight: o.MaxInFlight,
		MaxMessageSize: o.MaxMessageSize, HandshakeTimeout: o.HandshakeTimeout.Seconds(),
		RequestTimeout: o.RequestTimeout.Seconds(), IdleTimeout: o.IdleTimeout.Seconds(),
		RateLimitRecords: o.RateLimit.Limit, RateLimitInterval: o.RateLimit.Interval.Seconds(), Loops: o.Loops,
	}
}

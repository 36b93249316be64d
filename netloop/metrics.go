package netloop

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/VictoriaMetrics/metrics"

	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/proto/record"
)

// Counters are created once at init: the hot path only increments.
var (
	connectionsOpen     = metrics.GetOrCreateGauge("fleet_connections_open", nil)
	connectionsAccepted = metrics.GetOrCreateCounter("fleet_connections_accepted_total")
	handshakesOK        = metrics.GetOrCreateCounter("fleet_tls_handshakes_total")
	// Client certificate chains answered from the verified-chain cache
	// (hits) or verified in full (misses, failures included).
	verifyCacheHits   = metrics.GetOrCreateCounter(`fleet_tls_client_cert_verifications_total{cache="hit"}`)
	verifyCacheMisses = metrics.GetOrCreateCounter(`fleet_tls_client_cert_verifications_total{cache="miss"}`)
	// Connections whose records our TLS 1.3 record layer took over after
	// the handshake, and those left on crypto/tls (TLS 1.2, or disabled).
	recordLayerNative    = metrics.GetOrCreateCounter(`fleet_tls_record_layer_total{impl="native"}`)
	recordLayerCryptoTLS = metrics.GetOrCreateCounter(`fleet_tls_record_layer_total{impl="crypto_tls"}`)
	upgradesOK           = metrics.GetOrCreateCounter("fleet_websocket_upgrades_total")
	statusRequests       = metrics.GetOrCreateCounter("fleet_status_requests_total")

	recordsReceived = metrics.GetOrCreateCounter("fleet_records_received_total")
	recordsSpooled  = metrics.GetOrCreateCounter("fleet_records_spooled_total")
	recordsAcked    = metrics.GetOrCreateCounter("fleet_acks_sent_total")
	recordsUnrouted = metrics.GetOrCreateCounter("fleet_records_unrouted_total")
	// senderMismatch counts records whose sender_id is not their
	// certificate's: kept under the certificate's VIN on a routed topic,
	// refused (sender_id_mismatch) on another.
	senderMismatch    = metrics.GetOrCreateCounter("fleet_records_sender_id_mismatch_total")
	errorReplies      = metrics.GetOrCreateCounter("fleet_error_replies_total")
	pingsAnswered     = metrics.GetOrCreateCounter("fleet_pings_total")
	bytesReceived     = metrics.GetOrCreateCounter("fleet_record_bytes_received_total")
	ackLatencySeconds = metrics.GetOrCreateHistogram("fleet_ack_latency_seconds")
)

// totalBuffered is what all servers' connections hold beyond their fixed
// state (see conn.held; the gauge fleet_connection_buffered_bytes).
var totalBuffered atomic.Int64

// handshakeBytes is what all servers hold for connections whose handshake
// is not done (the gauge fleet_tls_handshake_bytes); handshakesRunning
// counts handshake goroutines, and handshakeSlots is the last server's
// MaxHandshakes.
var handshakeBytes, handshakesRunning, handshakeSlots atomic.Int64

// refusal reasons; each is a label value of one counter family so operators
// can graph them together.
const (
	reasonHandshakeFailed   = "tls_handshake_failed"
	reasonHandshakeTimeout  = "tls_handshake_timeout"
	reasonHandshakeMemory   = "tls_handshake_memory"
	reasonBadClientHello    = "tls_bad_client_hello"
	reasonUnknownIssuer     = "unknown_issuer"
	reasonExcludedOID       = "excluded_key_usage"
	reasonBadRequest        = "bad_http_request"
	reasonRequestTooLarge   = "http_request_too_large"
	reasonRequestTimeout    = "http_request_timeout"
	reasonIdleTimeout       = "idle_timeout"
	reasonDraining          = "draining"
	reasonTextFrame         = "text_frame"
	reasonProtocolError     = "websocket_protocol_error"
	reasonSpoolFull         = "spool_full"
	reasonSpoolBusy         = "spool_busy"
	reasonSpoolClosed       = "spool_closed"
	reasonSpoolCommitFailed = "spool_commit_failed"
	reasonInFlightFull      = "in_flight_window_full"
	reasonBadTLSRecord      = "bad_tls_record"

	reasonBadEnvelope    = "bad_envelope"
	reasonBadPayload     = "bad_payload"
	reasonTooBig         = "record_too_big"
	reasonSenderMismatch = "sender_id_mismatch"
	reasonClientAck      = "client_sent_ack"
	reasonEmptyEnvelope  = "empty_envelope"
	reasonRateLimited    = "rate_limited"
	reasonVINNotAllowed  = "vin_not_allowed"
)

// reasonCounter is one reason's counter, kept for Server.Stats.
type reasonCounter struct {
	reason string
	c      *metrics.Counter
}

// connRefusals and recordRefusals are every counter connRefused and
// recordRefused made, in order.
var connRefusals, recordRefusals []reasonCounter

func connRefused(reason string) *metrics.Counter {
	c := metrics.GetOrCreateCounter(`fleet_connections_refused_total{reason="` + reason + `"}`)
	connRefusals = append(connRefusals, reasonCounter{reason, c})
	return c
}

func recordRefused(reason string) *metrics.Counter {
	c := metrics.GetOrCreateCounter(`fleet_records_refused_total{reason="` + reason + `"}`)
	recordRefusals = append(recordRefusals, reasonCounter{reason, c})
	return c
}

var (
	refusedHandshakeFailed   = connRefused(reasonHandshakeFailed)
	refusedHandshakeTimeout  = connRefused(reasonHandshakeTimeout)
	refusedHandshakeMemory   = connRefused(reasonHandshakeMemory)
	refusedBadClientHello    = connRefused(reasonBadClientHello)
	refusedUnknownIssuer     = connRefused(reasonUnknownIssuer)
	refusedExcludedOID       = connRefused(reasonExcludedOID)
	refusedBadRequest        = connRefused(reasonBadRequest)
	refusedRequestTooLarge   = connRefused(reasonRequestTooLarge)
	refusedRequestTimeout    = connRefused(reasonRequestTimeout)
	refusedIdleTimeout       = connRefused(reasonIdleTimeout)
	refusedDraining          = connRefused(reasonDraining)
	refusedTextFrame         = connRefused(reasonTextFrame)
	refusedProtocolError     = connRefused(reasonProtocolError)
	refusedSpoolFull         = connRefused(reasonSpoolFull)
	refusedSpoolBusy         = connRefused(reasonSpoolBusy)
	refusedSpoolClosed       = connRefused(reasonSpoolClosed)
	refusedSpoolCommitFailed = connRefused(reasonSpoolCommitFailed)
	refusedBadTLSRecord      = connRefused(reasonBadTLSRecord)
	refusedInFlightFull      = connRefused(reasonInFlightFull)

	recBadEnvelope    = recordRefused(reasonBadEnvelope)
	recBadPayload     = recordRefused(reasonBadPayload)
	recTooBig         = recordRefused(reasonTooBig)
	recSenderMismatch = recordRefused(reasonSenderMismatch)
	recClientAck      = recordRefused(reasonClientAck)
	recEmptyEnvelope  = recordRefused(reasonEmptyEnvelope)
	recRateLimited    = recordRefused(reasonRateLimited)

	refusedVINNotAllowed = connRefused(reasonVINNotAllowed)
	refusedTooMany       = connRefused("too_many_connections")
	refusedMemoryBudget  = connRefused("buffer_budget")
	refusedConnMemory    = connRefused("connection_memory_cap")
	_                    = metrics.GetOrCreateGauge("fleet_connection_buffered_bytes", func() float64 { return float64(totalBuffered.Load()) })
	_                    = metrics.GetOrCreateGauge("fleet_tls_handshake_bytes", func() float64 { return float64(handshakeBytes.Load()) })
	_                    = metrics.GetOrCreateGauge("fleet_tls_handshakes_running", func() float64 { return float64(handshakesRunning.Load()) })
	_                    = metrics.GetOrCreateGauge("fleet_tls_handshake_slots", func() float64 { return float64(handshakeSlots.Load()) })

	connectivityEvents       = metrics.GetOrCreateCounter("fleet_connectivity_events_total")
	connectivityEventsFailed = metrics.GetOrCreateCounter("fleet_connectivity_events_failed_total")
)

// Metrics of the reference server (teslamotors/fleet-telemetry), with its
// names, types and label names, so dashboards built on it keep working.
// Each is fed by the same events as our fleet_* counters; where one event
// feeds both, both move.
var (
	// record_too_big_total{}: a message over the size limit.
	refRecordTooBig = metrics.GetOrCreateCounter("record_too_big_total")
	// unauthorized_sender_id_total{}: sender_id is not the certificate's.
	refUnauthorizedSender = metrics.GetOrCreateCounter("unauthorized_sender_id_total")
	// unexpected_record_err_total{}: every error reply sent to a vehicle.
	refUnexpectedRecordErr = metrics.GetOrCreateCounter("unexpected_record_err_total")
	// socket_err_total{}: a write to the vehicle's socket failed.
	refSocketErr = metrics.GetOrCreateCounter("socket_err_total")
	// num_connections: open WebSockets (the reference's registry size).
	refNumConnections = metrics.GetOrCreateGauge("num_connections", nil)
)

// maxTopicSeries bounds the record types given their own series: the topic
// is chosen by the vehicle, so past this many the rest share one.
const maxTopicSeries = 64

// otherTopic is the record_type of topics past maxTopicSeries.
const otherTopic = "other"

// topicMetrics are the per-record-type series of the reference.
type topicMetrics struct {
	records    *metrics.Counter // record_total{record_type}
	bytes      *metrics.Counter // record_size_bytes_total{record_type}
	dispatched *metrics.Counter // dispatch_total{record_type}
	signals    *metrics.Gauge   // signal_count{record_type} (a gauge there too)
	slot       uint8            // the per-connection counter (vehicleStats.topics)
}

var (
	// topicTable is copied on write: the loops only Load it.
	topicTable atomic.Pointer[map[string]*topicMetrics]
	topicMu    sync.Mutex
)

func init() {
	for _, t := range []string{record.TopicV, record.TopicAlerts, record.TopicErrors, record.TopicConnectivity} {
		addTopicMetrics([]byte(t))
	}
}

// metricsForTopic returns the series of a record type without allocating
// once they exist.
func metricsForTopic(topic []byte) *topicMetrics {
	if m := topicTable.Load(); m != nil {
		if tm := (*m)[string(topic)]; tm != nil {
			return tm
		}
		// Once the table is full every new name counts as "other": no
		// lock per record for a vehicle that sends made-up topics.
		if len(*m) >= maxTopicSeries {
			if tm := (*m)[otherTopic]; tm != nil {
				return tm
			}
		}
	}
	return addTopicMetrics(topic)
}

func addTopicMetrics(topic []byte) *topicMetrics {
	topicMu.Lock()
	defer topicMu.Unlock()
	old := map[string]*topicMetrics{}
	if m := topicTable.Load(); m != nil {
		old = *m
	}
	if tm := old[string(topic)]; tm != nil {
		return tm
	}
	name := string(topic)
	if len(old) >= maxTopicSeries {
		if tm := old[otherTopic]; tm != nil {
			return tm
		}
		name = otherTopic
	}
	l := `{record_type="` + escapeLabel(name) + `"}`
	tm := &topicMetrics{
		records:    metrics.GetOrCreateCounter("record_total" + l),
		bytes:      metrics.GetOrCreateCounter("record_size_bytes_total" + l),
		dispatched: metrics.GetOrCreateCounter("dispatch_total" + l),
		signals:    metrics.GetOrCreateGauge("signal_count"+l, nil),
		slot:       topicSlot(name),
	}
	next := make(map[string]*topicMetrics, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[name] = tm
	topicTable.Store(&next)
	return tm
}

// vinSignalMetrics are vin_signal_count{record_type,vin} of one tracked VIN.
type vinSignalMetrics struct {
	v, alerts *metrics.Gauge
}

func newVINSignalMetrics(vin string) *vinSignalMetrics {
	v := `",vin="` + escapeLabel(vin) + `"}`
	return &vinSignalMetrics{
		v:      metrics.GetOrCreateGauge(`vin_signal_count{record_type="`+record.TopicV+v, nil),
		alerts: metrics.GetOrCreateGauge(`vin_signal_count{record_type="`+record.TopicAlerts+v, nil),
	}
}

// countSignals adds a record's signals to signal_count and, for a tracked
// VIN, to vin_signal_count.
func countSignals(tm *topicMetrics, vs *vinSignalMetrics, topic []byte, n int) {
	if n == 0 {
		return
	}
	tm.signals.Add(float64(n))
	if vs != nil {
		if string(topic) == record.TopicV {
			vs.v.Add(float64(n))
		} else {
			vs.alerts.Add(float64(n))
		}
	}
}

// unknownMessageType holds unknown_message_type_error_total{msg_type}, by
// envelope message type, created on first use. (The reference writes the
// type as a raw byte; here it is the decimal number.)
var unknownMessageType [256]atomic.Pointer[metrics.Counter]

func countUnknownMessageType(t envelope.MessageType) {
	p := &unknownMessageType[t]
	c := p.Load()
	if c == nil {
		c = metrics.GetOrCreateCounter(`unknown_message_type_error_total{msg_type="` + strconv.Itoa(int(t)) + `"}`)
		p.Store(c)
	}
	c.Inc()
}

// rateLimitCounter returns rate_limit_exceeded_total{device_id,txtype} for
// this connection's vehicle and topic, remembering the last one so a flood
// of one topic does not allocate.
func (c *conn) rateLimitCounter(topic []byte) *metrics.Counter {
	if c.rlCounter != nil && string(topic) == c.rlTopic {
		return c.rlCounter
	}
	c.rlTopic = string(topic)
	c.rlCounter = metrics.GetOrCreateCounter(`rate_limit_exceeded_total{device_id="` + escapeLabel(c.id.DeviceID) +
		`",txtype="` + escapeLabel(c.rlTopic) + `"}`)
	return c.rlCounter
}

// reliableMetrics are reliable_ack{,_miss} of one record type and the
// dispatcher whose confirmation its acks wait for. The reference's names
// (a counter without the _total suffix) and the _total names are both
// kept.
type reliableMetrics struct {
	ack, ackTotal, miss, missTotal *metrics.Counter
}

func newReliableMetrics(topic, dispatcher string) *reliableMetrics {
	l := `{record_type="` + escapeLabel(topic) + `",dispatcher="` + escapeLabel(dispatcher) + `"}`
	return &reliableMetrics{
		ack:       metrics.GetOrCreateCounter("reliable_ack" + l),
		ackTotal:  metrics.GetOrCreateCounter("reliable_ack_total" + l),
		miss:      metrics.GetOrCreateCounter("reliable_ack_miss" + l),
		missTotal: metrics.GetOrCreateCounter("reliable_ack_miss_total" + l),
	}
}

func (m *reliableMetrics) acked() {
	if m != nil {
		m.ack.Inc()
		m.ackTotal.Inc()
	}
}

func (m *reliableMetrics) missed() {
	if m != nil {
		m.miss.Inc()
		m.missTotal.Inc()
	}
}

// escapeLabel escapes a Prometheus label value.
func escapeLabel(s string) string {
	if !strings.ContainsAny(s, "\\\"\n") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return r.Replace(s)
}

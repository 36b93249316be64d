package netloop

import (
	"github.com/VictoriaMetrics/metrics"
)

// Counters are created once at init: the hot path only increments.
var (
	connectionsOpen     = metrics.GetOrCreateGauge("fleet_connections_open", nil)
	connectionsAccepted = metrics.GetOrCreateCounter("fleet_connections_accepted_total")
	handshakesOK        = metrics.GetOrCreateCounter("fleet_tls_handshakes_total")
	upgradesOK          = metrics.GetOrCreateCounter("fleet_websocket_upgrades_total")
	statusRequests      = metrics.GetOrCreateCounter("fleet_status_requests_total")

	recordsReceived   = metrics.GetOrCreateCounter("fleet_records_received_total")
	recordsSpooled    = metrics.GetOrCreateCounter("fleet_records_spooled_total")
	recordsAcked      = metrics.GetOrCreateCounter("fleet_acks_sent_total")
	recordsUnrouted   = metrics.GetOrCreateCounter("fleet_records_unrouted_total")
	errorReplies      = metrics.GetOrCreateCounter("fleet_error_replies_total")
	pingsAnswered     = metrics.GetOrCreateCounter("fleet_pings_total")
	bytesReceived     = metrics.GetOrCreateCounter("fleet_record_bytes_received_total")
	ackLatencySeconds = metrics.GetOrCreateHistogram("fleet_ack_latency_seconds")
)

// refusal reasons; each is a label value of one counter family so operators
// can graph them together.
const (
	reasonHandshakeFailed   = "tls_handshake_failed"
	reasonHandshakeTimeout  = "tls_handshake_timeout"
	reasonHandshakeBusy     = "tls_handshake_queue_full"
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

	reasonBadEnvelope    = "bad_envelope"
	reasonBadPayload     = "bad_payload"
	reasonTooBig         = "record_too_big"
	reasonSenderMismatch = "sender_id_mismatch"
	reasonClientAck      = "client_sent_ack"
	reasonEmptyEnvelope  = "empty_envelope"
	reasonUnknownTopic   = "unknown_topic"
	reasonRateLimited    = "rate_limited"
	reasonVINNotAllowed  = "vin_not_allowed"
)

func connRefused(reason string) *metrics.Counter {
	return metrics.GetOrCreateCounter(`fleet_connections_refused_total{reason="` + reason + `"}`)
}

func recordRefused(reason string) *metrics.Counter {
	return metrics.GetOrCreateCounter(`fleet_records_refused_total{reason="` + reason + `"}`)
}

var (
	refusedHandshakeFailed   = connRefused(reasonHandshakeFailed)
	refusedHandshakeTimeout  = connRefused(reasonHandshakeTimeout)
	refusedHandshakeBusy     = connRefused(reasonHandshakeBusy)
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
	refusedInFlightFull      = connRefused(reasonInFlightFull)

	recBadEnvelope    = recordRefused(reasonBadEnvelope)
	recBadPayload     = recordRefused(reasonBadPayload)
	recTooBig         = recordRefused(reasonTooBig)
	recSenderMismatch = recordRefused(reasonSenderMismatch)
	recClientAck      = recordRefused(reasonClientAck)
	recEmptyEnvelope  = recordRefused(reasonEmptyEnvelope)
	recUnknownTopic   = recordRefused(reasonUnknownTopic)
	recRateLimited    = recordRefused(reasonRateLimited)

	refusedVINNotAllowed = connRefused(reasonVINNotAllowed)

	connectivityEvents       = metrics.GetOrCreateCounter("fleet_connectivity_events_total")
	connectivityEventsFailed = metrics.GetOrCreateCounter("fleet_connectivity_events_failed_total")
)

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/introspect"
	"github.com/fleet-telemetry/fleet-telemetry/internal/metricsexport"
	"github.com/fleet-telemetry/fleet-telemetry/internal/profiler"
)

// startMonitoring serves /metrics and, unless monitoring.introspection is
// false, intro's routes (/connz, /varz and the status page at /) on the
// metrics port, and /debug/pprof/, /gc_stats and /live_profiler on the
// profiler port, and pushes to StatsD as the "monitoring" section asks. The returned function stops them (a live CPU
// profile still running is finished, so its file is whole).
func startMonitoring(m *config.Monitoring, intro *introspect.Handler, log *slog.Logger) (func(), error) {
	var servers []*http.Server
	var pusher *metricsexport.StatsdPusher
	var prof *profiler.Profiler
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, s := range servers {
			_ = s.Shutdown(ctx)
		}
		if pusher != nil {
			pusher.Stop()
		}
		if prof != nil {
			if err := prof.Stop(); err != nil {
				log.Warn("live cpu profile", "err", err)
			}
		}
	}
	if m == nil {
		return stop, nil
	}
	serve := func(what, host string, port int, h http.Handler) error {
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("monitoring: %s on %s: %w", what, addr, err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("monitoring server stopped", "what", what, "err", err)
			}
		}()
		log.Info("serving "+what, "addr", ln.Addr().String())
		return nil
	}
	if m.PrometheusMetricsPort > 0 {
		mux := http.NewServeMux()
		mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
			_ = metricsexport.WriteExposition(w, metricHelp)
		})
		if m.IntrospectionOn() {
			intro.Register(mux)
		}
		if err := serve("metrics", m.PrometheusMetricsHost, m.PrometheusMetricsPort, mux); err != nil {
			stop()
			return nil, err
		}
		if m.IntrospectionOn() && !isLoopback(m.PrometheusMetricsHost) {
			log.Warn("the monitoring port lists the connected vehicles' VINs (/connz and the status page at /) and listens beyond this host; "+
				"restrict who can reach it", "host", m.PrometheusMetricsHost, "port", m.PrometheusMetricsPort)
		}
	}
	if m.ProfilerPort > 0 {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		prof = profiler.New(profiler.Options{Path: m.ProfilingPath, Logger: log})
		prof.Register(mux)
		if err := serve("pprof", m.ProfilerHost, m.ProfilerPort, mux); err != nil {
			stop()
			return nil, err
		}
	}
	if sc := m.Statsd; sc != nil && sc.Host != "" {
		p, err := metricsexport.StartStatsd(metricsexport.StatsdOptions{Addr: sc.Host, Prefix: sc.Prefix,
			FlushPeriod: time.Duration(sc.FlushPeriod) * time.Millisecond, Logger: log})
		if err != nil {
			stop()
			return nil, fmt.Errorf("monitoring: statsd: %w", err)
		}
		pusher = p
		log.Info("pushing metrics to statsd", "addr", sc.Host, "prefix", sc.Prefix)
	}
	return stop, nil
}

// isLoopback reports whether host (a name or an address to bind) is this
// host only.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// metricHelp is the HELP text of each family on /metrics. Names without
// the fleet_ prefix are the reference server's, with its meaning.
func metricHelp(name string) string {
	if h, ok := metricHelpText[name]; ok {
		return h
	}
	return sinkMetricHelp[name]
}

var metricHelpText = map[string]string{
	// The reference server's metrics.
	"record_total":                     "Records received with a usable envelope from their own vehicle, by record type.",
	"record_size_bytes_total":          "Payload bytes of the records counted in record_total, by record type.",
	"dispatch_total":                   "Records handed on to the sinks (via the spool), by record type.",
	"rate_limit_exceeded_total":        "Records dropped by the per-connection rate limit, by vehicle and record type.",
	"record_too_big_total":             "Messages larger than the size limit.",
	"unauthorized_sender_id_total":     "Records whose sender_id is not the connected vehicle's (dispatched under the certificate's VIN; refused on a record type no sink takes).",
	"unknown_message_type_error_total": "Envelopes that do not carry a stream message, by envelope message type.",
	"unexpected_record_err_total":      "Error replies sent to vehicles.",
	"socket_err_total":                 "Writes to a vehicle's socket that failed.",
	"signal_count":                     "Signals received (datums of V records, alerts of alerts records), by record type.",
	"vin_signal_count":                 "Signals received from the VINs in vins_signal_tracking_enabled, by record type and VIN.",
	"reliable_ack":                     "Acks released by the reliable-ack sink's confirmation (the reference's name; same as reliable_ack_total).",
	"reliable_ack_total":               "Acks released by the reliable-ack sink's confirmation, by record type and dispatcher.",
	"reliable_ack_miss":                "Confirmed records whose vehicle had disconnected (the reference's name; same as reliable_ack_miss_total).",
	"reliable_ack_miss_total":          "Confirmed records whose vehicle had disconnected before the ack, by record type and dispatcher.",
	"num_connections":                  "Open vehicle WebSockets.",
	// Ours.
	"fleet_build_info":                            "The running binary: module version, VCS revision and Go version as labels; always 1.",
	"fleet_connections_open":                      "Open TCP connections on the vehicle port (handshaking included).",
	"fleet_connections_accepted_total":            "TCP connections accepted on the vehicle port.",
	"fleet_connections_refused_total":             "Connections closed by the server, by reason (TLS handshake failures included).",
	"fleet_tls_handshakes_total":                  "TLS handshakes completed.",
	"fleet_websocket_upgrades_total":              "WebSocket upgrades completed.",
	"fleet_status_requests_total":                 "GET /status requests answered on the vehicle port.",
	"fleet_records_received_total":                "Binary WebSocket messages received.",
	"fleet_records_spooled_total":                 "Records handed to the spool.",
	"fleet_acks_sent_total":                       "Acks written to vehicles for spooled records.",
	"fleet_ack_latency_seconds":                   "Time from a record's arrival to its ack being written.",
	"fleet_records_unrouted_total":                "Records of a type no sink takes (acked, not kept).",
	"fleet_records_refused_total":                 "Records not kept, by reason.",
	"fleet_records_sender_id_mismatch_total":      "Records whose sender_id names another vehicle than the certificate: kept under the certificate's VIN on a routed record type, refused (sender_id_mismatch) on another.",
	"fleet_error_replies_total":                   "Error replies sent to vehicles.",
	"fleet_pings_total":                           "WebSocket pings answered.",
	"fleet_record_bytes_received_total":           "Bytes of binary WebSocket messages received.",
	"fleet_connectivity_events_total":             "Connectivity events recorded.",
	"fleet_connectivity_events_failed_total":      "Connectivity events that could not be recorded.",
	"fleet_spool_appended_total":                  "Records appended to the spool.",
	"fleet_spool_commits_total":                   "Spool commits (fsyncs).",
	"fleet_spool_commit_errors_total":             "Spool commits that failed.",
	"fleet_spool_refused_total":                   "Records the spool refused, by reason.",
	"fleet_spool_bytes":                           "Bytes held in the spool.",
	"fleet_spool_records":                         "Records held in the spool.",
	"fleet_spool_oldest_record_age_seconds":       "Age of the oldest record in the spool.",
	"fleet_spool_commit_duration_seconds":         "Duration of spool commits.",
	"fleet_spool_commit_records":                  "Records per spool commit.",
	"fleet_forwarder_sent_total":                  "Records a sink confirmed, by forwarder.",
	"fleet_forwarder_failed_batches_total":        "Batches a sink failed to take, by forwarder.",
	"fleet_forwarder_retries_total":               "Batch retries, by forwarder.",
	"fleet_forwarder_lane_lag_records":            "Records committed to the spool that a forwarder's lane (one record type) has not passed, 0 when none of them is of its type: what to alert on.",
	"fleet_memory_trims_total":                    "Times the daemon returned the heap's free memory to the OS after an allocation burst (a reconnect storm) gave way to quiet.",
	"fleet_forwarder_lane_oldest_waiting_seconds": "Age of the oldest record a lane is trying to deliver (0: none waiting).",
	"fleet_forwarder_lane_errors_total":           "Sends a lane's sink failed, by forwarder and record type.",
	"fleet_forwarder_quarantined_total":           "Records a sink refused for good, moved to the spool's quarantine, by dispatcher, record type and reason.",
	"fleet_forwarder_out_of_order_total":          "Sends after which a sink confirmed a record after a failed one of the same VIN (a sink bug).",
	"fleet_forwarder_lag_records":                 "Records committed to the spool that a forwarder's slowest lane has not passed.",
	"fleet_forwarder_undecodable_total":           "Spooled records a sink could not decode, by forwarder.",
	"fleet_kafka_produced_total":                  "Records the Kafka sink produced and the brokers acknowledged.",
	"fleet_kafka_produce_errors_total":            "Records the Kafka sink failed to produce (the batch is retried).",
	"fleet_pubsub_published_total":                "Messages the Pub/Sub sink published.",
	"fleet_pubsub_publish_errors_total":           "Messages the Pub/Sub sink failed to publish (the batch is retried).",
	"fleet_connection_buffered_bytes":             "Bytes all connections hold beyond their fixed state: partial frames and requests, messages being reassembled, queued replies, output not yet read by the peer, incomplete TLS records.",
	"fleet_tls_handshake_bytes":                   "Bytes held for connections whose TLS handshake is not done (ClientHellos arriving, handshakes in progress), against the handshake memory cap.",
	"fleet_tls_handshakes_running":                "TLS handshakes in progress (each in its own goroutine, computing in one of the handshake slots).",
	"fleet_tls_handshake_slots":                   "Handshake slots: how many TLS handshakes may compute at once.",
	"fleet_tls_client_cert_verifications_total":   "Client certificate chain checks, by whether the verified-chain cache answered (hit) or a full verification ran (miss).",
	"fleet_tls_record_layer_total":                "Connections by TLS record layer after the handshake: the daemon's own (native, TLS 1.3) or crypto/tls.",
	"fleet_forwarder_sent_batches_total":          "Batches a sink confirmed, by forwarder (records per request = sent / batches).",
	"fleet_spool_background_errors_total":         "Pebble background errors (failed flushes and compactions), each retried.",
	"fleet_spool_background_error_pauses_total":   "Pauses put between quick repeats of a failing flush or compaction (10 ms doubling to 500 ms), instead of Pebble's immediate retry.",
	"fleet_spool_degraded":                        "1 while the spool reopens after a failed commit (appends refused), else 0.",
	"fleet_spool_disk_free_bytes":                 "Free space on the spool's file system (checked every 250 ms when spool.min_free_bytes is set).",
}

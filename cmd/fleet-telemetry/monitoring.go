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

	"github.com/VictoriaMetrics/metrics"
)

// startMonitoring serves /metrics and /debug/pprof/ as the "monitoring"
// section asks. The returned function stops the servers.
func startMonitoring(m *MonitoringConfig, log *slog.Logger) (func(), error) {
	var servers []*http.Server
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, s := range servers {
			_ = s.Shutdown(ctx)
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
			metrics.WritePrometheus(w, true)
		})
		if err := serve("metrics", m.PrometheusMetricsHost, m.PrometheusMetricsPort, mux); err != nil {
			stop()
			return nil, err
		}
	}
	if m.ProfilerPort > 0 {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		if err := serve("pprof", m.ProfilerHost, m.ProfilerPort, mux); err != nil {
			stop()
			return nil, err
		}
	}
	return stop, nil
}

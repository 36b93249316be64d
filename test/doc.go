// Package test holds the end-to-end tests. Each starts the real
// fleet-telemetry binary (built once in TestMain) and talks to it the way
// its users do: vehicles over mutual TLS and WebSocket, real brokers and
// subscribers (kfake read by kcat, kinesalite, pstest, mosquitto,
// redis-server, nats-server, a libzmq subscriber), the spool CLI, systemd
// and a real browser for the status page. Shared helpers live in
// internal/e2e and internal/brokertest.
package test

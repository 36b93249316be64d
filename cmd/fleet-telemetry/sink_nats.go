package main

import (
	"log/slog"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/nats"
	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
)

// natsOptions maps the "nats" section to the sink's options; it refuses a
// section Check refuses.
func natsOptions(c *config.NATS) (nats.Options, error) {
	if err := c.Check(); err != nil {
		return nats.Options{}, err
	}
	return nats.Options{URL: c.URL, Name: c.Name, JetStream: c.JetStream}, nil
}

// newNATSSink builds the "nats" dispatcher; a server that cannot be reached
// stops the start, as in the fork.
func newNATSSink(cfg *config.Config, enc forwarder.Encoder, log *slog.Logger) (forwarder.Sink, error) {
	o, err := natsOptions(cfg.NATS)
	if err != nil {
		return nil, err
	}
	o.Encoder, o.Logger = enc, log
	return nats.New(o)
}

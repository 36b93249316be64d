package main

import (
	"errors"
	"log/slog"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/nats"
)

// NATSConfig is the "nats" section of Teslemetry's fork of the reference,
// plus our "jetstream".
type NATSConfig struct {
	// URL is the server URL (credentials may be in it); several are
	// separated by commas.
	URL string `json:"url"`
	// Name is the connection name the server shows.
	Name string `json:"name"`
	// JetStream waits for each record's PubAck: the cursor passes only
	// what a stream stored (a stream must take <namespace>.>).
	JetStream bool `json:"jetstream"`
}

// natsOptions checks the "nats" section and maps it to the sink's options.
func natsOptions(c *NATSConfig) (nats.Options, error) {
	if c == nil {
		return nats.Options{}, errors.New(`records route to "nats" but there is no "nats" section`)
	}
	if c.URL == "" {
		return nats.Options{}, errors.New("nats.url is required")
	}
	return nats.Options{URL: c.URL, Name: c.Name, JetStream: c.JetStream}, nil
}

// newNATSSink builds the "nats" dispatcher; a server that cannot be reached
// stops the start, as in the fork.
func newNATSSink(cfg *Config, enc forwarder.Encoder, log *slog.Logger) (forwarder.Sink, error) {
	o, err := natsOptions(cfg.NATS)
	if err != nil {
		return nil, err
	}
	o.Encoder, o.Logger = enc, log
	return nats.New(o)
}

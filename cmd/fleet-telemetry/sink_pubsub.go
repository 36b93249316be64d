package main

import (
	"errors"
	"log/slog"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
)

// newPubsubSink builds the "pubsub" dispatcher from the config file.
func newPubsubSink(cfg *Config, enc forwarder.Encoder, recordTypes []string, log *slog.Logger) (forwarder.Sink, error) {
	return nil, errors.New("dispatcher \"pubsub\" is not built yet")
}

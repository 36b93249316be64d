package main

import (
	"errors"
	"log/slog"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
)

// newKinesisSink builds the "kinesis" dispatcher from the config file.
func newKinesisSink(cfg *Config, enc forwarder.Encoder, log *slog.Logger) (forwarder.Sink, error) {
	return nil, errors.New("dispatcher \"kinesis\" is not built yet")
}

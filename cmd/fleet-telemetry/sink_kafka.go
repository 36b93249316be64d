package main

import (
	"log/slog"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/kafka"
	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
)

// newKafkaSink builds the "kafka" dispatcher from the config file's "kafka"
// section (librdkafka property names, as in the reference). Errors name the
// offending property, e.g. `kafka: unsupported property "foo.bar"`.
func newKafkaSink(cfg *config.Config, enc forwarder.Encoder, log *slog.Logger) (forwarder.Sink, error) {
	kc, err := kafka.ParseConfig(cfg.Kafka)
	if err != nil {
		return nil, err
	}
	return kafka.New(kc, enc, log)
}

package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/pubsub"
	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
)

// newPubsubSink builds the "pubsub" dispatcher from the config file: the
// topics of recordTypes are created at start when missing, and start-up
// fails when that is impossible. PUBSUB_EMULATOR_HOST points it at an
// emulator.
func newPubsubSink(cfg *config.Config, enc forwarder.Encoder, recordTypes []string, log *slog.Logger) (forwarder.Sink, error) {
	// Validate rejects a config routing to pubsub without this section,
	// but the spool CLI's replay builds sinks from a config it only loads.
	if cfg.Pubsub == nil {
		return nil, errors.New(`config: the "pubsub" section is missing`)
	}
	return pubsub.New(context.Background(), pubsub.Options{
		ProjectID:   cfg.Pubsub.ProjectID,
		RecordTypes: recordTypes,
		Encoder:     enc,
		Logger:      log,
	})
}

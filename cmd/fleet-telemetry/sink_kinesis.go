package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/kinesis"
	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
)

// kinesisOptions maps the "kinesis" section (nil: AWS defaults, streams
// named <namespace>_<record type>) to the sink's options; it refuses a
// section Check refuses.
func kinesisOptions(cfg *config.Config) (kinesis.Options, error) {
	o := kinesis.Options{Namespace: cfg.Namespace, MaxRetries: -1}
	k := cfg.Kinesis
	if err := k.Check(); err != nil {
		return kinesis.Options{}, err
	}
	if k != nil {
		o.OverrideHost = k.OverrideHost
		o.Streams = k.Streams
		if k.MaxRetries != nil {
			o.MaxRetries = *k.MaxRetries
		}
	}
	return o, nil
}

// newKinesisSink builds the "kinesis" dispatcher. AWS credentials and the
// region come from the environment or the AWS config files, as for any AWS
// client.
func newKinesisSink(cfg *config.Config, enc forwarder.Encoder, log *slog.Logger) (forwarder.Sink, error) {
	o, err := kinesisOptions(cfg)
	if err != nil {
		return nil, err
	}
	o.Encoder, o.Logger = enc, log
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return kinesis.New(ctx, o)
}

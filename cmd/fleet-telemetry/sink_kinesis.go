package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/kinesis"
)

// newKinesisSink builds the "kinesis" dispatcher from the config file's
// "kinesis" section (missing: AWS defaults, streams named
// <namespace>_<record type>). AWS credentials and the region come from the
// environment or the AWS config files, as for any AWS client.
func newKinesisSink(cfg *Config, enc forwarder.Encoder, log *slog.Logger) (forwarder.Sink, error) {
	o := kinesis.Options{Namespace: cfg.Namespace, MaxRetries: -1, Encoder: enc, Logger: log}
	if k := cfg.Kinesis; k != nil {
		o.OverrideHost = k.OverrideHost
		o.Streams = k.Streams
		if k.MaxRetries != nil {
			if *k.MaxRetries < 0 {
				return nil, fmt.Errorf("kinesis.max_retries %d is negative", *k.MaxRetries)
			}
			o.MaxRetries = *k.MaxRetries
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return kinesis.New(ctx, o)
}

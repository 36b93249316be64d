package main

import (
	"log/slog"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/zmq"
	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
)

// zmqOptions maps the "zmq" section to the sink's options; it refuses a
// section Check refuses (CURVE keys among them).
func zmqOptions(c *config.ZMQ) (zmq.Options, error) {
	if err := c.Check(); err != nil {
		return zmq.Options{}, err
	}
	return zmq.Options{Addr: c.Addr, Verbose: c.Verbose}, nil
}

// newZMQSink builds the "zmq" dispatcher: it binds the socket, and a bind
// error stops the start.
func newZMQSink(cfg *config.Config, enc forwarder.Encoder, log *slog.Logger) (forwarder.Sink, error) {
	o, err := zmqOptions(cfg.ZMQ)
	if err != nil {
		return nil, err
	}
	o.Encoder, o.Logger = enc, log
	return zmq.New(o)
}

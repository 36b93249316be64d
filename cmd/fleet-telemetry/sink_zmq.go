package main

import (
	"errors"
	"log/slog"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/zmq"
)

// ZMQConfig is the reference's "zmq" section.
type ZMQConfig struct {
	// Addr is the endpoint the PUB socket binds ("tcp://*:5284").
	Addr string `json:"addr"`
	// ServerKeyJSONPath and AllowedPublicKeysJSONPath configure CURVE in
	// the reference; this build cannot do CURVE and refuses them.
	ServerKeyJSONPath         string `json:"server_key_json_path"`
	AllowedPublicKeysJSONPath string `json:"allowed_public_keys_json_path"`
	// Verbose logs the socket library's messages.
	Verbose bool `json:"verbose"`
}

// zmqOptions checks the "zmq" section and maps it to the sink's options.
func zmqOptions(c *ZMQConfig) (zmq.Options, error) {
	if c == nil {
		return zmq.Options{}, errors.New(`records route to "zmq" but there is no "zmq" section`)
	}
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("zmq.addr is required"))
	}
	var curve []string
	if c.ServerKeyJSONPath != "" {
		curve = append(curve, "zmq.server_key_json_path")
	}
	if c.AllowedPublicKeysJSONPath != "" {
		curve = append(curve, "zmq.allowed_public_keys_json_path")
	}
	if len(curve) > 0 {
		errs = append(errs, zmq.CurveNotSupported(curve...))
	}
	if err := errors.Join(errs...); err != nil {
		return zmq.Options{}, err
	}
	return zmq.Options{Addr: c.Addr, Verbose: c.Verbose}, nil
}

// newZMQSink builds the "zmq" dispatcher: it binds the socket, and a bind
// error stops the start.
func newZMQSink(cfg *Config, enc forwarder.Encoder, log *slog.Logger) (forwarder.Sink, error) {
	o, err := zmqOptions(cfg.ZMQ)
	if err != nil {
		return nil, err
	}
	o.Encoder, o.Logger = enc, log
	return zmq.New(o)
}

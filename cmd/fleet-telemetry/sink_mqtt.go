package main

import (
	"log/slog"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/mqtt"
	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
)

// mqttOptions maps the "mqtt" section to the sink's options, refusing a
// section Check refuses (the spool CLI builds sinks from a config it does
// not Validate).
func mqttOptions(c *config.MQTT) (mqtt.Options, error) {
	if err := c.Check(); err != nil {
		return mqtt.Options{}, err
	}
	return mqtt.Options{
		Broker:               mqtt.BrokerURL(c.Broker),
		ClientID:             c.ClientID,
		Username:             c.Username,
		Password:             c.Password,
		TopicBase:            c.TopicBase,
		QoS:                  byte(c.QoS),
		Retained:             c.Retained,
		ConnectTimeout:       time.Duration(c.ConnectTimeoutMs) * time.Millisecond,
		PublishTimeout:       time.Duration(c.PublishTimeoutMs) * time.Millisecond,
		DisconnectTimeout:    time.Duration(c.DisconnectTimeoutMs) * time.Millisecond,
		ConnectRetryInterval: time.Duration(c.ConnectRetryIntervalMs) * time.Millisecond,
		KeepAlive:            time.Duration(c.KeepAliveSeconds) * time.Second,
	}, nil
}

// newMQTTSink builds the "mqtt" dispatcher. It connects in the background:
// an unreachable broker does not stop the start (records wait in the
// spool). transmit_decoded_records does not apply: MQTT carries its own
// JSON per datum.
func newMQTTSink(cfg *config.Config, _ forwarder.Encoder, log *slog.Logger) (forwarder.Sink, error) {
	o, err := mqttOptions(cfg.MQTT)
	if err != nil {
		return nil, err
	}
	o.Logger = log
	return mqtt.New(o)
}

package main

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/mqtt"
)

// MQTTConfig is the reference's "mqtt" section. Durations are integers in
// the unit their name says; 0 (or absent) means the default.
type MQTTConfig struct {
	Broker                 string `json:"broker"`
	ClientID               string `json:"client_id"`
	Username               string `json:"username"`
	Password               string `json:"password"`
	TopicBase              string `json:"topic_base"`
	QoS                    int    `json:"qos"`
	Retained               bool   `json:"retained"`
	ConnectTimeoutMs       int    `json:"connect_timeout_ms"`
	PublishTimeoutMs       int    `json:"publish_timeout_ms"`
	DisconnectTimeoutMs    int    `json:"disconnect_timeout_ms"`
	ConnectRetryIntervalMs int    `json:"connect_retry_interval_ms"`
	KeepAliveSeconds       int    `json:"keep_alive_seconds"`
}

// mqttOptions checks the "mqtt" section and maps it to the sink's options.
func mqttOptions(c *MQTTConfig) (mqtt.Options, error) {
	if c == nil {
		return mqtt.Options{}, errors.New(`records route to "mqtt" but there is no "mqtt" section`)
	}
	var errs []error
	if c.Broker == "" {
		errs = append(errs, errors.New("mqtt.broker is required"))
	}
	if c.QoS < 0 || c.QoS > 2 {
		errs = append(errs, fmt.Errorf("mqtt.qos %d is not 0, 1 or 2", c.QoS))
	}
	if strings.ContainsAny(c.TopicBase, "+#\x00") {
		errs = append(errs, fmt.Errorf("mqtt.topic_base %q holds an MQTT wildcard (+, #) or U+0000", c.TopicBase))
	}
	for _, d := range []struct {
		key string
		v   int
	}{
		{"connect_timeout_ms", c.ConnectTimeoutMs}, {"publish_timeout_ms", c.PublishTimeoutMs},
		{"disconnect_timeout_ms", c.DisconnectTimeoutMs}, {"connect_retry_interval_ms", c.ConnectRetryIntervalMs},
		{"keep_alive_seconds", c.KeepAliveSeconds},
	} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("mqtt.%s %d is negative", d.key, d.v))
		}
	}
	if err := errors.Join(errs...); err != nil {
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
func newMQTTSink(cfg *Config, _ forwarder.Encoder, log *slog.Logger) (forwarder.Sink, error) {
	o, err := mqttOptions(cfg.MQTT)
	if err != nil {
		return nil, err
	}
	o.Logger = log
	return mqtt.New(o)
}

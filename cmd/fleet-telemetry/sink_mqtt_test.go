package main

import (
	"strings"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
)

func TestMQTTSectionDefaults(t *testing.T) {
	c, w := mustParse(t, `{`+base+`, "records": {"V": ["mqtt"]}, "mqtt": {"broker": "mqtt:1883", "topic_base": "telemetry"}}`)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(w) != 0 {
		t.Fatalf("warnings %v", w)
	}
	o, err := mqttOptions(c.MQTT)
	if err != nil {
		t.Fatal(err)
	}
	// 0 means the sink's default (the reference's).
	if o.Broker != "tcp://mqtt:1883" || o.QoS != 0 || o.Retained || o.ConnectTimeout != 0 || o.PublishTimeout != 0 || o.KeepAlive != 0 {
		t.Fatalf("options %+v", o)
	}
	c, _ = mustParse(t, `{`+base+`, "records": {"V": ["mqtt"]}, "mqtt": {"broker": "ssl://b:8883", "qos": 2, "retained": true,
		"connect_timeout_ms": 1500, "publish_timeout_ms": 700, "disconnect_timeout_ms": 5, "connect_retry_interval_ms": 2000,
		"keep_alive_seconds": 9, "client_id": "c", "username": "u", "password": "p"}}`)
	o, err = mqttOptions(c.MQTT)
	if err != nil {
		t.Fatal(err)
	}
	if o.Broker != "ssl://b:8883" || o.QoS != 2 || !o.Retained || o.ConnectTimeout != 1500*time.Millisecond ||
		o.PublishTimeout != 700*time.Millisecond || o.DisconnectTimeout != 5*time.Millisecond ||
		o.ConnectRetryInterval != 2*time.Second || o.KeepAlive != 9*time.Second ||
		o.ClientID != "c" || o.Username != "u" || o.Password != "p" {
		t.Fatalf("options %+v", o)
	}
}

func TestMQTTSectionRefusals(t *testing.T) {
	cases := map[string]string{
		`"records": {"V": ["mqtt"]}`:                                                           `no "mqtt" section`,
		`"records": {"V": ["mqtt"]}, "mqtt": {"topic_base": "t"}`:                              `mqtt.broker is required`,
		`"records": {"V": ["mqtt"]}, "mqtt": {"broker": "b", "qos": 3}`:                        `mqtt.qos 3`,
		`"records": {"V": ["mqtt"]}, "mqtt": {"broker": "b", "qos": -1}`:                       `mqtt.qos -1`,
		`"records": {"V": ["mqtt"]}, "mqtt": {"broker": "b", "topic_base": "a/#"}`:             `mqtt.topic_base`,
		`"records": {"V": ["mqtt"]}, "mqtt": {"broker": "b", "publish_timeout_ms": -1}`:        `mqtt.publish_timeout_ms -1 is negative`,
		`"records": {"V": ["mqtt"]}, "mqtt": {"broker": "b", "keep_alive_seconds": -30}`:       `mqtt.keep_alive_seconds`,
		`"records": {"V": ["mqtt"]}, "mqtt": {"broker": "b", "connect_retry_interval_ms": -2}`: `connect_retry_interval_ms`,
	}
	for js, want := range cases {
		c, _ := mustParse(t, "{"+base+", "+js+"}")
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s\n  got %v, want an error containing %q", js, err, want)
		}
	}
	if _, _, err := ParseConfig([]byte(`{"mqtt": {"qos": "one"}}`)); err == nil {
		t.Error(`"qos": "one" parsed`)
	}
	// newSink refuses the same way (the spool CLI builds sinks from a
	// config it does not Validate).
	if _, err := newMQTTSink(&Config{}, forwarder.Encoder{}, nil); err == nil || !strings.Contains(err.Error(), `"mqtt" section`) {
		t.Errorf("newMQTTSink without a section: %v", err)
	}
}

// A key the section does not have loads with a warning naming it.
func TestMQTTSectionUnknownKey(t *testing.T) {
	_, w := mustParse(t, `{`+base+`, "records": {"V": ["mqtt"]}, "mqtt": {"broker": "b", "qos_level": 1}}`)
	if len(w) != 1 || !strings.Contains(w[0], `"mqtt.qos_level"`) {
		t.Fatalf("warnings %v", w)
	}
}

// reliable_ack_sources accepts mqtt.
func TestMQTTReliableAckSource(t *testing.T) {
	c, _ := mustParse(t, `{`+base+`, "records": {"V": ["mqtt"]}, "mqtt": {"broker": "b", "qos": 1}, "reliable_ack_sources": {"V": "mqtt"}}`)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

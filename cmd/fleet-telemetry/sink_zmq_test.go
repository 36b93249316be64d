package main

import (
	"strings"
	"testing"
)

func TestZMQSection(t *testing.T) {
	// The reference integration config's section.
	c, w := mustParse(t, `{`+base+`, "records": {"V": ["zmq"], "connectivity": ["zmq"]}, "zmq": {"addr": "tcp://*:5284"}}`)
	if err := c.Validate(); err != nil || len(w) != 0 {
		t.Fatalf("validate %v warnings %v", err, w)
	}
	o, err := zmqOptions(c.ZMQ)
	if err != nil || o.Addr != "tcp://*:5284" || o.Verbose {
		t.Fatalf("options %+v %v", o, err)
	}
	c, _ = mustParse(t, `{`+base+`, "records": {"V": ["zmq"]}, "zmq": {"addr": "tcp://127.0.0.1:1", "verbose": true}, "reliable_ack_sources": {"V": "zmq"}}`)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for js, want := range map[string]string{
		`"records": {"V": ["zmq"]}`:                           `no "zmq" section`,
		`"records": {"V": ["zmq"]}, "zmq": {"verbose": true}`: `zmq.addr is required`,
		// CURVE keys are refused by name, never ignored.
		`"records": {"V": ["zmq"]}, "zmq": {"addr": "tcp://*:1", "server_key_json_path": "/k.json"}`:                                             `zmq.server_key_json_path: CURVE`,
		`"records": {"V": ["zmq"]}, "zmq": {"addr": "tcp://*:1", "server_key_json_path": "/k.json", "allowed_public_keys_json_path": "/p.json"}`: `zmq.server_key_json_path, zmq.allowed_public_keys_json_path: CURVE`,
	} {
		c, _ := mustParse(t, "{"+base+", "+js+"}")
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", js, err, want)
		}
	}
}

package main

import (
	"strings"
	"testing"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
)

// spool replay builds sinks from a config it loads without Validate: a
// config routing to pubsub with no "pubsub" section is an error, not a
// nil dereference.
func TestPubsubSinkWithoutSection(t *testing.T) {
	_, err := newPubsubSink(&Config{}, forwarder.Encoder{}, []string{"V"}, nil)
	if err == nil || !strings.Contains(err.Error(), `"pubsub" section`) {
		t.Fatalf("newPubsubSink without a pubsub section: %v", err)
	}
}

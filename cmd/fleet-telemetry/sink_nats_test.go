package main

import (
	"strings"
	"testing"
)

func TestNATSSection(t *testing.T) {
	c, w := mustParse(t, `{`+base+`, "records": {"V": ["nats"], "alerts": ["nats"]}, "nats": {"url": "nats://u:p@n:4222", "name": "ft"}, "reliable_ack_sources": {"V": "nats"}}`)
	if err := c.Validate(); err != nil || len(w) != 0 {
		t.Fatalf("validate %v warnings %v", err, w)
	}
	o, err := natsOptions(c.NATS)
	if err != nil || o.URL != "nats://u:p@n:4222" || o.Name != "ft" || o.JetStream {
		t.Fatalf("options %+v %v", o, err)
	}
	c, _ = mustParse(t, `{`+base+`, "records": {"V": ["nats"]}, "nats": {"url": "nats://n:4222", "jetstream": true}}`)
	if o, err := natsOptions(c.NATS); err != nil || !o.JetStream {
		t.Fatalf("jetstream: %+v %v", o, err)
	}
	for js, want := range map[string]string{
		`"records": {"V": ["nats"]}`:                        `no "nats" section`,
		`"records": {"V": ["nats"]}, "nats": {"name": "x"}`: `nats.url is required`,
	} {
		c, _ := mustParse(t, "{"+base+", "+js+"}")
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", js, err, want)
		}
	}
	if _, _, err := ParseConfig([]byte(`{"nats": {"jetstream": "yes"}}`)); err == nil {
		t.Error(`"jetstream": "yes" parsed`)
	}
	_, w = mustParse(t, `{`+base+`, "records": {"V": ["nats"]}, "nats": {"url": "u", "jet_stream": true}}`)
	if len(w) != 1 || !strings.Contains(w[0], `"nats.jet_stream"`) {
		t.Fatalf("warnings %v", w)
	}
}

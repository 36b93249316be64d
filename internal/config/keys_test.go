package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// A key no field takes is named at every depth, as at the top level: it
// loads, with a warning. The kafka section is librdkafka's free-form
// property map, checked by Validate instead; records and
// reliable_ack_sources name record types, which Validate refuses when
// unknown.
func TestUnknownKeysAtEveryDepth(t *testing.T) {
	js := `{` + base + `, "records": {"V": ["logger"]},
		"prot": 1,
		"spool": {"dir": "/tmp/s", "max_byte": 5},
		"tls": {"server_cert": "a", "server_key": "b", "kafka_servers": "x"},
		"monitoring": {"prometheus_metrics_port": 1, "statsd": {"hostname": "h"}},
		"rate_limit": {"enabled": false, "limit": 3},
		"kinesis": {"stream": {}, "streams": {"V": "v", "vehicle": "x"}},
		"pubsub": {"project_id": "p"},
		"mqtt": {"broker": "b", "qos_level": 1},
		"redis": {"addrs": ["a:1"], "tls": {"cafile": "c"}},
		"kafka": {"bootstrap.servers": "k:9092", "no.such.property": 1},
		"idle_timeout": "1s",
		"vin_allowlist": ["A"],
		"airbrake": {"project_id": 1},
		"logger": {"verbose": true}
	}`
	c, w := mustParse(t, js)
	want := []string{
		`config key "airbrake" is not supported by this version and is ignored`,
		`config key "kinesis.stream" is unknown and is ignored`,
		`config key "kinesis.streams.vehicle" is unknown and is ignored (record types: V, alerts, errors, connectivity)`,
		`config key "logger" is not supported by this version and is ignored`,
		`config key "monitoring.statsd.hostname" is unknown and is ignored`,
		`config key "mqtt.qos_level" is unknown and is ignored`,
		`config key "prot" is unknown and is ignored`,
		`config key "pubsub.project_id" is unknown and is ignored`,
		`config key "rate_limit.limit" is unknown and is ignored`,
		`config key "redis.tls.cafile" is unknown and is ignored`,
		`config key "spool.max_byte" is unknown and is ignored`,
		`config key "tls.kafka_servers" is unknown and is ignored`,
	}
	if strings.Join(w, "\n") != strings.Join(want, "\n") {
		t.Fatalf("warnings:\n%s\nwant:\n%s", strings.Join(w, "\n"), strings.Join(want, "\n"))
	}
	// Known keys next to the unknown ones still load.
	if c.Spool.Dir != "/tmp/s" || c.Kinesis.Streams["V"] != "v" || c.Monitoring.PrometheusMetricsPort != 1 {
		t.Fatalf("config %+v", c)
	}
	// The kafka property is Validate's, as an error.
	c, _ = mustParse(t, `{`+base+`, "records": {"V": ["kafka"]}, "kafka": {"bootstrap.servers": "k:9092", "no.such.property": 1}}`)
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), `"no.such.property"`) {
		t.Fatalf("validate: %v", err)
	}
}

// Values of the wrong shape are decoding's business: the key walk says
// nothing about them and does not stop.
func TestUnknownKeysIgnoreWrongShapes(t *testing.T) {
	for _, js := range []string{
		`{"spool": null}`, `{"monitoring": null, "x": 1}`, `{"kinesis": {"streams": null}, "x": 1}`,
		`{"records": {"V": null}, "x": 1}`, `{"vin_allowlist": {"a": 1}, "x": 1}`,
	} {
		_, w, err := Parse([]byte(js))
		if err != nil {
			continue
		}
		for _, s := range w {
			if !strings.Contains(s, `"x"`) {
				t.Errorf("%s: warning %q", js, s)
			}
		}
	}
}

// The reference's own configs load with the warnings the README documents:
// none for its example, airbrake alone for its integration config.
func TestReferenceConfigsWarnings(t *testing.T) {
	for path, want := range map[string][]string{
		"../../test/testdata/configs/reference-example.json":     nil,
		"../../test/testdata/configs/reference-integration.json": {`config key "airbrake" is not supported by this version and is ignored`},
	} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		_, w, err := Parse(b)
		if err != nil || !reflect.DeepEqual(w, want) {
			t.Errorf("%s: %v, warnings %q, want %q", path, err, w, want)
		}
	}
}

// Every field of every section has a json name, and the used keys come
// from them: a field added to a section is a key the walk knows.
func TestEveryFieldIsAKey(t *testing.T) {
	var walk func(t reflect.Type, path string)
	seen := map[reflect.Type]bool{}
	walk = func(typ reflect.Type, path string) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Map || typ.Kind() == reflect.Slice {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || seen[typ] || typ == reflect.TypeFor[Duration]() {
			return
		}
		seen[typ] = true
		fields := jsonFields(typ)
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" {
				t.Errorf("%s%s has no json name", path, f.Name)
				continue
			}
			if name == "-" {
				continue
			}
			if _, ok := fields[name]; !ok {
				t.Errorf("%s%s missing from jsonFields", path, name)
			}
			walk(f.Type, path+name+".")
		}
	}
	walk(configType, "")
	if len(seen) < 12 {
		t.Fatalf("walked %d section types", len(seen))
	}
}

// encoding/json reads a key whose case differs from the field's (as the
// reference does, through the same package): the warning says it is read,
// under which name, and the keys inside it are checked like any others.
func TestKeysInAnotherCaseAreReadAndNamed(t *testing.T) {
	js := `{"tls": {"server_cert": "a", "server_key": "b"}, "records": {"V": ["logger"]},
		"Port": 4555,
		"SPOOL": {"Dir": "/tmp/s", "max_byte": 5}
	}`
	c, w := mustParse(t, js)
	want := []string{
		`config key "Port" is read as "port" (keys match ignoring case)`,
		`config key "SPOOL" is read as "spool" (keys match ignoring case)`,
		`config key "SPOOL.Dir" is read as "SPOOL.dir" (keys match ignoring case)`,
		`config key "SPOOL.max_byte" is unknown and is ignored`,
	}
	if strings.Join(w, "\n") != strings.Join(want, "\n") {
		t.Fatalf("warnings:\n%s\nwant:\n%s", strings.Join(w, "\n"), strings.Join(want, "\n"))
	}
	if c.Port != 4555 || c.Spool.Dir != "/tmp/s" {
		t.Fatalf("port %d, spool dir %q: the keys were not read", c.Port, c.Spool.Dir)
	}
}

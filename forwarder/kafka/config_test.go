package kafka

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func ms(n int) *time.Duration {
	d := time.Duration(n) * time.Millisecond
	return &d
}

func intp(n int) *int { return &n }

// defaults is what an all-default config (bootstrap.servers only) holds.
func defaults(brokers ...string) Config {
	return Config{
		Brokers:            brokers,
		Acks:               AcksAll,
		Idempotent:         true,
		Partitioner:        PartitionerConsistentRandom,
		AutoCreateTopics:   true,
		SecurityProtocol:   "plaintext",
		VerifyCertificates: true,
		VerifyHostname:     true,
	}
}

func TestParseConfigTranslation(t *testing.T) {
	with := func(f func(*Config)) Config {
		c := defaults("kafka:9092")
		f(&c)
		return c
	}
	cases := []struct {
		name string
		in   string // JSON, as the config file holds it
		want Config
		err  []string // substrings of the error, in order
	}{
		{name: "minimal", in: `{"bootstrap.servers": "kafka:9092"}`, want: defaults("kafka:9092")},
		{name: "broker list", in: `{"bootstrap.servers": " a:1, b:2 ,,c:3"}`, want: defaults("a:1", "b:2", "c:3")},
		{name: "metadata.broker.list alias", in: `{"metadata.broker.list": "kafka:9092"}`, want: defaults("kafka:9092")},
		{
			// The reference's integration-test section, verbatim.
			name: "reference integration",
			in:   `{"bootstrap.servers": "kafka:9092", "queue.buffering.max.messages": 1000000, "queue.buffering.max.ms": 50, "compression.type": "gzip"}`,
			want: with(func(c *Config) { c.MaxBufferedRecords = 1000000; c.Linger = ms(50); c.Compression = "gzip" }),
		},
		{name: "client.id", in: `{"bootstrap.servers": "kafka:9092", "client.id": "ft-1"}`, want: with(func(c *Config) { c.ClientID = "ft-1" })},
		{name: "compression none", in: `{"bootstrap.servers": "kafka:9092", "compression.type": "none"}`, want: with(func(c *Config) { c.Compression = "none" })},
		{name: "compression snappy", in: `{"bootstrap.servers": "kafka:9092", "compression.type": "snappy"}`, want: with(func(c *Config) { c.Compression = "snappy" })},
		{name: "compression lz4 codec alias", in: `{"bootstrap.servers": "kafka:9092", "compression.codec": "LZ4"}`, want: with(func(c *Config) { c.Compression = "lz4" })},
		{name: "compression zstd", in: `{"bootstrap.servers": "kafka:9092", "compression.type": "zstd"}`, want: with(func(c *Config) { c.Compression = "zstd" })},
		{name: "linger.ms as string", in: `{"bootstrap.servers": "kafka:9092", "linger.ms": "5"}`, want: with(func(c *Config) { c.Linger = ms(5) })},
		{name: "linger 0", in: `{"bootstrap.servers": "kafka:9092", "linger.ms": 0}`, want: with(func(c *Config) { c.Linger = ms(0) })},
		{name: "max kbytes", in: `{"bootstrap.servers": "kafka:9092", "queue.buffering.max.kbytes": 1024}`, want: with(func(c *Config) { c.MaxBufferedBytes = 1 << 20 })},
		{name: "batch.size", in: `{"bootstrap.servers": "kafka:9092", "batch.size": 65536}`, want: with(func(c *Config) { c.BatchMaxBytes = 65536 })},
		{name: "message.max.bytes", in: `{"bootstrap.servers": "kafka:9092", "message.max.bytes": 2000000}`, want: with(func(c *Config) { c.BatchMaxBytes = 2000000 })},
		{name: "batch bounded by message.max.bytes", in: `{"bootstrap.servers": "kafka:9092", "batch.size": 3000000, "message.max.bytes": 2000000}`, want: with(func(c *Config) { c.BatchMaxBytes = 2000000 })},
		{name: "acks all", in: `{"bootstrap.servers": "kafka:9092", "acks": "all"}`, want: defaults("kafka:9092")},
		{name: "acks -1 number", in: `{"bootstrap.servers": "kafka:9092", "acks": -1}`, want: defaults("kafka:9092")},
		{
			name: "acks 1 turns idempotence off with a warning",
			in:   `{"bootstrap.servers": "kafka:9092", "acks": 1}`,
			want: with(func(c *Config) {
				c.Acks, c.Idempotent = AcksLeader, false
				c.Warnings = []string{`kafka: "acks" 1: the idempotent producer is turned off (it needs acks all)`}
			}),
		},
		{
			name: "acks 1 with idempotence off",
			in:   `{"bootstrap.servers": "kafka:9092", "request.required.acks": "1", "enable.idempotence": false}`,
			want: with(func(c *Config) { c.Acks, c.Idempotent = AcksLeader, false }),
		},
		{
			name: "acks 0",
			in:   `{"bootstrap.servers": "kafka:9092", "acks": "0", "enable.idempotence": "false"}`,
			want: with(func(c *Config) { c.Acks, c.Idempotent = AcksNone, false }),
		},
		{name: "idempotence explicitly on", in: `{"bootstrap.servers": "kafka:9092", "enable.idempotence": true}`, want: defaults("kafka:9092")},
		{name: "idempotence off", in: `{"bootstrap.servers": "kafka:9092", "enable.idempotence": false}`, want: with(func(c *Config) { c.Idempotent = false })},
		{name: "message.timeout.ms", in: `{"bootstrap.servers": "kafka:9092", "message.timeout.ms": 300000}`, want: with(func(c *Config) { c.DeliveryTimeout = 5 * time.Minute })},
		{name: "delivery.timeout.ms", in: `{"bootstrap.servers": "kafka:9092", "delivery.timeout.ms": "60000"}`, want: with(func(c *Config) { c.DeliveryTimeout = time.Minute })},
		{name: "request.timeout.ms", in: `{"bootstrap.servers": "kafka:9092", "request.timeout.ms": 30000}`, want: with(func(c *Config) { c.RequestTimeout = 30 * time.Second })},
		{name: "retries", in: `{"bootstrap.servers": "kafka:9092", "retries": 5}`, want: with(func(c *Config) { c.Retries = intp(5) })},
		{name: "message.send.max.retries", in: `{"bootstrap.servers": "kafka:9092", "message.send.max.retries": 0}`, want: with(func(c *Config) { c.Retries = intp(0) })},
		{name: "retry.backoff.ms", in: `{"bootstrap.servers": "kafka:9092", "retry.backoff.ms": 250}`, want: with(func(c *Config) { c.RetryBackoff = 250 * time.Millisecond })},
		{name: "partitioner murmur2_random", in: `{"bootstrap.servers": "kafka:9092", "partitioner": "murmur2_random"}`, want: with(func(c *Config) { c.Partitioner = PartitionerMurmur2Random })},
		{name: "no auto create", in: `{"bootstrap.servers": "kafka:9092", "allow.auto.create.topics": false}`, want: with(func(c *Config) { c.AutoCreateTopics = false })},
		{
			name: "sasl_ssl scram",
			in: `{"bootstrap.servers": "kafka:9093", "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
				"sasl.username": "u", "sasl.password": "p", "ssl.ca.location": "/ca.pem",
				"ssl.certificate.location": "/c.pem", "ssl.key.location": "/k.pem",
				"enable.ssl.certificate.verification": "true", "ssl.endpoint.identification.algorithm": "none"}`,
			want: func() Config {
				c := defaults("kafka:9093")
				c.SecurityProtocol, c.SASLMechanism, c.SASLUsername, c.SASLPassword = "sasl_ssl", "SCRAM-SHA-512", "u", "p"
				c.CAFile, c.CertFile, c.KeyFile, c.VerifyHostname = "/ca.pem", "/c.pem", "/k.pem", false
				return c
			}(),
		},
		{
			name: "sasl_plaintext plain",
			in:   `{"bootstrap.servers": "kafka:9092", "security.protocol": "sasl_plaintext", "sasl.mechanism": "PLAIN", "sasl.username": "u", "sasl.password": "p"}`,
			want: with(func(c *Config) {
				c.SecurityProtocol, c.SASLMechanism, c.SASLUsername, c.SASLPassword = "sasl_plaintext", "PLAIN", "u", "p"
			}),
		},
		{
			name: "ssl without verification",
			in:   `{"bootstrap.servers": "kafka:9092", "security.protocol": "ssl", "enable.ssl.certificate.verification": false}`,
			want: with(func(c *Config) { c.SecurityProtocol, c.VerifyCertificates = "ssl", false }),
		},

		// Errors.
		{name: "no brokers", in: `{}`, err: []string{`"bootstrap.servers" is required`}},
		{name: "empty brokers", in: `{"bootstrap.servers": " , "}`, err: []string{`"bootstrap.servers" is required`}},
		{
			name: "unsupported keys listed sorted, once",
			in:   `{"bootstrap.servers": "kafka:9092", "statistics.interval.ms": 1000, "foo.bar": 1, "go.delivery.reports": true}`,
			err:  []string{`kafka: unsupported properties "foo.bar", "go.delivery.reports", "statistics.interval.ms"`},
		},
		{name: "one unsupported key", in: `{"bootstrap.servers": "kafka:9092", "foo.bar": 1}`, err: []string{`kafka: unsupported property "foo.bar"`}},
		{
			name: "unsupported and bad values together",
			in:   `{"bootstrap.servers": "kafka:9092", "foo.bar": 1, "compression.type": "brotli", "linger.ms": "soon"}`,
			err:  []string{`unsupported property "foo.bar"`, `"compression.type": "brotli" is not one of`, `"linger.ms": value "soon" is not an integer`},
		},
		{name: "fractional number", in: `{"bootstrap.servers": "kafka:9092", "queue.buffering.max.messages": 1.5}`, err: []string{`"queue.buffering.max.messages": value 1.5 is not an integer`}},
		{name: "negative", in: `{"bootstrap.servers": "kafka:9092", "retries": -1}`, err: []string{`"retries": value -1 is out of range`}},
		{name: "request timeout too small", in: `{"bootstrap.servers": "kafka:9092", "request.timeout.ms": 10}`, err: []string{`"request.timeout.ms": value 10 is out of range`}},
		{name: "bad bool", in: `{"bootstrap.servers": "kafka:9092", "enable.idempotence": "maybe"}`, err: []string{`"enable.idempotence": value "maybe" is not a boolean`}},
		{name: "bool as number", in: `{"bootstrap.servers": "kafka:9092", "enable.idempotence": 1}`, err: []string{`"enable.idempotence": value 1 (float64) is not a boolean`}},
		{name: "bad acks", in: `{"bootstrap.servers": "kafka:9092", "acks": 2}`, err: []string{`"acks": "2" is not one of`}},
		{name: "acks 1 with idempotence on", in: `{"bootstrap.servers": "kafka:9092", "acks": 1, "enable.idempotence": true}`, err: []string{`"enable.idempotence" true requires "acks" all`}},
		{name: "object value", in: `{"bootstrap.servers": {"a": 1}}`, err: []string{`"bootstrap.servers": value map[a:1]`}},
		{name: "sasl without mechanism", in: `{"bootstrap.servers": "kafka:9092", "security.protocol": "sasl_ssl", "sasl.username": "u"}`, err: []string{`needs "sasl.mechanism"`}},
		{name: "gssapi", in: `{"bootstrap.servers": "kafka:9092", "security.protocol": "sasl_ssl", "sasl.mechanism": "GSSAPI"}`, err: []string{`"sasl.mechanism": "GSSAPI" is not one of`}},
		{name: "sasl without user", in: `{"bootstrap.servers": "kafka:9092", "security.protocol": "sasl_plaintext", "sasl.mechanism": "PLAIN"}`, err: []string{`"sasl.username" is required`}},
		{name: "mechanism without sasl", in: `{"bootstrap.servers": "kafka:9092", "sasl.mechanism": "PLAIN", "sasl.username": "u"}`, err: []string{`"sasl.mechanism" needs "security.protocol" sasl_plaintext or sasl_ssl`}},
		{name: "ssl files without ssl", in: `{"bootstrap.servers": "kafka:9092", "ssl.ca.location": "/ca.pem"}`, err: []string{`ssl.* locations need "security.protocol" ssl or sasl_ssl`}},
		{name: "cert without key", in: `{"bootstrap.servers": "kafka:9092", "security.protocol": "ssl", "ssl.certificate.location": "/c.pem"}`, err: []string{`"ssl.certificate.location" and "ssl.key.location" go together`}},
		{name: "bad protocol", in: `{"bootstrap.servers": "kafka:9092", "security.protocol": "tls"}`, err: []string{`"security.protocol": "tls" is not one of`}},
		{name: "bad partitioner", in: `{"bootstrap.servers": "kafka:9092", "partitioner": "fnv1a"}`, err: []string{`"partitioner": "fnv1a" is not one of`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal([]byte(tc.in), &m); err != nil {
				t.Fatalf("test input: %v", err)
			}
			got, err := ParseConfig(m)
			if len(tc.err) > 0 {
				if err == nil {
					t.Fatalf("ParseConfig accepted it: %+v", got)
				}
				msg, at := err.Error(), 0
				for _, want := range tc.err {
					i := strings.Index(msg[at:], want)
					if i < 0 {
						t.Fatalf("error %q lacks %q (in this order: %q)", msg, want, tc.err)
					}
					at += i + len(want)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestOptsReachTheClient checks the translation end to end: the options a
// Config builds are the ones the franz-go client reports.
func TestOptsReachTheClient(t *testing.T) {
	c, err := ParseConfig(map[string]any{
		"bootstrap.servers": "127.0.0.1:1,127.0.0.1:2", "client.id": "ft",
		"queue.buffering.max.ms": 7.0, "queue.buffering.max.messages": "1234",
		"queue.buffering.max.kbytes": 64.0, "batch.size": 500000.0,
		"message.timeout.ms": 120000.0, "request.timeout.ms": 20000.0, "retries": 9.0,
		"allow.auto.create.topics": true,
	})
	if err != nil {
		t.Fatal(err)
	}
	opts, err := c.Opts()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatalf("NewClient refused the options: %v", err)
	}
	defer cl.Close()
	checks := []struct {
		opt  any
		want any
	}{
		{kgo.SeedBrokers, []string{"127.0.0.1:1", "127.0.0.1:2"}},
		{kgo.ClientID, "ft"},
		{kgo.ProducerLinger, 7 * time.Millisecond},
		{kgo.MaxBufferedRecords, int64(1234)},
		{kgo.MaxBufferedBytes, int64(64 << 10)},
		{kgo.ProducerBatchMaxBytes, int32(500000)},
		{kgo.RecordDeliveryTimeout, 2 * time.Minute},
		{kgo.ProduceRequestTimeout, 20 * time.Second},
		{kgo.RecordRetries, int64(9)},
		{kgo.AllowAutoTopicCreation, true},
		{kgo.DisableIdempotentWrite, false},
	}
	for _, ch := range checks {
		got := cl.OptValue(ch.opt)
		if !reflect.DeepEqual(got, ch.want) && !sameNumber(got, ch.want) {
			t.Errorf("%v: client has %#v, want %#v", runtimeName(ch.opt), got, ch.want)
		}
	}
}

// sameNumber compares integers of different widths.
func sameNumber(a, b any) bool {
	toI := func(v any) (int64, bool) {
		switch x := v.(type) {
		case int:
			return int64(x), true
		case int32:
			return int64(x), true
		case int64:
			return x, true
		}
		return 0, false
	}
	x, ok1 := toI(a)
	y, ok2 := toI(b)
	return ok1 && ok2 && x == y
}

func runtimeName(f any) string { return strings.TrimPrefix(reflect.TypeOf(f).String(), "func") }

func TestOptsLeaderAcks(t *testing.T) {
	c, err := ParseConfig(map[string]any{"bootstrap.servers": "127.0.0.1:1", "acks": 1.0})
	if err != nil {
		t.Fatal(err)
	}
	opts, err := c.Opts()
	if err != nil {
		t.Fatal(err)
	}
	// Leader-only acks with an idempotent producer is a config error in
	// franz-go: NewClient succeeding shows idempotence was turned off.
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	defer cl.Close()
	if got := cl.OptValue(kgo.DisableIdempotentWrite); got != true {
		t.Fatalf("DisableIdempotentWrite = %v, want true", got)
	}
}

func TestOptsMissingTLSFile(t *testing.T) {
	c, err := ParseConfig(map[string]any{"bootstrap.servers": "127.0.0.1:1", "security.protocol": "ssl", "ssl.ca.location": "/nonexistent/ca.pem"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Opts(); err == nil || !strings.Contains(err.Error(), "ssl.ca.location") {
		t.Fatalf("Opts: %v, want an error naming ssl.ca.location", err)
	}
}

// TestCRC32Partition pins librdkafka's consistent partitioner: CRC-32 (IEEE)
// of the key modulo the partition count.
func TestCRC32Partition(t *testing.T) {
	// crc32("5YJ3E1EA1KF000001") computed independently with Python's
	// zlib.crc32.
	for _, tc := range []struct {
		key  string
		n    int
		want int
	}{
		{"5YJ3E1EA1KF000001", 1, 0},  // 125716562
		{"5YJ3E1EA1KF000001", 10, 2}, // 125716562
		{"5YJ3E1EA1KF000002", 10, 4}, // 2658605544: above MaxInt32, taken unsigned
		{"5YJ3E1EA1KF000002", 12, 0},
		{"5YJ3E1EA1KF000003", 3, 2}, // 3916441982
	} {
		if got := crc32Partition([]byte(tc.key), tc.n); got != tc.want {
			t.Errorf("crc32Partition(%q, %d) = %d, want %d", tc.key, tc.n, got, tc.want)
		}
	}
}

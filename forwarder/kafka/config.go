package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Acks values (librdkafka's "acks" / "request.required.acks").
const (
	AcksAll    = -1 // every in-sync replica (the default)
	AcksNone   = 0  // fire and forget
	AcksLeader = 1  // the partition leader only
)

// Partitioner names, as librdkafka spells them.
const (
	// PartitionerConsistentRandom is librdkafka's default, and so the
	// reference server's: CRC32 of the key modulo the partition count
	// (random partition for a record without a key).
	PartitionerConsistentRandom = "consistent_random"
	// PartitionerConsistent is CRC32 of the key for every record.
	PartitionerConsistent = "consistent"
	// PartitionerMurmur2Random is the Java client's default: murmur2 of the
	// key, like Kafka's own producer.
	PartitionerMurmur2Random = "murmur2_random"
	// PartitionerMurmur2 is murmur2 of the key for every record.
	PartitionerMurmur2 = "murmur2"
	// PartitionerRandom ignores the key.
	PartitionerRandom = "random"
)

// Config is the "kafka" section of the reference's config file, translated
// from librdkafka property names to what the franz-go client needs. Build
// it with ParseConfig; Opts turns it into client options.
type Config struct {
	// Brokers are the seed brokers (bootstrap.servers).
	Brokers []string
	// ClientID is client.id ("" keeps franz-go's default).
	ClientID string
	// Compression is one of none, gzip, snappy, lz4, zstd ("" = none).
	Compression string
	// Linger is linger.ms / queue.buffering.max.ms (nil: franz-go default).
	Linger *time.Duration
	// MaxBufferedRecords is queue.buffering.max.messages (0: default).
	MaxBufferedRecords int
	// MaxBufferedBytes is queue.buffering.max.kbytes in bytes (0: unlimited).
	MaxBufferedBytes int
	// BatchMaxBytes bounds one record batch: the smaller of batch.size and
	// message.max.bytes (0: franz-go's default, 1,000,012).
	BatchMaxBytes int32
	// Acks is AcksAll, AcksLeader or AcksNone.
	Acks int
	// Idempotent is enable.idempotence (default true; turned off when acks
	// is 1 or 0 and enable.idempotence was not given).
	Idempotent bool
	// DeliveryTimeout is message.timeout.ms / delivery.timeout.ms (0:
	// unlimited).
	DeliveryTimeout time.Duration
	// RequestTimeout is request.timeout.ms: how long a broker may take to
	// answer a produce request (0: franz-go's default, 10s).
	RequestTimeout time.Duration
	// Retries is retries / message.send.max.retries (nil: unlimited).
	Retries *int
	// RetryBackoff is retry.backoff.ms (0: franz-go's jittery default).
	RetryBackoff time.Duration
	// Partitioner is one of the Partitioner constants.
	Partitioner string
	// AutoCreateTopics is allow.auto.create.topics (default true, as for a
	// librdkafka producer).
	AutoCreateTopics bool
	// SecurityProtocol is plaintext, ssl, sasl_plaintext or sasl_ssl.
	SecurityProtocol string
	// SASLMechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a sasl_*
	// security protocol).
	SASLMechanism string
	// SASLUsername and SASLPassword are sasl.username and sasl.password.
	SASLUsername, SASLPassword string
	// CAFile, CertFile and KeyFile are ssl.ca.location,
	// ssl.certificate.location and ssl.key.location.
	CAFile, CertFile, KeyFile string
	// VerifyCertificates is enable.ssl.certificate.verification (default
	// true).
	VerifyCertificates bool
	// VerifyHostname is ssl.endpoint.identification.algorithm "https"
	// (default) rather than "none".
	VerifyHostname bool
	// Warnings are notes on properties that were accepted but adjusted.
	Warnings []string
}

// ParseConfig translates the reference's librdkafka-style property map.
// Values may be strings, JSON numbers or booleans, as librdkafka accepts
// all of them. A property it cannot translate is an error: every such key
// is named, sorted, in one error.
func ParseConfig(m map[string]any) (Config, error) {
	c := Config{
		Acks:               AcksAll,
		Idempotent:         true,
		Partitioner:        PartitionerConsistentRandom,
		AutoCreateTopics:   true,
		SecurityProtocol:   "plaintext",
		VerifyCertificates: true,
		VerifyHostname:     true,
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	var (
		unsupported []string
		errs        []error
		idemGiven   bool
		batchSize   int32
		maxMsgBytes int32
		mechKey     string
	)
	for _, k := range keys {
		v := m[k]
		var err error
		switch k {
		case "bootstrap.servers", "metadata.broker.list":
			var s string
			if s, err = asString(v); err == nil {
				for _, b := range strings.Split(s, ",") {
					if b = strings.TrimSpace(b); b != "" {
						c.Brokers = append(c.Brokers, b)
					}
				}
			}
		case "client.id":
			c.ClientID, err = asString(v)
		case "compression.type", "compression.codec":
			var s string
			if s, err = asString(v); err == nil {
				s = strings.ToLower(s)
				switch s {
				case "none", "gzip", "snappy", "lz4", "zstd":
					c.Compression = s
				default:
					err = fmt.Errorf("%q is not one of none, gzip, snappy, lz4, zstd", s)
				}
			}
		case "linger.ms", "queue.buffering.max.ms":
			var d time.Duration
			if d, err = asMillis(v, 0, 900_000); err == nil {
				c.Linger = &d
			}
		case "queue.buffering.max.messages":
			c.MaxBufferedRecords, err = asInt(v, 1, math.MaxInt32)
		case "queue.buffering.max.kbytes":
			var kb int
			if kb, err = asInt(v, 1, math.MaxInt32); err == nil {
				c.MaxBufferedBytes = kb * 1024
			}
		case "batch.size":
			var n int
			if n, err = asInt(v, 1, math.MaxInt32); err == nil {
				batchSize = int32(n)
			}
		case "message.max.bytes":
			var n int
			if n, err = asInt(v, 1000, math.MaxInt32); err == nil {
				maxMsgBytes = int32(n)
			}
		case "acks", "request.required.acks":
			var s string
			if s, err = asString(v); err == nil {
				switch strings.ToLower(s) {
				case "all", "-1":
					c.Acks = AcksAll
				case "1":
					c.Acks = AcksLeader
				case "0":
					c.Acks = AcksNone
				default:
					err = fmt.Errorf("%q is not one of all, -1, 1, 0", s)
				}
			}
		case "enable.idempotence":
			c.Idempotent, err = asBool(v)
			idemGiven = true
		case "message.timeout.ms", "delivery.timeout.ms":
			c.DeliveryTimeout, err = asMillis(v, 0, math.MaxInt32)
		case "request.timeout.ms":
			c.RequestTimeout, err = asMillis(v, 100, 900_000)
		case "retries", "message.send.max.retries":
			var n int
			if n, err = asInt(v, 0, math.MaxInt32); err == nil {
				c.Retries = &n
			}
		case "retry.backoff.ms":
			c.RetryBackoff, err = asMillis(v, 1, 300_000)
		case "partitioner":
			var s string
			if s, err = asString(v); err == nil {
				switch s {
				case PartitionerConsistentRandom, PartitionerConsistent, PartitionerMurmur2Random, PartitionerMurmur2, PartitionerRandom:
					c.Partitioner = s
				default:
					err = fmt.Errorf("%q is not one of consistent_random, consistent, murmur2_random, murmur2, random", s)
				}
			}
		case "allow.auto.create.topics":
			c.AutoCreateTopics, err = asBool(v)
		case "security.protocol":
			var s string
			if s, err = asString(v); err == nil {
				s = strings.ToLower(s)
				switch s {
				case "plaintext", "ssl", "sasl_plaintext", "sasl_ssl":
					c.SecurityProtocol = s
				default:
					err = fmt.Errorf("%q is not one of plaintext, ssl, sasl_plaintext, sasl_ssl", s)
				}
			}
		case "sasl.mechanism", "sasl.mechanisms":
			var s string
			if s, err = asString(v); err == nil {
				s = strings.ToUpper(strings.TrimSpace(s))
				switch s {
				case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
					c.SASLMechanism = s
					mechKey = k
				default:
					err = fmt.Errorf("%q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", s)
				}
			}
		case "sasl.username":
			c.SASLUsername, err = asString(v)
		case "sasl.password":
			c.SASLPassword, err = asString(v)
		case "ssl.ca.location":
			c.CAFile, err = asString(v)
		case "ssl.certificate.location":
			c.CertFile, err = asString(v)
		case "ssl.key.location":
			c.KeyFile, err = asString(v)
		case "enable.ssl.certificate.verification":
			c.VerifyCertificates, err = asBool(v)
		case "ssl.endpoint.identification.algorithm":
			var s string
			if s, err = asString(v); err == nil {
				switch strings.ToLower(s) {
				case "https":
					c.VerifyHostname = true
				case "none":
					c.VerifyHostname = false
				default:
					err = fmt.Errorf("%q is not one of https, none", s)
				}
			}
		default:
			unsupported = append(unsupported, k)
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("kafka: property %q: %w", k, err))
		}
	}
	if len(unsupported) > 0 {
		quoted := make([]string, len(unsupported))
		for i, k := range unsupported {
			quoted[i] = strconv.Quote(k)
		}
		noun := "property"
		if len(unsupported) > 1 {
			noun = "properties"
		}
		// First, so that the message leads with what the operator must fix.
		errs = append([]error{fmt.Errorf("kafka: unsupported %s %s", noun, strings.Join(quoted, ", "))}, errs...)
	}

	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New(`kafka: property "bootstrap.servers" is required`))
	}
	switch {
	case batchSize > 0 && maxMsgBytes > 0:
		c.BatchMaxBytes = min(batchSize, maxMsgBytes)
	case batchSize > 0:
		c.BatchMaxBytes = batchSize
	default:
		c.BatchMaxBytes = maxMsgBytes
	}
	if c.Acks != AcksAll && c.Idempotent {
		if idemGiven {
			errs = append(errs, fmt.Errorf(`kafka: property "enable.idempotence" true requires "acks" all (-1), not %d`, c.Acks))
		} else {
			// librdkafka's default is no idempotence, so a reference config
			// with acks 1 or 0 never asked for it: keep it loading.
			c.Idempotent = false
			c.Warnings = append(c.Warnings, fmt.Sprintf(`kafka: "acks" %d: the idempotent producer is turned off (it needs acks all)`, c.Acks))
		}
	}
	sasl := c.SecurityProtocol == "sasl_plaintext" || c.SecurityProtocol == "sasl_ssl"
	switch {
	case sasl && c.SASLMechanism == "":
		// librdkafka's default mechanism is GSSAPI, which we do not speak.
		errs = append(errs, fmt.Errorf(`kafka: property "security.protocol" %q needs "sasl.mechanism" (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)`, c.SecurityProtocol))
	case sasl && c.SASLUsername == "":
		errs = append(errs, fmt.Errorf(`kafka: property "sasl.username" is required with "security.protocol" %q`, c.SecurityProtocol))
	case !sasl && c.SASLMechanism != "":
		errs = append(errs, fmt.Errorf(`kafka: property %q needs "security.protocol" sasl_plaintext or sasl_ssl, not %q`, mechKey, c.SecurityProtocol))
	}
	tlsOn := c.SecurityProtocol == "ssl" || c.SecurityProtocol == "sasl_ssl"
	if !tlsOn && (c.CAFile != "" || c.CertFile != "" || c.KeyFile != "") {
		errs = append(errs, fmt.Errorf(`kafka: ssl.* locations need "security.protocol" ssl or sasl_ssl, not %q`, c.SecurityProtocol))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New(`kafka: properties "ssl.certificate.location" and "ssl.key.location" go together`))
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Opts builds the franz-go client options. It reads the TLS files, so an
// error names a file that cannot be used.
func (c Config) Opts() ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordPartitioner(c.partitioner()),
	}
	if c.ClientID != "" {
		opts = append(opts, kgo.ClientID(c.ClientID))
	}
	switch c.Compression {
	case "gzip":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.GzipCompression()))
	case "snappy":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.SnappyCompression()))
	case "lz4":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	case "zstd":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.ZstdCompression()))
	default:
		opts = append(opts, kgo.ProducerBatchCompression(kgo.NoCompression()))
	}
	if c.Linger != nil {
		opts = append(opts, kgo.ProducerLinger(*c.Linger))
	}
	if c.MaxBufferedRecords > 0 {
		opts = append(opts, kgo.MaxBufferedRecords(c.MaxBufferedRecords))
	}
	if c.MaxBufferedBytes > 0 {
		opts = append(opts, kgo.MaxBufferedBytes(c.MaxBufferedBytes))
	}
	if c.BatchMaxBytes > 0 {
		opts = append(opts, kgo.ProducerBatchMaxBytes(c.BatchMaxBytes))
	}
	switch c.Acks {
	case AcksLeader:
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()))
	case AcksNone:
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()))
	}
	if !c.Idempotent {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	if c.DeliveryTimeout > 0 {
		opts = append(opts, kgo.RecordDeliveryTimeout(c.DeliveryTimeout))
	}
	if c.RequestTimeout > 0 {
		opts = append(opts, kgo.ProduceRequestTimeout(c.RequestTimeout))
	}
	if c.Retries != nil {
		opts = append(opts, kgo.RecordRetries(*c.Retries))
	}
	if c.RetryBackoff > 0 {
		b := c.RetryBackoff
		opts = append(opts, kgo.RetryBackoffFn(func(int) time.Duration { return b }))
	}
	if c.AutoCreateTopics {
		opts = append(opts, kgo.AllowAutoTopicCreation())
	}
	switch c.SASLMechanism {
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: c.SASLUsername, Pass: c.SASLPassword}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASLUsername, Pass: c.SASLPassword}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASLUsername, Pass: c.SASLPassword}.AsSha512Mechanism()))
	}
	if c.SecurityProtocol == "ssl" || c.SecurityProtocol == "sasl_ssl" {
		tc, err := c.tlsConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	return opts, nil
}

// tlsConfig builds the client TLS configuration from the ssl.* properties.
func (c Config) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kafka: ssl.ca.location: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("kafka: ssl.ca.location: %s holds no PEM certificate", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kafka: ssl.certificate.location / ssl.key.location: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	switch {
	case !c.VerifyCertificates:
		tc.InsecureSkipVerify = true
	case !c.VerifyHostname:
		// Verify the chain but not the name: crypto/tls has no switch for
		// that, so verification moves into VerifyConnection.
		tc.InsecureSkipVerify = true
		roots := tc.RootCAs
		tc.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("kafka: broker sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, ic := range cs.PeerCertificates[1:] {
				inter.AddCert(ic)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
			if err != nil {
				return fmt.Errorf("kafka: verify broker certificate: %w", err)
			}
			return nil
		}
	}
	return tc, nil
}

// partitioner picks partitions the way librdkafka's partitioner of the same
// name does, so that a VIN lands on the same partition as with the
// reference server.
func (c Config) partitioner() kgo.Partitioner {
	switch c.Partitioner {
	case PartitionerMurmur2, PartitionerMurmur2Random:
		return kgo.StickyKeyPartitioner(nil) // murmur2, Java-compatible
	case PartitionerRandom:
		return kgo.BasicConsistentPartitioner(func(string) func(*kgo.Record, int) int {
			return func(_ *kgo.Record, n int) int { return rand.IntN(n) }
		})
	default:
		// Records without a key (none here: the key is the VIN) get a
		// sticky random partition.
		return kgo.StickyKeyPartitioner(crc32Partition)
	}
}

// crc32Partition is librdkafka's consistent partitioner: CRC-32 (IEEE) of
// the key modulo the partition count.
func crc32Partition(key []byte, n int) int {
	return int(crc32.ChecksumIEEE(key) % uint32(n))
}

// asString accepts a string, a number or a bool (librdkafka takes every
// value as a string).
func asString(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case json.Number:
		return x.String(), nil
	case int:
		return strconv.Itoa(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	}
	return "", fmt.Errorf("value %v (%T) is not a string, number or bool", v, v)
}

// asInt accepts an integral number or a string holding one in [lo, hi].
func asInt(v any, lo, hi int64) (int, error) {
	var n int64
	switch x := v.(type) {
	case float64:
		if x != math.Trunc(x) || math.IsInf(x, 0) || x < math.MinInt64 || x > math.MaxInt64 {
			return 0, fmt.Errorf("value %v is not an integer", x)
		}
		n = int64(x)
	case int:
		n = int64(x)
	case int64:
		n = x
	case json.Number, string:
		s, _ := asString(x)
		var err error
		if n, err = strconv.ParseInt(strings.TrimSpace(s), 10, 64); err != nil {
			return 0, fmt.Errorf("value %q is not an integer", s)
		}
	default:
		return 0, fmt.Errorf("value %v (%T) is not an integer", v, v)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("value %d is out of range [%d, %d]", n, lo, hi)
	}
	return int(n), nil
}

// asMillis reads a millisecond count in [lo, hi].
func asMillis(v any, lo, hi int64) (time.Duration, error) {
	n, err := asInt(v, lo, hi)
	return time.Duration(n) * time.Millisecond, err
}

// asBool accepts a bool or librdkafka's spellings of one.
func asBool(v any) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "true", "t", "1":
			return true, nil
		case "false", "f", "0":
			return false, nil
		}
		return false, fmt.Errorf("value %q is not a boolean", x)
	}
	return false, fmt.Errorf("value %v (%T) is not a boolean", v, v)
}

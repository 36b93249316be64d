package config

import "strings"

// Environment variables that override or add to the file.
const (
	// EnvRedisPassword replaces redis.password when set and not empty.
	EnvRedisPassword = "REDIS_PASSWORD"
	// EnvKinesisStreamPrefix + a record type uppercased
	// (KINESIS_STREAM_V, KINESIS_STREAM_CONNECTIVITY, ...) replaces that
	// type's kinesis.streams entry when set and not empty.
	EnvKinesisStreamPrefix = "KINESIS_STREAM_"
	// EnvSuppressHandshakeErrors=true sets QuietHandshakeErrors (the
	// reference's variable).
	EnvSuppressHandshakeErrors = "SUPPRESS_TLS_HANDSHAKE_ERROR_LOGGING"
	// EnvCryptoTLSRecords=true sets CryptoTLSRecords.
	EnvCryptoTLSRecords = "FLEET_TELEMETRY_CRYPTO_TLS_RECORDS"
)

// ApplyEnv applies the environment's overrides (getenv is os.Getenv, or a
// stand-in in tests): the daemon and the spool CLI call it after loading
// the file, so the sinks get resolved values.
func (c *Config) ApplyEnv(getenv func(string) string) {
	if pw := getenv(EnvRedisPassword); pw != "" && c.Redis != nil {
		c.Redis.Password = pw
	}
	for _, t := range RecordTypes() {
		v := getenv(EnvKinesisStreamPrefix + strings.ToUpper(t))
		if v == "" {
			continue
		}
		if c.Kinesis == nil {
			c.Kinesis = &Kinesis{}
		}
		if c.Kinesis.Streams == nil {
			c.Kinesis.Streams = map[string]string{}
		}
		c.Kinesis.Streams[t] = v
	}
	c.QuietHandshakeErrors = getenv(EnvSuppressHandshakeErrors) == "true"
	c.CryptoTLSRecords = getenv(EnvCryptoTLSRecords) == "true"
}

package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/redis"
)

// RedisConfig is the reference's "redis" section, plus our "stream".
// Durations are JSON integers of nanoseconds, as in the reference (Go's
// time.Duration).
type RedisConfig struct {
	Addrs    []string `json:"addrs"`
	Username string   `json:"username"`
	// Password is overridden by the REDIS_PASSWORD environment variable
	// when that is set and not empty.
	Password string `json:"password"`
	DB       int    `json:"db"`
	// TLS, when present (an empty object too), turns TLS on.
	TLS                   *RedisTLSConfig `json:"tls"`
	OverrideTLSServerName string          `json:"override_tls_server_name"`
	ClusterMode           bool            `json:"cluster_mode"`
	// PublishTimeout is in nanoseconds (0: 5 s).
	PublishTimeout      int64            `json:"publish_timeout"`
	PublishVINTopics    bool             `json:"publish_vin_topics"`
	SubscriberSetPrefix string           `json:"subscriber_set_prefix"`
	Pool                *RedisPoolConfig `json:"pool"`
	// Stream, when present, also appends every record to the stream
	// <namespace>_<type> (ours; off by default).
	Stream *RedisStreamConfig `json:"stream"`
}

// RedisTLSConfig is "redis.tls": a CA bundle to trust instead of the
// system's, and a client certificate.
type RedisTLSConfig struct {
	CAFile     string `json:"ca_file"`
	ServerCert string `json:"server_cert"`
	ServerKey  string `json:"server_key"`
}

// RedisPoolConfig is "redis.pool" (durations in nanoseconds; 0: go-redis's
// defaults; read/write_timeout -1 means none, as in go-redis).
type RedisPoolConfig struct {
	PoolSize        int   `json:"pool_size"`
	MinIdleConns    int   `json:"min_idle_conns"`
	MaxIdleConns    int   `json:"max_idle_conns"`
	MaxActiveConns  int   `json:"max_active_conns"`
	ReadTimeout     int64 `json:"read_timeout"`
	WriteTimeout    int64 `json:"write_timeout"`
	PoolTimeout     int64 `json:"pool_timeout"`
	ConnMaxIdleTime int64 `json:"conn_max_idle_time"`
	ConnMaxLifetime int64 `json:"conn_max_lifetime"`
}

// RedisStreamConfig is "redis.stream".
type RedisStreamConfig struct {
	// MaxLen trims each stream to about this many entries (0: 1,000,000).
	MaxLen int64 `json:"max_len"`
}

// redisOptions checks the "redis" section and maps it to the sink's
// options, reading the TLS files. getenv reads REDIS_PASSWORD.
func redisOptions(c *RedisConfig, getenv func(string) string) (redis.Options, error) {
	if c == nil {
		return redis.Options{}, errors.New(`records route to "redis" but there is no "redis" section`)
	}
	var errs []error
	if len(c.Addrs) == 0 {
		errs = append(errs, errors.New("redis.addrs is empty"))
	}
	for i, a := range c.Addrs {
		if a == "" {
			errs = append(errs, fmt.Errorf("redis.addrs[%d] is empty", i))
		}
	}
	if !c.PublishVINTopics && c.SubscriberSetPrefix == "" && c.Stream == nil {
		errs = append(errs, errors.New("redis: set publish_vin_topics or subscriber_set_prefix (or stream), otherwise no record is published"))
	}
	if c.DB < 0 {
		errs = append(errs, fmt.Errorf("redis.db %d is negative", c.DB))
	}
	if c.PublishTimeout < 0 {
		errs = append(errs, fmt.Errorf("redis.publish_timeout %d is negative (nanoseconds)", c.PublishTimeout))
	}
	if c.Stream != nil && c.Stream.MaxLen < 0 {
		errs = append(errs, fmt.Errorf("redis.stream.max_len %d is negative", c.Stream.MaxLen))
	}
	var pool redis.Pool
	if p := c.Pool; p != nil {
		for _, n := range []struct {
			key string
			v   int
		}{{"pool_size", p.PoolSize}, {"min_idle_conns", p.MinIdleConns}, {"max_idle_conns", p.MaxIdleConns}, {"max_active_conns", p.MaxActiveConns}} {
			if n.v < 0 {
				errs = append(errs, fmt.Errorf("redis.pool.%s %d is negative", n.key, n.v))
			}
		}
		for _, d := range []struct {
			key string
			v   int64
			min int64
		}{
			{"read_timeout", p.ReadTimeout, -2}, {"write_timeout", p.WriteTimeout, -2}, {"pool_timeout", p.PoolTimeout, 0},
			{"conn_max_idle_time", p.ConnMaxIdleTime, -1}, {"conn_max_lifetime", p.ConnMaxLifetime, 0},
		} {
			if d.v < d.min {
				errs = append(errs, fmt.Errorf("redis.pool.%s %d is out of range (nanoseconds, at least %d)", d.key, d.v, d.min))
			}
		}
		pool = redis.Pool{
			PoolSize: p.PoolSize, MinIdleConns: p.MinIdleConns, MaxIdleConns: p.MaxIdleConns, MaxActiveConns: p.MaxActiveConns,
			ReadTimeout: time.Duration(p.ReadTimeout), WriteTimeout: time.Duration(p.WriteTimeout), PoolTimeout: time.Duration(p.PoolTimeout),
			ConnMaxIdleTime: time.Duration(p.ConnMaxIdleTime), ConnMaxLifetime: time.Duration(p.ConnMaxLifetime),
		}
	}
	var tlsCfg *tls.Config
	if c.TLS != nil {
		var err error
		if tlsCfg, err = redisTLS(c.TLS, c.OverrideTLSServerName); err != nil {
			errs = append(errs, err)
		}
	} else if c.OverrideTLSServerName != "" {
		errs = append(errs, errors.New(`redis.override_tls_server_name is set but there is no "redis.tls" (TLS is off)`))
	}
	if err := errors.Join(errs...); err != nil {
		return redis.Options{}, err
	}
	o := redis.Options{
		Addrs: c.Addrs, ClusterMode: c.ClusterMode, Username: c.Username, Password: c.Password, DB: c.DB,
		TLS: tlsCfg, PublishTimeout: time.Duration(c.PublishTimeout), PublishVINTopics: c.PublishVINTopics,
		SubscriberSetPrefix: c.SubscriberSetPrefix, Pool: pool,
	}
	if pw := getenv("REDIS_PASSWORD"); pw != "" {
		o.Password = pw
	}
	if c.Stream != nil {
		o.Stream = &redis.Stream{MaxLen: c.Stream.MaxLen}
	}
	return o, nil
}

// redisTLS builds the client TLS configuration of "redis.tls".
func redisTLS(c *RedisTLSConfig, serverName string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if c.CAFile != "" {
		pem, err := readSinkFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("redis.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redis.tls.ca_file %s holds no PEM certificate", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case c.ServerCert != "" && c.ServerKey != "":
		certPEM, err := readSinkFile(c.ServerCert)
		if err != nil {
			return nil, fmt.Errorf("redis.tls.server_cert: %w", err)
		}
		keyPEM, err := readSinkFile(c.ServerKey)
		if err != nil {
			return nil, fmt.Errorf("redis.tls.server_key: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("redis.tls.server_cert/server_key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case c.ServerCert != "" || c.ServerKey != "":
		return nil, errors.New("redis.tls: server_cert and server_key go together")
	}
	return cfg, nil
}

// newRedisSink builds the "redis" dispatcher; it fails when Redis does not
// answer a PING within 10 s, as the reference does.
func newRedisSink(cfg *Config, enc forwarder.Encoder, log *slog.Logger) (forwarder.Sink, error) {
	o, err := redisOptions(cfg.Redis, os.Getenv)
	if err != nil {
		return nil, err
	}
	o.Encoder, o.Logger = enc, log
	return redis.New(o)
}

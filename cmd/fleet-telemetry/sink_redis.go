package main

import (
	"log/slog"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/redis"
	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
)

// redisOptions maps the "redis" section to the sink's options, reading the
// TLS files; it refuses a section Check refuses.
func redisOptions(c *config.Redis) (redis.Options, error) {
	if err := c.Check(); err != nil {
		return redis.Options{}, err
	}
	tlsCfg, err := c.ClientTLS()
	if err != nil {
		return redis.Options{}, err
	}
	o := redis.Options{
		Addrs: c.Addrs, ClusterMode: c.ClusterMode, Username: c.Username, Password: c.Password, DB: c.DB,
		TLS: tlsCfg, PublishTimeout: time.Duration(c.PublishTimeout), PublishVINTopics: c.PublishVINTopics,
		SubscriberSetPrefix: c.SubscriberSetPrefix,
	}
	if p := c.Pool; p != nil {
		o.Pool = redis.Pool{
			PoolSize: p.PoolSize, MinIdleConns: p.MinIdleConns, MaxIdleConns: p.MaxIdleConns, MaxActiveConns: p.MaxActiveConns,
			ReadTimeout: time.Duration(p.ReadTimeout), WriteTimeout: time.Duration(p.WriteTimeout), PoolTimeout: time.Duration(p.PoolTimeout),
			ConnMaxIdleTime: time.Duration(p.ConnMaxIdleTime), ConnMaxLifetime: time.Duration(p.ConnMaxLifetime),
		}
	}
	if c.Stream != nil {
		o.Stream = &redis.Stream{MaxLen: c.Stream.MaxLen}
	}
	return o, nil
}

// newRedisSink builds the "redis" dispatcher; it fails when Redis does not
// answer a PING within 10 s, as the reference does.
func newRedisSink(cfg *config.Config, enc forwarder.Encoder, log *slog.Logger) (forwarder.Sink, error) {
	o, err := redisOptions(cfg.Redis)
	if err != nil {
		return nil, err
	}
	o.Encoder, o.Logger = enc, log
	return redis.New(o)
}

// Package redis is the "redis" sink: it publishes each record's bytes (the
// dispatched protobuf, or its JSON form with transmit_decoded_records) to
// Redis pub/sub channels as the reference server does:
//
//   - with a subscriber-set prefix, the sorted set
//     "<prefix>_<namespace>_<type>_{<VIN>}" holds consumer channels scored
//     by their lease's expiry (Unix seconds): expired members are removed
//     (ZREMRANGEBYSCORE set -inf (<now>), the rest read (ZRANGE set 0 -1)
//     and the record published to each;
//   - with VIN topics, it is published to "<namespace>_<type>_{<VIN>}".
//
// Pub/sub keeps nothing: a subscriber that is not listening misses the
// record. The optional stream mode also appends every record to the stream
// "<namespace>_<type>" (XADD MAXLEN ~ N, fields vin, txid, receivedat,
// payload), which keeps records for a consumer that was away: with it,
// delivery is at least once.
//
// Send returns nil once Redis answered every command of the batch; the
// forwarder's cursor passes a record only then.
package redis

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	goredis "github.com/redis/go-redis/v9"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// DefaultPublishTimeout bounds each round trip when Options.PublishTimeout
// is zero (the reference's default).
const DefaultPublishTimeout = 5 * time.Second

// DefaultStreamMaxLen is the approximate length a stream is trimmed to
// when Stream.MaxLen is zero.
const DefaultStreamMaxLen = 1_000_000

// pingTimeout bounds the PING New waits for.
const pingTimeout = 10 * time.Second

// chunkRecords bounds the records of one pipelined round trip.
const chunkRecords = 500

// Pool is the connection pool's settings (zero: go-redis's defaults).
type Pool struct {
	PoolSize, MinIdleConns, MaxIdleConns, MaxActiveConns int
	ReadTimeout, WriteTimeout, PoolTimeout               time.Duration
	ConnMaxIdleTime, ConnMaxLifetime                     time.Duration
}

// Stream configures the stream mode.
type Stream struct {
	// MaxLen trims each stream to about this many entries (MAXLEN ~;
	// default DefaultStreamMaxLen).
	MaxLen int64
}

// Options configure the sink (the reference's "redis" section).
type Options struct {
	// Addrs are the Redis addresses (host:port); more than one, or
	// ClusterMode, makes a cluster client.
	Addrs       []string
	ClusterMode bool
	Username    string
	Password    string
	DB          int
	// TLS, when set, is used for every connection.
	TLS *tls.Config
	// PublishTimeout bounds each round trip (default
	// DefaultPublishTimeout).
	PublishTimeout time.Duration
	// PublishVINTopics publishes to "<namespace>_<type>_{<VIN>}".
	PublishVINTopics bool
	// SubscriberSetPrefix names the sorted sets of leased consumer
	// channels ("" : none).
	SubscriberSetPrefix string
	Pool                Pool
	// Stream, when set, also appends every record to a stream.
	Stream *Stream
	// Encoder makes the payload (namespace, protobuf or JSON).
	Encoder forwarder.Encoder
	Logger  *slog.Logger
	// Now is the clock leases are compared with (default time.Now).
	Now func() time.Time
}

var (
	undecodable = metrics.GetOrCreateCounter(`fleet_forwarder_undecodable_total{forwarder="redis"}`)
	streamAdded = metrics.GetOrCreateCounter("fleet_redis_stream_added_total")
)

// counters are the reference's per-type metrics of this sink.
var counters = forwarder.NewTypeCounters("redis_publish_total", "redis_publish_total_bytes", "redis_err")

// clientLog routes go-redis's own log lines (failed dials while Redis is
// down, ...) to slog, one line per event, instead of the standard logger.
type clientLog struct{ log *slog.Logger }

func (l clientLog) Printf(_ context.Context, format string, v ...any) {
	l.log.Warn(fmt.Sprintf(format, v...))
}

var setClientLog sync.Once

// Sink publishes records to Redis. Send is driven by one forwarder; Close
// is called once Send no longer runs.
type Sink struct {
	client goredis.UniversalClient
	opts   Options
	log    *slog.Logger
	topics forwarder.TopicNames // Send's goroutine only
}

// New checks o, connects and waits up to 10 s for a PING answer: a start
// with an unreachable Redis fails, as the reference's does.
func New(o Options) (*Sink, error) {
	if len(o.Addrs) == 0 {
		return nil, errors.New("redis: addrs is empty")
	}
	if !o.PublishVINTopics && o.SubscriberSetPrefix == "" && o.Stream == nil {
		return nil, errors.New("redis: neither publish_vin_topics nor subscriber_set_prefix is set (nor stream): no record would be published")
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.Stream != nil && o.Stream.MaxLen <= 0 {
		o.Stream = &Stream{MaxLen: DefaultStreamMaxLen}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Logger.With("sink", "redis")
	setClientLog.Do(func() { goredis.SetLogger(clientLog{log.With("component", "go-redis")}) })
	cluster := o.ClusterMode || len(o.Addrs) > 1
	if cluster && o.DB != 0 {
		log.Warn("redis.db is ignored by a cluster client", "db", o.DB)
	}
	client := goredis.NewUniversalClient(&goredis.UniversalOptions{
		Addrs:           o.Addrs,
		IsClusterMode:   o.ClusterMode,
		Username:        o.Username,
		Password:        o.Password,
		DB:              o.DB,
		TLSConfig:       o.TLS,
		PoolSize:        o.Pool.PoolSize,
		MinIdleConns:    o.Pool.MinIdleConns,
		MaxIdleConns:    o.Pool.MaxIdleConns,
		MaxActiveConns:  o.Pool.MaxActiveConns,
		ReadTimeout:     o.Pool.ReadTimeout,
		WriteTimeout:    o.Pool.WriteTimeout,
		PoolTimeout:     o.Pool.PoolTimeout,
		ConnMaxIdleTime: o.Pool.ConnMaxIdleTime,
		ConnMaxLifetime: o.Pool.ConnMaxLifetime,
	})
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("redis: no PING answer from %v within %s: %w", o.Addrs, pingTimeout, err)
	}
	log.Info("redis sink ready", "addrs", o.Addrs, "cluster", cluster, "publish_vin_topics", o.PublishVINTopics,
		"subscriber_set_prefix", o.SubscriberSetPrefix, "stream", o.Stream != nil)
	return &Sink{client: client, opts: o, log: log}, nil
}

// entry is one record of a chunk on its way; at is its index in the
// batch.
type entry struct {
	at      int
	rec     *spool.Record
	payload []byte
	typ     string // record type
	vinChan string // <namespace>_<type>_{<VIN>}
	stream  string // <namespace>_<type>
	m       *forwarder.SinkCounters
}

// Send implements forwarder.Sink: it publishes every record of batch (and
// appends it to its stream in stream mode) and returns nil once Redis
// answered every command, else a *forwarder.BatchError naming the records
// with a command Redis did not answer (and, per VIN, those after them:
// forwarder.Results). Records that cannot be decoded are skipped and
// counted (fleet_forwarder_undecodable_total{forwarder="redis"}). Send may
// be called from several goroutines.
func (s *Sink) Send(ctx context.Context, batch []spool.Record) error {
	entries := make([]entry, 0, len(batch))
	for i, payload := range s.opts.Encoder.Values(batch, undecodable, s.log) {
		r := &batch[i]
		stream := s.topics.Of(s.opts.Encoder, r.Topic)
		entries = append(entries, entry{at: i, rec: r, payload: payload, typ: string(r.Topic),
			vinChan: stream + "_{" + r.VIN + "}", stream: stream, m: counters.Of(string(r.Topic))})
	}
	errs := make([]error, len(batch))
	var down error // a chunk failed whole: the rest are not tried
	for len(entries) > 0 {
		n := min(len(entries), chunkRecords)
		chunk := entries[:n]
		entries = entries[n:]
		if down != nil {
			for _, e := range chunk {
				errs[e.at] = down
			}
			continue
		}
		ok := 0
		for i, err := range s.sendChunk(ctx, chunk) {
			errs[chunk[i].at] = err
			if err == nil {
				ok++
			}
		}
		if ok == 0 {
			down = errs[chunk[0].at]
		}
	}
	return forwarder.Results(batch, errs)
}

// sendChunk is two pipelined round trips: the subscriber sets' upkeep and
// reads, then every PUBLISH and XADD. It returns each entry's error (nil:
// every command of it answered).
func (s *Sink) sendChunk(ctx context.Context, chunk []entry) []error {
	errs := make([]error, len(chunk))
	members := map[string][]string{} // by set key
	if s.opts.SubscriberSetPrefix != "" {
		var err error
		if members, err = s.subscribers(ctx, chunk); err != nil {
			for i := range errs {
				errs[i] = err
			}
			return errs
		}
	}
	type publish struct {
		cmd *goredis.IntCmd
		i   int // the entry
	}
	var pubs []publish
	var adds []*goredis.StringCmd
	rctx, cancel := context.WithTimeout(ctx, s.opts.PublishTimeout)
	defer cancel()
	pipe := s.client.Pipeline()
	for i := range chunk {
		e := &chunk[i]
		if s.opts.SubscriberSetPrefix != "" {
			for _, ch := range members[s.setKey(e)] {
				pubs = append(pubs, publish{keyedPublish(rctx, pipe, ch, e.payload), i})
			}
		}
		if s.opts.PublishVINTopics {
			pubs = append(pubs, publish{keyedPublish(rctx, pipe, e.vinChan, e.payload), i})
		}
		if s.opts.Stream != nil {
			adds = append(adds, pipe.XAdd(rctx, &goredis.XAddArgs{
				Stream: e.stream, MaxLen: s.opts.Stream.MaxLen, Approx: true,
				Values: []any{"vin", e.rec.VIN, "txid", e.rec.TxID, "receivedat", strconv.FormatInt(e.rec.ReceivedAtMs, 10), "payload", e.payload},
			}))
		}
	}
	_, pipeErr := pipe.Exec(rctx)
	for _, p := range pubs {
		e := &chunk[p.i]
		if err := p.cmd.Err(); err != nil {
			e.m.Errs.Inc()
			if errs[p.i] == nil {
				errs[p.i] = fmt.Errorf("redis: publish record %d (vin %s): %w", e.rec.Seq, e.rec.VIN, err)
			}
			continue
		}
		e.m.Published.Inc()
		e.m.Bytes.Add(len(e.payload))
	}
	for i, a := range adds {
		if err := a.Err(); err != nil {
			chunk[i].m.Errs.Inc()
			if errs[i] == nil {
				errs[i] = fmt.Errorf("redis: XADD record %d to %s: %w", chunk[i].rec.Seq, chunk[i].stream, err)
			}
			continue
		}
		streamAdded.Inc()
	}
	if pipeErr != nil && len(pubs) == 0 && len(adds) == 0 {
		for i := range errs {
			errs[i] = fmt.Errorf("redis: pipeline: %w", pipeErr)
		}
	}
	return errs
}

// keyedPublish queues PUBLISH channel message on pipe, routed by a cluster
// client to the master of the channel's hash slot, as if the channel were
// a key. PUBLISH names no key, so go-redis would spread a pipeline's
// PUBLISHes over the masters in turn; each master then forwards its own to
// the subscribers' nodes over its own cluster-bus link, and two records
// of one channel could arrive swapped. One node per channel keeps each
// VIN's records in order. A client of one Redis ignores the routing.
func keyedPublish(ctx context.Context, pipe goredis.Pipeliner, channel string, message []byte) *goredis.IntCmd {
	cmd := pipe.Publish(ctx, channel, message)
	cmd.SetFirstKeyPos(1)
	return cmd
}

// setKey is the subscriber set of a record: <prefix>_<namespace>_<type>_{<VIN>}.
func (s *Sink) setKey(e *entry) string { return s.opts.SubscriberSetPrefix + "_" + e.vinChan }

// subscribers removes the expired leases of each set the chunk's records
// use and returns the live members by set key.
func (s *Sink) subscribers(ctx context.Context, chunk []entry) (map[string][]string, error) {
	rctx, cancel := context.WithTimeout(ctx, s.opts.PublishTimeout)
	defer cancel()
	now := "(" + strconv.FormatInt(s.opts.Now().Unix(), 10)
	reads := map[string]*goredis.StringSliceCmd{}
	owner := map[string]*entry{}
	pipe := s.client.Pipeline()
	for i := range chunk {
		key := s.setKey(&chunk[i])
		if _, ok := reads[key]; ok {
			continue
		}
		pipe.ZRemRangeByScore(rctx, key, "-inf", now)
		reads[key] = pipe.ZRange(rctx, key, 0, -1)
		owner[key] = &chunk[i]
	}
	if _, err := pipe.Exec(rctx); err != nil {
		for key, cmd := range reads {
			if cmd.Err() != nil {
				owner[key].m.Errs.Inc()
			}
		}
		return nil, fmt.Errorf("redis: read subscriber sets (%d keys): %w", len(reads), err)
	}
	out := make(map[string][]string, len(reads))
	for key, cmd := range reads {
		out[key] = cmd.Val()
	}
	return out, nil
}

// Close closes the client.
func (s *Sink) Close() error {
	if err := s.client.Close(); err != nil {
		return fmt.Errorf("redis: close: %w", err)
	}
	return nil
}

// Package pubsub is the "pubsub" sink: it publishes every record to the
// Google Cloud Pub/Sub topic "<namespace>_<record type>", byte-compatible
// with the reference server: the message data is the dispatched payload
// (protobuf, or its JSON form) and the attributes are the reference's
// metadata (vin, receivedat, timestamp, txid, txtype, version,
// device_client_version).
//
// When PUBSUB_EMULATOR_HOST is set, the client library talks to that
// address in plain text without credentials (an emulator or pstest).
package pubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	ps "cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/VictoriaMetrics/metrics"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// DefaultStartTimeout bounds how long New waits for the topics to be
// ensured when Options.StartTimeout is zero.
const DefaultStartTimeout = 30 * time.Second

var (
	published     = metrics.GetOrCreateCounter("fleet_pubsub_published_total")
	publishErrors = metrics.GetOrCreateCounter("fleet_pubsub_publish_errors_total")
	undecodable   = metrics.GetOrCreateCounter(`fleet_forwarder_undecodable_total{forwarder="pubsub"}`)
)

// Options configure the sink.
type Options struct {
	// ProjectID is the Google Cloud project holding the topics (the
	// reference's "pubsub.gcp_project_id").
	ProjectID string
	// RecordTypes are the record types routed to Pub/Sub; the topic of each
	// is created at start when missing.
	RecordTypes []string
	// Encoder turns records into messages (topic name, data, attributes).
	Encoder forwarder.Encoder
	// Logger gets start-up and skip lines (default slog.Default).
	Logger *slog.Logger
	// StartTimeout bounds New's topic checks (default DefaultStartTimeout),
	// so that an unreachable Pub/Sub makes New fail instead of hang.
	StartTimeout time.Duration
}

// Sink publishes records to Pub/Sub. Send may be called from several
// goroutines (the forwarder's lanes); Close may be called once Send no
// longer runs.
type Sink struct {
	client *ps.Client
	enc    forwarder.Encoder
	log    *slog.Logger

	mu         sync.Mutex
	publishers map[string]*ps.Publisher // by topic ID
	topics     forwarder.TopicNames
	closed     bool
}

// New creates the Pub/Sub client and makes sure the topic of every record
// type in o.RecordTypes exists, creating missing ones. It fails, naming the
// topic, when a topic can neither be found nor created within
// o.StartTimeout (permission denied, Pub/Sub unreachable, invalid name).
func New(ctx context.Context, o Options) (*Sink, error) {
	if o.ProjectID == "" {
		return nil, errors.New("pubsub sink: no project id")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = DefaultStartTimeout
	}
	client, err := ps.NewClient(ctx, o.ProjectID)
	if err != nil {
		return nil, fmt.Errorf("pubsub sink: client for project %q: %w", o.ProjectID, err)
	}
	s := &Sink{
		client:     client,
		enc:        o.Encoder,
		log:        o.Logger.With("sink", "pubsub"),
		publishers: map[string]*ps.Publisher{},
	}
	startCtx, cancel := context.WithTimeout(ctx, o.StartTimeout)
	defer cancel()
	for _, rt := range o.RecordTypes {
		if _, _, err := s.publisher(startCtx, []byte(rt)); err != nil {
			_ = s.Close()
			return nil, err
		}
	}
	return s, nil
}

// topicPath is the full resource name of a topic ID.
func (s *Sink) topicPath(topic string) string {
	return "projects/" + s.client.Project() + "/topics/" + topic
}

// ensureTopic makes sure topic exists: it looks it up and creates it when
// missing. A topic created concurrently (AlreadyExists) is fine. When the
// lookup is not permitted (a publish-only role), creation is attempted.
func (s *Sink) ensureTopic(ctx context.Context, topic string) error {
	name := s.topicPath(topic)
	_, err := s.client.TopicAdminClient.GetTopic(ctx, &pubsubpb.GetTopicRequest{Topic: name})
	switch status.Code(err) {
	case codes.OK:
		return nil
	case codes.NotFound, codes.PermissionDenied:
	default:
		return fmt.Errorf("pubsub sink: look up topic %q: %w", name, describe(ctx, err))
	}
	_, err = s.client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: name})
	switch status.Code(err) {
	case codes.OK:
		s.log.Info("created topic", "topic", name)
		return nil
	case codes.AlreadyExists:
		return nil
	}
	return fmt.Errorf("pubsub sink: create topic %q: %w", name, describe(ctx, err))
}

// describe makes an error caused by ctx's deadline say so: gRPC retries an
// unreachable server until then, and the bare error names no cause.
func describe(ctx context.Context, err error) error {
	if ctx.Err() != nil || status.Code(err) == codes.DeadlineExceeded {
		where := "Pub/Sub"
		if addr := os.Getenv("PUBSUB_EMULATOR_HOST"); addr != "" {
			where = "the Pub/Sub emulator at PUBSUB_EMULATOR_HOST=" + addr
		}
		return fmt.Errorf("no answer from %s in time (unreachable?): %w", where, err)
	}
	return err
}

// publisher returns the publisher of a record type's topic, and the
// topic's ID ("<namespace>_<record type>"), ensuring the topic the first
// time it is used.
func (s *Sink) publisher(ctx context.Context, recordType []byte) (*ps.Publisher, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	topic := s.topics.Of(s.enc, recordType)
	if s.closed {
		return nil, topic, errors.New("pubsub sink: closed")
	}
	if p, ok := s.publishers[topic]; ok {
		return p, topic, nil
	}
	if err := s.ensureTopic(ctx, topic); err != nil {
		return nil, topic, err
	}
	p := s.client.Publisher(topic)
	s.publishers[topic] = p
	return p, topic, nil
}

// Send implements forwarder.Sink: it publishes every record of batch and
// waits for every result. It returns nil when Pub/Sub confirmed every
// message, else a *forwarder.BatchError naming those it did not. Messages
// go out in waves holding one record per VIN (forwarder.SendInWaves), so
// that a failed message is never followed by a published one of the same
// VIN. A message Pub/Sub refuses for its content or size
// (InvalidArgument, over the client's size limit) is refused for good
// (forwarder.Permanent); a deleted topic, an outage and every other error
// are retried. Records whose stored payload cannot be decoded are skipped
// and counted (fleet_forwarder_undecodable_total{forwarder="pubsub"}).
func (s *Sink) Send(ctx context.Context, batch []spool.Record) error {
	// Every message's data goes into one buffer of this Send's own (the
	// client holds it until a message is published, which may be after an
	// abandoned Send returned).
	buf := make([]byte, 0, forwarder.ValuesSize(batch))
	msgs := make([]*ps.Message, len(batch))
	for i := range batch {
		r := &batch[i]
		data, createdMs, err := s.enc.NextValue(&buf, r)
		if err != nil {
			undecodable.Inc()
			s.log.Error("record cannot be encoded; skipped", "seq", r.Seq, "vin", r.VIN, "topic", string(r.Topic), "err", err)
			continue
		}
		headers := forwarder.Headers(r, createdMs)
		attrs := make(map[string]string, len(headers))
		for _, h := range headers {
			attrs[h.Key] = h.Value
		}
		msgs[i] = &ps.Message{Data: data, Attributes: attrs}
	}
	return forwarder.SendInWaves(batch, func(wave []int) []error {
		errs := make([]error, len(wave))
		results := make([]*ps.PublishResult, len(wave))
		topics := make([]string, len(wave))
		for j, i := range wave {
			if msgs[i] == nil {
				continue // undecodable: skipped
			}
			p, topic, err := s.publisher(ctx, batch[i].Topic)
			if err != nil {
				publishErrors.Inc()
				errs[j] = fmt.Errorf("pubsub sink: record %d: %w", batch[i].Seq, err)
				continue
			}
			topics[j] = topic
			results[j] = p.Publish(ctx, msgs[i])
		}
		// Every started publish is awaited, so that no result is left
		// behind and the counters stay exact.
		ok := 0
		for j, res := range results {
			if res == nil {
				continue
			}
			if _, err := res.Get(ctx); err != nil {
				publishErrors.Inc()
				errs[j] = classify(fmt.Errorf("pubsub sink: publish record %d to topic %q: %w", batch[wave[j]].Seq, topics[j], err))
				continue
			}
			ok++
		}
		published.Add(ok)
		return errs
	})
}

// classify marks the errors that refuse a message for good.
func classify(err error) error {
	switch {
	case errors.Is(err, ps.ErrOversizedMessage):
		return forwarder.Permanent("message_too_large", err)
	case status.Code(err) == codes.InvalidArgument:
		return forwarder.Permanent("invalid_argument", err)
	}
	return err
}

// Close stops every publisher (sending what is still buffered) and closes
// the client. Send must not run concurrently or afterwards.
func (s *Sink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	pubs := s.publishers
	s.publishers = nil
	s.mu.Unlock()
	for _, p := range pubs {
		p.Stop()
	}
	if err := s.client.Close(); err != nil {
		return fmt.Errorf("pubsub sink: close client: %w", err)
	}
	return nil
}

// Package nats is the "nats" sink (Teslemetry's fork of the reference): each
// record's bytes (the dispatched protobuf, or its JSON form with
// transmit_decoded_records) are published to "<namespace>.<VIN>.data" for
// V records and "<namespace>.<VIN>.<record type>" for the others, with
// nats-io/nats.go.
//
// Core NATS keeps nothing: Send returns nil once the server has processed
// every publish of the batch (a flush's PONG), which delivers them to the
// subscribers present then. With JetStream on, Send returns nil only once a
// stream stored every record (each publish's PubAck): at least once.
package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/proto/record"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// DefaultPublishTimeout bounds the wait for a batch's flush or for each
// PubAck when Options.PublishTimeout is zero.
const DefaultPublishTimeout = 5 * time.Second

// connectTimeout bounds New's connection attempt.
const connectTimeout = 10 * time.Second

// Options configure the sink (the fork's "nats" section, plus JetStream).
type Options struct {
	// URL is the server URL(s), comma-separated; credentials may be in it
	// (nats://user:pass@host:4222).
	URL string
	// Name is the connection's name, shown by the server.
	Name string
	// JetStream waits for each publish's PubAck.
	JetStream bool
	// PublishTimeout bounds the wait for a confirmation (default
	// DefaultPublishTimeout).
	PublishTimeout time.Duration
	// ReconnectWait is the pause between reconnect attempts (default 1s).
	ReconnectWait time.Duration
	Encoder       forwarder.Encoder
	Logger        *slog.Logger
}

var (
	errorsTotal = metrics.GetOrCreateCounter("nats_err")
	undecodable = metrics.GetOrCreateCounter(`fleet_forwarder_undecodable_total{forwarder="nats"}`)
)

// counters are the per-type metrics of the reference's NATS fork.
var counters = forwarder.NewTypeCounters("nats_produce_total", "nats_produce_total_bytes", "")

// Sink publishes records to NATS. Send is driven by one forwarder; Close is
// called once Send no longer runs.
type Sink struct {
	nc   *natsgo.Conn
	js   jetstream.JetStream
	opts Options
	log  *slog.Logger
}

// New connects to o.URL; a server that cannot be reached within 10 s stops
// the start, as in the fork. Once connected, the client reconnects for
// ever; while it is disconnected nothing is buffered (Send fails and the
// records wait in the spool).
func New(o Options) (*Sink, error) {
	if o.URL == "" {
		return nil, errors.New("nats: no url")
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.ReconnectWait <= 0 {
		o.ReconnectWait = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	log := o.Logger.With("sink", "nats")
	nc, err := natsgo.Connect(o.URL,
		natsgo.Name(o.Name),
		natsgo.Timeout(connectTimeout),
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(o.ReconnectWait),
		// No buffer while reconnecting: a publish then fails instead of
		// waiting in memory, unconfirmed.
		natsgo.ReconnectBufSize(-1),
		natsgo.DisconnectErrHandler(func(_ *natsgo.Conn, err error) {
			log.Warn("nats disconnected; reconnecting", "err", err)
		}),
		natsgo.ReconnectHandler(func(c *natsgo.Conn) { log.Info("nats reconnected", "server", c.ConnectedUrlRedacted()) }),
	)
	if err != nil {
		return nil, fmt.Errorf("nats: connect %s: %w", redact(o.URL), err)
	}
	s := &Sink{nc: nc, opts: o, log: log}
	if o.JetStream {
		s.js, err = jetstream.New(nc, jetstream.WithPublishAsyncTimeout(o.PublishTimeout))
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("nats: jetstream: %w", err)
		}
	}
	log.Info("nats sink ready", "server", nc.ConnectedUrlRedacted(), "jetstream", o.JetStream)
	return s, nil
}

// redact drops the credentials of a URL list for error messages.
func redact(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if at := strings.LastIndexByte(p, '@'); at >= 0 {
			if scheme := strings.Index(p, "://"); scheme >= 0 && scheme < at {
				parts[i] = p[:scheme+3] + "[redacted]" + p[at:]
			} else {
				parts[i] = "[redacted]" + p[at:]
			}
		}
	}
	return strings.Join(parts, ",")
}

// Subject is the subject of a record: "<namespace>.<VIN>.data" for V,
// "<namespace>.<VIN>.<record type>" for the others.
func Subject(namespace, vin, recordType string) string {
	if recordType == record.TopicV {
		return namespace + "." + vin + ".data"
	}
	return namespace + "." + vin + "." + recordType
}

// checkToken refuses a subject token that would change the subject's
// shape or that NATS refuses: empty, '.', wildcards, whitespace.
func checkToken(what, tok string) error {
	if tok == "" || strings.ContainsAny(tok, ".*> \t\r\n") {
		return fmt.Errorf("nats: %s %q cannot be a subject token", what, tok)
	}
	return nil
}

// Send implements forwarder.Sink: it publishes every record of batch and
// returns nil once the server confirmed all of them (core NATS: a flush;
// JetStream: every PubAck), else a *forwarder.BatchError naming those it
// did not (and, per VIN, those after them: forwarder.Results). Records
// that cannot be decoded, and records whose VIN cannot be a subject token,
// are skipped and counted. Send may be called from several goroutines.
func (s *Sink) Send(ctx context.Context, batch []spool.Record) error {
	errs := make([]error, len(batch))
	if !s.nc.IsConnected() {
		errorsTotal.Inc()
		err := fmt.Errorf("nats: not connected (%s)", s.nc.Status())
		for i := range errs {
			errs[i] = err
		}
		return forwarder.Results(batch, errs)
	}
	buf := make([]byte, 0, forwarder.ValuesSize(batch))
	type sent struct {
		at   int
		seq  uint64
		subj string
		size int
		m    *forwarder.SinkCounters
		fut  jetstream.PubAckFuture
	}
	pubs := make([]sent, 0, len(batch))
	stop := len(batch) // the first record not published
	for i := range batch {
		r := &batch[i]
		if err := checkToken("VIN", r.VIN); err != nil {
			errorsTotal.Inc()
			s.log.Error("record refused; skipped", "seq", r.Seq, "vin", r.VIN, "topic", string(r.Topic), "err", err)
			continue
		}
		data, _, err := s.opts.Encoder.NextValue(&buf, r)
		if err != nil {
			undecodable.Inc()
			s.log.Error("record cannot be encoded; skipped", "seq", r.Seq, "vin", r.VIN, "topic", string(r.Topic), "err", err)
			continue
		}
		p := sent{at: i, seq: r.Seq, subj: Subject(s.opts.Encoder.Namespace, r.VIN, string(r.Topic)), size: len(data), m: counters.Of(string(r.Topic))}
		if s.js != nil {
			p.fut, err = s.js.PublishAsync(p.subj, data)
		} else {
			err = s.nc.Publish(p.subj, data)
		}
		if err != nil {
			errorsTotal.Inc()
			err = fmt.Errorf("nats: publish record %d to %s: %w", r.Seq, p.subj, err)
			for j := i; j < len(batch); j++ {
				errs[j] = err
			}
			stop = i
			break
		}
		pubs = append(pubs, p)
	}
	if s.js == nil {
		if err := s.nc.FlushTimeout(s.opts.PublishTimeout); err != nil {
			errorsTotal.Inc()
			err = fmt.Errorf("nats: flush %d publishes: %w", len(pubs), err)
			for j := range stop {
				errs[j] = err
			}
			return forwarder.Results(batch, errs)
		}
		for _, p := range pubs {
			p.m.Published.Inc()
			p.m.Bytes.Add(p.size)
		}
		return forwarder.Results(batch, errs)
	}
	// The client times out each PubAck after PublishTimeout; the timer
	// is a guard on top.
	timer := time.NewTimer(2 * s.opts.PublishTimeout)
	defer timer.Stop()
	var gaveUp error
	for _, p := range pubs {
		if gaveUp != nil {
			errs[p.at] = gaveUp
			continue
		}
		select {
		case <-p.fut.Ok():
			p.m.Published.Inc()
			p.m.Bytes.Add(p.size)
		case err := <-p.fut.Err():
			errorsTotal.Inc()
			errs[p.at] = fmt.Errorf("nats: jetstream publish record %d to %s: %w", p.seq, p.subj, err)
		case <-timer.C:
			errorsTotal.Inc()
			gaveUp = fmt.Errorf("nats: jetstream publish record %d to %s: no PubAck within %s", p.seq, p.subj, 2*s.opts.PublishTimeout)
			errs[p.at] = gaveUp
		case <-ctx.Done():
			gaveUp = ctx.Err()
			errs[p.at] = gaveUp
		}
	}
	return forwarder.Results(batch, errs)
}

// Close drains nothing (Send confirmed what counts) and closes the
// connection.
func (s *Sink) Close() error {
	s.nc.Close()
	return nil
}

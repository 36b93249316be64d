// Package mqtt is the "mqtt" sink: it publishes each record as the
// reference server's MQTT messages (one per datum, alert name, error and
// connectivity event; see Encode) with eclipse/paho.mqtt.golang.
//
// Send returns nil only once every publish of every record of the batch
// is confirmed: with QoS 1 or 2 by the broker (PUBACK / PUBCOMP), with
// QoS 0 once it was written to an open connection (best effort: a broker
// that dies then loses it). Nothing is published while the connection is
// down: paho completes QoS 0 publishes made while it reconnects without
// sending them, and would pile QoS 1 publishes up in memory.
package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// Defaults of the reference's "mqtt" section.
const (
	DefaultConnectTimeout       = 30 * time.Second
	DefaultPublishTimeout       = 2500 * time.Millisecond
	DefaultDisconnectTimeout    = 250 * time.Millisecond
	DefaultConnectRetryInterval = 10 * time.Second
	DefaultKeepAlive            = 30 * time.Second
	// DefaultMaxInFlight bounds the publishes awaiting confirmation (MQTT
	// packet ids are 16 bits; a batch can hold far more publishes).
	DefaultMaxInFlight = 1024
)

// Options configure the sink (the reference's "mqtt" section).
type Options struct {
	// Broker is the broker's URL; tcp:// is assumed without a scheme
	// (paho also takes ssl://, tls://, ws://, wss://).
	Broker                       string
	ClientID, Username, Password string
	TopicBase                    string
	QoS                          byte
	Retained                     bool
	ConnectTimeout               time.Duration
	PublishTimeout               time.Duration // bounds the wait for each confirmation
	DisconnectTimeout            time.Duration
	ConnectRetryInterval         time.Duration // also caps the reconnect backoff
	KeepAlive                    time.Duration
	MaxInFlight                  int
	Logger                       *slog.Logger
}

// BrokerURL adds tcp:// to a broker address without a scheme.
func BrokerURL(broker string) string {
	if strings.Contains(broker, "://") {
		return broker
	}
	return "tcp://" + broker
}

var (
	undecodable = metrics.GetOrCreateCounter(`fleet_forwarder_undecodable_total{forwarder="mqtt"}`)
)

// counters are the reference's per-type metrics of this sink.
var counters = forwarder.NewTypeCounters("mqtt_publish_total", "mqtt_publish_total_bytes", "mqtt_err")

// Sink publishes records to an MQTT broker. Send is driven by one forwarder;
// Close is called once Send no longer runs.
type Sink struct {
	client paho.Client
	opts   Options
	log    *slog.Logger
}

// New starts connecting to the broker in the background (retrying every
// ConnectRetryInterval) and returns at once: the daemon starts, and
// records wait in the spool, while the broker is unreachable.
func New(o Options) (*Sink, error) {
	if o.Broker == "" {
		return nil, errors.New("mqtt: no broker")
	}
	if o.QoS > 2 {
		return nil, fmt.Errorf("mqtt: qos %d is not 0, 1 or 2", o.QoS)
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = DefaultPublishTimeout
	}
	if o.DisconnectTimeout <= 0 {
		o.DisconnectTimeout = DefaultDisconnectTimeout
	}
	if o.ConnectRetryInterval <= 0 {
		o.ConnectRetryInterval = DefaultConnectRetryInterval
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = DefaultKeepAlive
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Broker = BrokerURL(o.Broker)
	s := &Sink{opts: o, log: o.Logger.With("sink", "mqtt", "broker", o.Broker)}
	po := paho.NewClientOptions().
		AddBroker(o.Broker).
		SetClientID(o.ClientID).
		SetUsername(o.Username).
		SetPassword(o.Password).
		SetConnectRetry(true).
		SetAutoReconnect(true).
		SetConnectRetryInterval(o.ConnectRetryInterval).
		SetMaxReconnectInterval(o.ConnectRetryInterval).
		SetConnectTimeout(o.ConnectTimeout).
		SetWriteTimeout(o.PublishTimeout).
		SetKeepAlive(o.KeepAlive).
		SetOrderMatters(false).
		SetOnConnectHandler(func(paho.Client) { s.log.Info("mqtt connected") }).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			s.log.Warn("mqtt connection lost; reconnecting", "err", err)
		})
	s.client = paho.NewClient(po)
	s.client.Connect() // retries in the background until Disconnect
	return s, nil
}

// pending is a publish awaiting its confirmation; rec is its record's
// index in the batch.
type pending struct {
	tok   paho.Token
	rec   int
	seq   uint64
	topic string
	size  int
	m     *forwarder.SinkCounters
}

// Send implements forwarder.Sink. It publishes every message of every
// record of batch, in order, keeping at most MaxInFlight unconfirmed, and
// returns nil once all are confirmed. It stops at the first publish that
// fails, is not confirmed within PublishTimeout, or finds the connection
// down, and returns a *forwarder.BatchError naming that publish's record
// and every one after it: the records before it were confirmed in full
// and are not sent again. Records that cannot be decoded are skipped and
// counted (fleet_forwarder_undecodable_total{forwarder="mqtt"});
// publishes Encode refuses are left out and counted in mqtt_err. Send may
// be called from several goroutines.
func (s *Sink) Send(ctx context.Context, batch []spool.Record) error {
	var inFlight []pending
	// wait waits for the oldest publishes until at most keep are left;
	// on a failure it returns the failing publish's record.
	wait := func(keep int) (int, error) {
		for len(inFlight) > keep {
			p := inFlight[0]
			if err := s.await(ctx, p); err != nil {
				// The rest are left to paho; their confirmations (or
				// time-outs) do not matter: their records are sent again.
				return p.rec, err
			}
			p.m.Published.Inc()
			p.m.Bytes.Add(p.size)
			inFlight = inFlight[1:]
		}
		return 0, nil
	}
	failFrom := func(rec int, err error) error {
		be := &forwarder.BatchError{Failed: make([]forwarder.RecordError, 0, len(batch)-rec)}
		for i := rec; i < len(batch); i++ {
			be.Failed = append(be.Failed, forwarder.RecordError{Index: i, Err: err})
		}
		return be
	}
	for i := range batch {
		r := &batch[i]
		recordType := string(r.Topic)
		m := counters.Of(recordType)
		msgs, refused, err := Encode(recordType, r.VIN, s.opts.TopicBase, r.Payload)
		if err != nil {
			undecodable.Inc()
			s.log.Error("record cannot be decoded; skipped", "seq", r.Seq, "vin", r.VIN, "topic", recordType, "err", err)
			continue
		}
		for _, err := range refused {
			m.Errs.Inc()
			s.log.Error("mqtt publish refused; left out", "seq", r.Seq, "vin", r.VIN, "record_type", recordType, "err", err)
		}
		for _, msg := range msgs {
			// Checked before every publish: paho "completes" a QoS 0
			// publish made while it reconnects without sending it.
			if !s.client.IsConnectionOpen() {
				m.Errs.Inc()
				err := fmt.Errorf("mqtt: not connected to %s (record %d)", s.opts.Broker, r.Seq)
				if rec, werr := wait(0); werr != nil {
					return failFrom(rec, werr)
				}
				return failFrom(i, err)
			}
			tok := s.client.Publish(msg.Topic, s.opts.QoS, s.opts.Retained, msg.Payload)
			inFlight = append(inFlight, pending{tok: tok, rec: i, seq: r.Seq, topic: msg.Topic, size: len(msg.Payload), m: m})
			if len(inFlight) >= s.opts.MaxInFlight {
				if rec, err := wait(s.opts.MaxInFlight / 2); err != nil {
					return failFrom(rec, err)
				}
			}
		}
	}
	if rec, err := wait(0); err != nil {
		return failFrom(rec, err)
	}
	return nil
}

// await waits for one publish's confirmation, at most PublishTimeout.
func (s *Sink) await(ctx context.Context, p pending) error {
	t := time.NewTimer(s.opts.PublishTimeout)
	defer t.Stop()
	select {
	case <-p.tok.Done():
		if err := p.tok.Error(); err != nil {
			p.m.Errs.Inc()
			return fmt.Errorf("mqtt: publish to %q (record %d): %w", p.topic, p.seq, err)
		}
		return nil
	case <-t.C:
		p.m.Errs.Inc()
		return fmt.Errorf("mqtt: publish to %q (record %d): no confirmation within %s", p.topic, p.seq, s.opts.PublishTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close disconnects, giving in-flight work DisconnectTimeout to finish.
func (s *Sink) Close() error {
	s.client.Disconnect(uint(s.opts.DisconnectTimeout / time.Millisecond))
	return nil
}

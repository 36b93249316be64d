// Package zmq is the "zmq" sink: a ZeroMQ PUB socket bound to the
// configured address sends every record as two frames, the topic
// "<namespace>_<record type>" and the record's bytes (the dispatched
// protobuf, or its JSON form with transmit_decoded_records), as the
// reference server does. It uses go-zeromq/zmq4 (pure Go, no libzmq).
//
// Delivery is best effort: PUB keeps nothing for a subscriber that is not
// connected, and drops messages past its high-water mark when subscribers
// are slow. Send "confirms" a batch once the socket queued it.
//
// One goroutine owns the socket: Send hands it each batch and waits for
// it.
package zmq

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync"

	"github.com/VictoriaMetrics/metrics"
	"github.com/go-zeromq/zmq4"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// DefaultHighWaterMark bounds the messages the socket queues for its
// subscribers (zmq4's default is unbounded).
const DefaultHighWaterMark = 100_000

// Options configure the sink (the reference's "zmq" section).
type Options struct {
	// Addr is the endpoint the PUB socket binds, e.g. "tcp://*:5284".
	Addr string
	// HighWaterMark bounds the queued messages (default
	// DefaultHighWaterMark); past it messages are dropped.
	HighWaterMark int
	// Verbose logs the socket library's own messages.
	Verbose bool
	Encoder forwarder.Encoder
	Logger  *slog.Logger
}

var (
	undecodable = metrics.GetOrCreateCounter(`fleet_forwarder_undecodable_total{forwarder="zmq"}`)
)

// counters are the reference's per-type metrics of this sink.
var counters = forwarder.NewTypeCounters("zmq_publish_total", "zmq_publish_total_bytes", "zmq_err")

// message is one record's two frames.
type message struct {
	at    int // index in the batch
	seq   uint64
	topic []byte
	value []byte
	m     *forwarder.SinkCounters
}

// request is a batch handed to the socket's goroutine.
type request struct {
	msgs []message
	done chan queued
}

// queued is the socket goroutine's answer: every message before msgs[at]
// was queued; with err, msgs[at] and those after were not.
type queued struct {
	at  int
	err error
}

// Sink publishes records on a bound PUB socket.
type Sink struct {
	opts   Options
	log    *slog.Logger
	reqs   chan request
	stop   chan struct{}
	exited chan struct{}
	addr   string
	topics forwarder.TopicNames // Send's goroutine only
	once   sync.Once
}

// New binds the PUB socket; a bind error (address in use, bad endpoint)
// is returned, and stops the start.
func New(o Options) (*Sink, error) {
	if o.Addr == "" {
		return nil, errors.New("zmq: no addr")
	}
	if o.HighWaterMark <= 0 {
		o.HighWaterMark = DefaultHighWaterMark
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Sink{opts: o, log: o.Logger.With("sink", "zmq"), reqs: make(chan request), stop: make(chan struct{}), exited: make(chan struct{})}
	sockLog := log.New(io.Discard, "", 0)
	if o.Verbose {
		sockLog = slog.NewLogLogger(s.log.With("component", "zmq4").Handler(), slog.LevelInfo)
	}
	sock := zmq4.NewPub(context.Background(), zmq4.WithLogger(sockLog))
	if err := sock.SetOption(zmq4.OptionHWM, o.HighWaterMark); err != nil {
		_ = sock.Close()
		return nil, fmt.Errorf("zmq: set high-water mark: %w", err)
	}
	if err := sock.Listen(o.Addr); err != nil {
		_ = sock.Close()
		return nil, fmt.Errorf("zmq: bind %s: %w", o.Addr, err)
	}
	if a := sock.Addr(); a != nil {
		s.addr = a.String()
	}
	s.log.Info("zmq socket bound", "addr", o.Addr, "listening", s.addr)
	go s.own(sock)
	return s, nil
}

// Addr is the address the socket listens on (the port chosen for ":0").
func (s *Sink) Addr() string { return s.addr }

// own is the socket's goroutine: it alone sends on and closes the socket.
func (s *Sink) own(sock zmq4.Socket) {
	defer close(s.exited)
	defer sock.Close()
	for {
		select {
		case <-s.stop:
			return
		case r := <-s.reqs:
			res := queued{at: len(r.msgs)}
			for i, m := range r.msgs {
				if e := sock.Send(zmq4.NewMsgFrom(m.topic, m.value)); e != nil {
					m.m.Errs.Inc()
					res = queued{at: i, err: fmt.Errorf("zmq: send record %d: %w", m.seq, e)}
					break
				}
				m.m.Published.Inc()
				m.m.Bytes.Add(len(m.topic) + len(m.value))
			}
			r.done <- res
		}
	}
}

// Send implements forwarder.Sink: the socket's goroutine queues every
// record of batch; Send returns once it has, or with a
// *forwarder.BatchError naming the record it could not queue and those
// after it. Records that cannot be decoded are skipped and counted. Send
// may be called from several goroutines.
func (s *Sink) Send(ctx context.Context, batch []spool.Record) error {
	// The socket keeps the frames after Send returns: Values encodes into
	// a buffer of this Send's own.
	msgs := make([]message, 0, len(batch))
	for i, value := range s.opts.Encoder.Values(batch, undecodable, s.log) {
		r := &batch[i]
		msgs = append(msgs, message{at: i, seq: r.Seq, topic: []byte(s.topics.Of(s.opts.Encoder, r.Topic)), value: value, m: counters.Of(string(r.Topic))})
	}
	if len(msgs) == 0 {
		return nil
	}
	req := request{msgs: msgs, done: make(chan queued, 1)}
	select {
	case s.reqs <- req:
	case <-s.exited:
		return errors.New("zmq: socket closed")
	case <-ctx.Done():
		return ctx.Err()
	}
	// The goroutine finishes the batch it took, whatever ctx says, so
	// that the counters stay exact.
	res := <-req.done
	if res.err == nil {
		return nil
	}
	be := &forwarder.BatchError{}
	for _, m := range msgs[res.at:] {
		be.Failed = append(be.Failed, forwarder.RecordError{Index: m.at, Err: res.err})
	}
	return be
}

// Close closes the socket. Send must not run concurrently or afterwards.
func (s *Sink) Close() error {
	s.once.Do(func() { close(s.stop) })
	<-s.exited
	return nil
}

// CurveNotSupported is the error for the reference's CURVE keys: the pure
// Go ZeroMQ library has no CURVE mechanism, and a socket without the
// security it was configured with must not start.
func CurveNotSupported(keys ...string) error {
	return fmt.Errorf("zmq: %s: CURVE security is not supported by this build's ZeroMQ library (go-zeromq/zmq4, pure Go); remove the key(s) or put the socket behind a TLS tunnel", strings.Join(keys, ", "))
}

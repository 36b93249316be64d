package netloop

import (
	"errors"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/proto/record"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// errorText is what the reference replies to a record it cannot use.
const errorText = "incorrect message format"

// recordPool holds the records handed to the spool: Append is called
// through an interface, so a record on the stack would escape to the heap
// on every call; a field per connection would make every idle vehicle
// bigger.
var recordPool = sync.Pool{New: func() any { return new(spool.Record) }}

// onRecord takes one binary message through three steps: admit (may the
// connection take another record now), decode (is it a record to keep; any
// other message is answered there) and accept (into the spool, its ack
// queued). What a message gets: an ack once durable, an ack at once
// (nothing to keep), an error reply, or nothing (over the rate limit).
func (c *conn) onRecord(msg []byte, now time.Time) gnet.Action {
	recordsReceived.Inc()
	bytesReceived.Add(len(msg))
	c.st.received(len(msg), now)
	if ok, act := c.admit(msg, now); !ok {
		return act
	}
	var env envelope.Envelope
	tm, signals, keep := c.decode(msg, &env)
	if !keep {
		return gnet.None
	}
	return c.accept(&env, tm, signals, now)
}

// admit says whether the connection takes another record. Past the rate
// limit the record is dropped without an ack (the vehicle resends later);
// with MaxInFlight replies waiting the connection is shed.
func (c *conn) admit(msg []byte, now time.Time) (bool, gnet.Action) {
	if rl := c.srv.opts.RateLimit; rl.Limit > 0 {
		if ns := now.UnixNano(); ns-c.windowStart >= int64(rl.Interval) {
			c.windowStart, c.windowCount = ns, 0
		}
		c.windowCount++
		if c.windowCount > rl.Limit {
			recRateLimited.Inc()
			c.st.rateLimited.Add(1)
			var env envelope.Envelope
			_ = envelope.Decode(msg, &env) // for the topic label only
			c.rateLimitCounter(env.Topic).Inc()
			return false, gnet.None
		}
	}
	if c.acks.full() {
		refusedInFlightFull.Inc()
		return false, c.shed("too many records waiting for acks", reasonInFlightFull)
	}
	return true, gnet.None
}

// decode reads msg's envelope into env and checks it: its type, its
// sender, whether some sink takes its topic, its payload. A record to keep
// is reported with its topic's metrics and its signal count; every other
// message is answered here, as the reference answers it (an error reply,
// or an ack at once when there is nothing to keep).
func (c *conn) decode(msg []byte, env *envelope.Envelope) (tm *topicMetrics, signals int, keep bool) {
	if err := envelope.Decode(msg, env); err != nil {
		recBadEnvelope.Inc()
		c.replyError(nil, nil)
		return nil, 0, false
	}
	switch {
	case env.Type == envelope.TypeStreamAck:
		// An ack sent by the vehicle. As the reference: one ack, the
		// txid echoed, the topic left empty.
		recClientAck.Inc()
		countUnknownMessageType(env.Type)
		c.ackNow(env.TxID, nil, env.MessageID)
		return nil, 0, false
	case env.Type != envelope.TypeStream || !env.HasMessage:
		// As the reference: one ack with neither txid nor topic.
		recEmptyEnvelope.Inc()
		countUnknownMessageType(env.Type)
		c.ackNow(nil, nil, nil)
		return nil, 0, false
	}
	// A sender_id naming another vehicle is counted and never trusted:
	// the record is kept under the certificate's VIN (the spool record's
	// VIN, which the forwarders stamp into the payload), as the reference
	// dispatches it. A stolen key cannot speak for another VIN.
	foreignSender := !c.id.MatchesSender(env.Stream.SenderID)
	if foreignSender {
		senderMismatch.Inc()
		refUnauthorizedSender.Inc()
	}
	tm = metricsForTopic(env.Topic)
	if !c.srv.routed[string(env.Topic)] {
		if foreignSender {
			// As the reference: an error reply, the txid echoed.
			recSenderMismatch.Inc()
			c.replyError(env.TxID, nil)
			return nil, 0, false
		}
		// The reference counts and "dispatches" these to no sink.
		recordsUnrouted.Inc()
		tm.records.Inc()
		c.st.topics[tm.slot].Add(1)
		tm.bytes.Add(len(env.Stream.Payload))
		tm.dispatched.Inc()
		c.ackNow(env.TxID, env.Topic, env.MessageID)
		return nil, 0, false
	}
	signals, err := record.Validate(env.Topic, env.Stream.Payload)
	if err != nil {
		recBadPayload.Inc()
		// As the reference: the txid echoed, the topic left empty.
		c.replyError(env.TxID, nil)
		return nil, 0, false
	}
	return tm, signals, true
}

// accept counts a checked record, queues its ack and hands the record to
// the spool. The ack leaves once the record is durable (AckOnCommit), at
// once (AckOnReceipt), or once its sink confirmed it (a reliable topic). A
// record the spool refuses is not kept, so not acked: its ack is taken
// back and the connection shed, or, for a record the spool can never take
// (spool.ErrTooLarge), an error reply sent in its place.
func (c *conn) accept(env *envelope.Envelope, tm *topicMetrics, signals int, now time.Time) gnet.Action {
	tm.records.Inc()
	c.st.topics[tm.slot].Add(1)
	tm.bytes.Add(len(env.Stream.Payload))
	countSignals(tm, c.vinSignals, env.Topic, signals)
	wait := waitCommit
	var reliable *reliableMetrics
	onDelivery := c.srv.reliable[string(env.Topic)]
	switch {
	case onDelivery:
		wait = waitDelivery
		reliable = c.srv.reliableMetrics[string(env.Topic)]
	case c.srv.opts.AckMode == AckOnReceipt:
		wait = waitNothing
	}
	token := c.acks.pushRecordAck(env.TxID, env.Topic, env.MessageID, wait, now.UnixNano(), reliable)
	r := recordPool.Get().(*spool.Record)
	*r = spool.Record{
		ReceivedAtMs:  now.UnixMilli(),
		CreatedAtSec:  env.Stream.CreatedAt,
		VIN:           c.id.DeviceID,
		ClientVersion: c.clientVersion,
		Topic:         env.Topic,
		TxID:          env.TxID,
		Payload:       env.Stream.Payload,
	}
	err := c.srv.opts.Spool.Append(r, c, token)
	seq := r.Seq
	*r = spool.Record{} // it points into the input buffers
	recordPool.Put(r)
	if err != nil {
		c.acks.dropLast()
		if errors.Is(err, spool.ErrTooLarge) {
			// Larger than the spool commits at once: a resend would be
			// refused again, so the record is refused, not the connection.
			recTooBig.Inc()
			refRecordTooBig.Inc()
			c.replyError(env.TxID, nil)
			return gnet.None
		}
		return c.spoolRefused(err)
	}
	if onDelivery {
		c.srv.awaitDelivery(seq, c, token, reliable)
	}
	recordsSpooled.Inc()
	tm.dispatched.Inc()
	return gnet.None
}

// spoolRefused sheds the connection for a record the spool did not take:
// the vehicle resends it after it reconnects.
func (c *conn) spoolRefused(err error) gnet.Action {
	switch {
	case errors.Is(err, spool.ErrFull):
		refusedSpoolFull.Inc()
		return c.shed("spool full", reasonSpoolFull)
	case errors.Is(err, spool.ErrBusy):
		refusedSpoolBusy.Inc()
		return c.shed("spool busy", reasonSpoolBusy)
	default:
		refusedSpoolClosed.Inc()
		return c.shed("spool closed", reasonSpoolClosed)
	}
}

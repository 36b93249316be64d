package netloop

import (
	"errors"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/proto/record"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// errorText is what the reference replies to a record it cannot use.
const errorText = "incorrect message format"

// onRecord decides what one binary message gets: an ack once durable, an
// ack at once (nothing to keep), or an error reply.
func (c *conn) onRecord(msg []byte, now time.Time) gnet.Action {
	recordsReceived.Inc()
	bytesReceived.Add(len(msg))
	if rl := c.srv.opts.RateLimit; rl.Limit > 0 {
		if ns := now.UnixNano(); ns-c.windowStart >= int64(rl.Interval) {
			c.windowStart, c.windowCount = ns, 0
		}
		c.windowCount++
		if c.windowCount > rl.Limit {
			// Dropped without an ack: the vehicle resends later.
			recRateLimited.Inc()
			var env envelope.Envelope
			_ = envelope.Decode(msg, &env) // for the topic label only
			c.rateLimitCounter(env.Topic).Inc()
			return gnet.None
		}
	}
	if c.acks.full() {
		refusedInFlightFull.Inc()
		return c.shed("too many records waiting for acks", reasonInFlightFull)
	}
	var env envelope.Envelope
	if err := envelope.Decode(msg, &env); err != nil {
		recBadEnvelope.Inc()
		c.replyError(nil, nil)
		return gnet.None
	}
	switch {
	case env.Type == envelope.TypeStreamAck:
		// An ack sent by the vehicle. As the reference: one ack, the
		// txid echoed, the topic left empty.
		recClientAck.Inc()
		countUnknownMessageType(env.Type)
		c.ackNow(env.TxID, nil, env.MessageID)
		return gnet.None
	case env.Type != envelope.TypeStream || !env.HasMessage:
		// As the reference: one ack with neither txid nor topic.
		recEmptyEnvelope.Inc()
		countUnknownMessageType(env.Type)
		c.ackNow(nil, nil, nil)
		return gnet.None
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
	tm := metricsForTopic(env.Topic)
	if !c.srv.routed[string(env.Topic)] {
		if foreignSender {
			// As the reference: an error reply, the txid echoed.
			recSenderMismatch.Inc()
			c.replyError(env.TxID, nil)
			return gnet.None
		}
		// The reference counts and "dispatches" these to no sink.
		recordsUnrouted.Inc()
		tm.records.Inc()
		tm.bytes.Add(len(env.Stream.Payload))
		tm.dispatched.Inc()
		c.ackNow(env.TxID, env.Topic, env.MessageID)
		return gnet.None
	}
	signals, err := record.Validate(env.Topic, env.Stream.Payload)
	if err != nil {
		recBadPayload.Inc()
		// As the reference: the txid echoed, the topic left empty.
		c.replyError(env.TxID, nil)
		return gnet.None
	}
	tm.records.Inc()
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
	r := spool.Record{
		ReceivedAtMs:  now.UnixMilli(),
		CreatedAtSec:  env.Stream.CreatedAt,
		VIN:           c.id.DeviceID,
		ClientVersion: c.clientVersion,
		Topic:         env.Topic,
		TxID:          env.TxID,
		Payload:       env.Stream.Payload,
	}
	if err := c.srv.opts.Spool.Append(&r, c, token); err != nil {
		// Not kept, so not acked: drop the reply we queued for it.
		c.acks.dropLast()
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
	if onDelivery {
		c.srv.awaitDelivery(r.Seq, c, token, reliable)
	}
	recordsSpooled.Inc()
	tm.dispatched.Inc()
	return gnet.None
}

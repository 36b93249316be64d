package netloop

import (
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/wsframe"
)

type pendingReply struct {
	end        int   // offset in replies just past this reply's frame
	receivedAt int64 // unix ns, for the ack latency histogram
	ready      bool
	// onDelivery: the ack waits for the sink's confirmation, not the commit.
	onDelivery bool
	// reliable counts the ack once delivery releases it.
	reliable *reliableMetrics
}

// commitNote tells the loop that a record's commit finished (err says how)
// or, with delivered, that its sink confirmed it.
type commitNote struct {
	token     uint64
	err       error
	delivered bool
}

// queueReply encodes an ack (or, with isError, an error reply carrying
// text) behind the replies already queued. It is ready unless the caller
// marks it pending.
func (c *conn) queueReply(txid, topic, messageID []byte, isError bool, text string) {
	var tmp [256]byte
	var body []byte
	if isError {
		body = envelope.AppendError(tmp[:0], txid, topic, text)
		errorReplies.Inc()
		refUnexpectedRecordErr.Inc()
	} else {
		body = envelope.AppendAck(tmp[:0], txid, topic, messageID)
	}
	c.reserveReplies(len(body))
	c.replies = wsframe.AppendFrame(c.replies, ws.OpBinary, true, body)
	c.queue = append(c.queue, pendingReply{end: len(c.replies), ready: true})
}

// reserveReplies makes room for one more frame with a payload of n bytes
// behind the queued replies, taking a pooled buffer once they outgrow
// keepBufferBytes (flush gives it back when they are all written).
func (c *conn) reserveReplies(n int) {
	need := len(c.replies) + n + ws.MaxHeaderSize
	if need <= cap(c.replies) || need <= keepBufferBytes {
		return // AppendFrame grows small buffers itself
	}
	nb := getBuffer(max(need, 2*cap(c.replies)))[:len(c.replies)]
	copy(nb, c.replies)
	putBuffer(c.replies)
	c.replies = nb
}

// Committed implements spool.Waiter. It runs on the spool's committer
// goroutine: it only posts to the mailbox and wakes the loop once (and,
// for a failed commit, drops any delivery wait on the record).
func (c *conn) Committed(token uint64, seq uint64, err error) {
	if err != nil {
		c.srv.forgetDelivery(seq)
	}
	c.post(commitNote{token: token, err: err})
}

// post hands a note to the connection's loop, waking it once.
func (c *conn) post(n commitNote) {
	c.mbMu.Lock()
	c.mailbox = append(c.mailbox, n)
	wake := !c.wakeQueued
	c.wakeQueued = true
	c.mbMu.Unlock()
	if wake {
		_ = c.gc.Wake(nil)
	}
}

func (c *conn) drainMailbox() gnet.Action {
	c.mbMu.Lock()
	notes := c.mailbox
	c.mailbox = c.mbSpare[:0]
	c.wakeQueued = false
	c.mbMu.Unlock()
	// mbSpare is the loop's alone (post only touches mailbox): the drained
	// slice becomes the next spare, unless it grew large.
	c.mbSpare = nil
	if cap(notes) <= 1024 {
		c.mbSpare = notes[:0]
	}
	act := gnet.None
	for _, n := range notes {
		if n.err != nil {
			// Not durable: never ack it. The vehicle resends after it
			// reconnects.
			refusedSpoolCommitFailed.Inc()
			c.srv.log.Warn("spool commit failed; closing connection", "vin", c.id.DeviceID, "err", n.err)
			act = c.shed("spool commit failed", reasonSpoolCommitFailed)
			break
		}
		if i := n.token - c.headToken; i < uint64(len(c.queue)) {
			if n.delivered || !c.queue[i].onDelivery {
				if n.delivered && !c.queue[i].ready {
					c.queue[i].reliable.acked()
				}
				c.queue[i].ready = true
			}
		}
	}
	return act
}

// flush writes every reply at the head of the queue that may leave, in one
// TLS write.
func (c *conn) flush(now time.Time) gnet.Action {
	k := 0
	for k < len(c.queue) && c.queue[k].ready {
		k++
	}
	if k == 0 {
		return gnet.None
	}
	end := c.queue[k-1].end
	if _, err := c.writePlain(c.replies[:end]); err != nil {
		refSocketErr.Inc()
		return gnet.Close
	}
	nowNs := now.UnixNano()
	acks := 0
	for _, r := range c.queue[:k] {
		if r.receivedAt > 0 {
			acks++
			ackLatencySeconds.Update(float64(nowNs-r.receivedAt) / 1e9)
		}
	}
	recordsAcked.Add(acks)
	rest := copy(c.replies, c.replies[end:])
	c.replies = c.replies[:rest]
	m := copy(c.queue, c.queue[k:])
	c.queue = c.queue[:m]
	for i := range c.queue {
		c.queue[i].end -= end
	}
	c.headToken += uint64(k)
	if m == 0 {
		if cap(c.replies) > keepBufferBytes {
			putBuffer(c.replies)
			c.replies = nil
		}
		if cap(c.queue) > keepBufferBytes/16 {
			c.queue = nil
		}
	}
	return gnet.None
}

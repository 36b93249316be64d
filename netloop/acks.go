package netloop

import (
	"sync"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/wsframe"
)

// ackQueue holds one connection's replies (acks, error replies, pongs),
// encoded as WebSocket frames, in the order their records arrived. A reply
// leaves only with every reply queued before it: a vehicle that sees the
// ack of its record n knows that records 1..n were taken, whatever order
// their commits and sink confirmations came back in.
//
// Every reply has a token, its arrival number on the connection; commits
// and deliveries name the reply they release by it. Tokens of replies that
// already left (or were never queued) are ignored. Loop only; the steady
// state allocates nothing.
type ackQueue struct {
	frames []byte    // the encoded frames, oldest first
	slots  []ackSlot // one per reply, oldest first
	head   uint64    // token of slots[0]
	limit  int       // most replies held at once (Options.MaxInFlight)
}

type ackSlot struct {
	end        int   // offset in frames just past this reply's frame
	receivedAt int64 // unix ns for a kept record's ack (latency histogram), else 0
	ready      bool  // may leave once every reply before it has
	// onDelivery: the ack waits for the sink's confirmation, not the commit.
	onDelivery bool
	// reliable counts the ack once delivery releases it.
	reliable *reliableMetrics
}

// ackWait says what the ack of a record handed to the spool waits for.
type ackWait uint8

const (
	waitNothing  ackWait = iota // AckOnReceipt: it may leave at once
	waitCommit                  // the spool commit holding the record
	waitDelivery                // the sink's confirmation (a reliable topic)
)

func newAckQueue(limit int) ackQueue { return ackQueue{limit: limit} }

// len is the number of replies queued.
func (q *ackQueue) len() int { return len(q.slots) }

// full says that no more replies may be queued (a vehicle past it is shed).
func (q *ackQueue) full() bool { return len(q.slots) >= q.limit }

// next is the token the next queued reply gets.
func (q *ackQueue) next() uint64 { return q.head + uint64(len(q.slots)) }

// held is the memory the encoded replies take.
func (q *ackQueue) held() int { return cap(q.frames) }

// pushAck queues an ack that may leave at once and returns its token.
func (q *ackQueue) pushAck(txid, topic, messageID []byte) uint64 {
	var tmp [256]byte
	return q.push(ws.OpBinary, envelope.AppendAck(tmp[:0], txid, topic, messageID), ackSlot{ready: true})
}

// pushError queues an error reply carrying text that may leave at once and
// returns its token.
func (q *ackQueue) pushError(txid, topic []byte, text string) uint64 {
	var tmp [256]byte
	return q.push(ws.OpBinary, envelope.AppendError(tmp[:0], txid, topic, text), ackSlot{ready: true})
}

// pushPong queues the answer to a ping, which may leave at once.
func (q *ackQueue) pushPong(payload []byte) uint64 {
	return q.push(ws.OpPong, payload, ackSlot{ready: true})
}

// pushRecordAck queues the ack of a record handed to the spool, received
// at receivedAt (unix ns), which leaves once wait is over; m counts it when
// a delivery releases it. It returns the ack's token.
func (q *ackQueue) pushRecordAck(txid, topic, messageID []byte, wait ackWait, receivedAt int64, m *reliableMetrics) uint64 {
	var tmp [256]byte
	s := ackSlot{receivedAt: receivedAt, ready: wait == waitNothing, onDelivery: wait == waitDelivery}
	if s.onDelivery {
		s.reliable = m
	}
	return q.push(ws.OpBinary, envelope.AppendAck(tmp[:0], txid, topic, messageID), s)
}

func (q *ackQueue) push(op ws.OpCode, payload []byte, s ackSlot) uint64 {
	q.reserve(len(payload))
	q.frames = wsframe.AppendFrame(q.frames, op, true, payload)
	s.end = len(q.frames)
	q.slots = append(q.slots, s)
	return q.next() - 1
}

// reserve makes room for one more frame with a payload of n bytes behind
// the queued ones, taking a pooled buffer once they outgrow keepBufferBytes
// (sent gives it back when they have all left).
func (q *ackQueue) reserve(n int) {
	need := len(q.frames) + n + ws.MaxHeaderSize
	if need <= cap(q.frames) || need <= keepBufferBytes {
		return // AppendFrame grows small buffers itself
	}
	nb := getBuffer(max(need, 2*cap(q.frames)))[:len(q.frames)]
	copy(nb, q.frames)
	putBuffer(q.frames)
	q.frames = nb
}

// dropLast takes back the reply queued last (its record was not kept).
func (q *ackQueue) dropLast() {
	q.slots = q.slots[:len(q.slots)-1]
	prevEnd := 0
	if len(q.slots) > 0 {
		prevEnd = q.slots[len(q.slots)-1].end
	}
	q.frames = q.frames[:prevEnd]
}

// committed releases the ack of token's record, whose commit is durable,
// unless it waits for its sink.
func (q *ackQueue) committed(token uint64) {
	if i := token - q.head; i < uint64(len(q.slots)) && !q.slots[i].onDelivery {
		q.slots[i].ready = true
	}
}

// delivered releases the ack of token's record, which its sink confirmed.
func (q *ackQueue) delivered(token uint64) {
	if i := token - q.head; i < uint64(len(q.slots)) {
		if !q.slots[i].ready {
			q.slots[i].reliable.acked()
		}
		q.slots[i].ready = true
	}
}

// leaving returns the frames of the replies at the head that may leave,
// and how many replies they are. They stay queued until sent.
func (q *ackQueue) leaving() ([]byte, int) {
	k := 0
	for k < len(q.slots) && q.slots[k].ready {
		k++
	}
	if k == 0 {
		return nil, 0
	}
	return q.frames[:q.slots[k-1].end], k
}

// sent drops the first k replies, which were written at now, counting the
// acks of kept records. Emptied buffers larger than keepBufferBytes are
// released so an idle vehicle stays small.
func (q *ackQueue) sent(k int, now time.Time) {
	end := q.slots[k-1].end
	nowNs := now.UnixNano()
	acks := 0
	for _, s := range q.slots[:k] {
		if s.receivedAt > 0 {
			acks++
			ackLatencySeconds.Update(float64(nowNs-s.receivedAt) / 1e9)
		}
	}
	recordsAcked.Add(acks)
	rest := copy(q.frames, q.frames[end:])
	q.frames = q.frames[:rest]
	m := copy(q.slots, q.slots[k:])
	q.slots = q.slots[:m]
	for i := range q.slots {
		q.slots[i].end -= end
	}
	q.head += uint64(k)
	if m == 0 {
		if cap(q.frames) > keepBufferBytes {
			putBuffer(q.frames)
			q.frames = nil
		}
		if cap(q.slots) > keepBufferBytes/16 {
			q.slots = nil
		}
	}
}

// clear drops every reply (the connection closed).
func (q *ackQueue) clear() {
	q.frames = nil
	q.slots = nil
}

// commitNote tells the loop that a record's commit finished (err says how)
// or, with delivered, that its sink confirmed it.
type commitNote struct {
	token     uint64
	err       error
	delivered bool
}

// mailbox carries commit notes from other goroutines (the spool's
// committer, Server.Delivered) to the connection's loop.
type mailbox struct {
	mu         sync.Mutex
	notes      []commitNote
	wakeQueued bool
	spare      []commitNote // loop only
}

// put adds n and says whether the loop must be woken: once until it takes
// the notes.
func (m *mailbox) put(n commitNote) (wake bool) {
	m.mu.Lock()
	m.notes = append(m.notes, n)
	wake = !m.wakeQueued
	m.wakeQueued = true
	m.mu.Unlock()
	return wake
}

// take returns the notes posted since the last take. Loop only; the slice
// is valid until the next take.
func (m *mailbox) take() []commitNote {
	m.mu.Lock()
	notes := m.notes
	m.notes = m.spare[:0]
	m.wakeQueued = false
	m.mu.Unlock()
	// spare is the loop's alone (put only touches notes): the drained
	// slice becomes the next spare, unless it grew large.
	m.spare = nil
	if cap(notes) <= 1024 {
		m.spare = notes[:0]
	}
	return notes
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
	if c.mb.put(n) {
		_ = c.gc.Wake(nil)
	}
}

// drainMailbox applies the commit notes to the ack queue. A failed commit
// sheds the connection: its record is not durable and is never acked.
func (c *conn) drainMailbox() gnet.Action {
	for _, n := range c.mb.take() {
		if n.err != nil {
			// The vehicle resends it after it reconnects.
			refusedSpoolCommitFailed.Inc()
			c.srv.log.Warn("spool commit failed; closing connection", "vin", c.id.DeviceID, "err", n.err)
			return c.shed("spool commit failed", reasonSpoolCommitFailed)
		}
		if n.delivered {
			c.acks.delivered(n.token)
		} else {
			c.acks.committed(n.token)
		}
	}
	return gnet.None
}

// flush writes every reply at the head of the queue that may leave, in one
// TLS write.
func (c *conn) flush(now time.Time) gnet.Action {
	out, k := c.acks.leaving()
	if k == 0 {
		return gnet.None
	}
	if _, err := c.writePlain(out); err != nil {
		refSocketErr.Inc()
		return gnet.Close
	}
	c.acks.sent(k, now)
	return gnet.None
}

// ackNow queues an ack that may leave at once.
func (c *conn) ackNow(txid, topic, messageID []byte) {
	c.acks.pushAck(txid, topic, messageID)
}

// replyError queues the reference's error reply, echoing txid and topic.
func (c *conn) replyError(txid, topic []byte) {
	errorReplies.Inc()
	refUnexpectedRecordErr.Inc()
	if c.st != nil {
		c.st.refused.Add(1)
	}
	c.acks.pushError(txid, topic, errorText)
}

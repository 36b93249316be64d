package netloop

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/wsframe"
)

// replyKind is what a reply in the model is.
type replyKind uint8

const (
	kindAck    replyKind = iota // an ack that may leave at once (unrouted, client ack)
	kindError                   // an error reply
	kindPong                    // the answer to a ping
	kindRecord                  // the ack of a record handed to the spool
)

// modelReply is one reply as the test expects it: its frame, what releases
// it, and which of those notes the queue has been given so far.
type modelReply struct {
	kind      replyKind
	wait      ackWait
	failed    bool // its commit fails: no note ever releases it
	frame     []byte
	token     uint64
	committed bool
	delivered bool
}

func (m *modelReply) mayLeave() bool {
	if m.kind != kindRecord {
		return true
	}
	switch m.wait {
	case waitCommit:
		return m.committed
	case waitDelivery:
		return m.delivered
	}
	return true
}

// noteEvent is a commit or a delivery still to come back for reply i.
type noteEvent struct {
	i         int
	delivered bool
}

// push queues m's reply and returns its frame as encoded independently of
// the queue.
func pushModel(q *ackQueue, m *modelReply, i int, rm *reliableMetrics, r *rand.Rand) {
	// Ids of varied length move the frame boundaries and, over a trial,
	// grow the queue past keepBufferBytes.
	txid := []byte(fmt.Sprintf("tx-%d-%s", i, strings.Repeat("x", r.IntN(200))))
	topic, mid := []byte("V"), []byte(fmt.Sprintf("m-%d", i))
	switch m.kind {
	case kindAck:
		m.token = q.pushAck(txid, topic, mid)
		m.frame = wsframe.AppendFrame(nil, ws.OpBinary, true, envelope.AppendAck(nil, txid, topic, mid))
	case kindError:
		m.token = q.pushError(txid, nil, errorText)
		m.frame = wsframe.AppendFrame(nil, ws.OpBinary, true, envelope.AppendError(nil, txid, nil, errorText))
	case kindPong:
		payload := txid[:min(len(txid), 125)]
		m.token = q.pushPong(payload)
		m.frame = wsframe.AppendFrame(nil, ws.OpPong, true, payload)
	case kindRecord:
		m.token = q.pushRecordAck(txid, topic, mid, m.wait, time.Now().UnixNano(), rm)
		m.frame = wsframe.AppendFrame(nil, ws.OpBinary, true, envelope.AppendAck(nil, txid, topic, mid))
	}
}

// TestAckQueueLeavesInArrivalOrder is the queue's property: over random
// mixes of replies and random orders of arrivals, commits, deliveries
// (before or after their commit, repeated, or for replies that already
// left) and flushes, the bytes that leave are the replies' frames in
// arrival order; a reply leaves only once what it waits for came back and
// every reply before it left; each flush takes every reply that may
// leave; and a failed commit holds back its reply and all behind it.
func TestAckQueueLeavesInArrivalOrder(t *testing.T) {
	rm := newReliableMetrics("ack_queue_test", "test")
	trials := 3000
	if testing.Short() {
		trials = 300
	}
	for trial := range trials {
		r := rand.New(rand.NewPCG(uint64(trial), 19))
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("trial %d: "+format, append([]any{trial}, args...)...)
		}
		n := 1 + r.IntN(60)
		model := make([]modelReply, n)
		failures := 0
		for i := range model {
			m := &model[i]
			m.kind = replyKind(r.IntN(4))
			if m.kind == kindRecord {
				m.wait = ackWait(r.IntN(3))
				m.failed = m.wait != waitNothing && r.IntN(20) == 0
				if m.failed {
					failures++
				}
			}
		}
		q := newAckQueue(n)
		ackedBefore := rm.ack.Get()
		var notes []noteEvent
		arrived, left, deliveredFirst := 0, 0, 0
		flush := func() {
			t.Helper()
			out, k := q.leaving()
			var want []byte
			for i := left; i < left+k; i++ {
				if !model[i].mayLeave() {
					fail("reply %d (kind %d, wait %d) left before what it waits for", i, model[i].kind, model[i].wait)
				}
				want = append(want, model[i].frame...)
			}
			if !bytes.Equal(out, want) {
				fail("replies %d..%d: the bytes leaving are not their frames in arrival order", left, left+k)
			}
			if left+k < arrived && model[left+k].mayLeave() {
				fail("reply %d may leave but the flush stopped before it", left+k)
			}
			if k > 0 {
				q.sent(k, time.Now())
				left += k
			}
			if q.len() != arrived-left {
				fail("queue holds %d replies, want %d", q.len(), arrived-left)
			}
		}
		for arrived < n || len(notes) > 0 {
			switch x := r.IntN(10); {
			case x < 4 && arrived < n:
				i := arrived
				m := &model[i]
				if q.next() != uint64(i) {
					fail("next token %d, want %d", q.next(), i)
				}
				pushModel(&q, m, i, rm, r)
				if m.token != uint64(i) {
					fail("token %d for reply %d", m.token, i)
				}
				arrived++
				if m.kind == kindRecord && !m.failed {
					// The spool reports every commit, also for acks that
					// do not wait for it.
					notes = append(notes, noteEvent{i: i})
					if m.wait == waitDelivery {
						notes = append(notes, noteEvent{i: i, delivered: true})
					}
				}
			case x < 8 && len(notes) > 0:
				j := r.IntN(len(notes))
				e := notes[j]
				notes[j] = notes[len(notes)-1]
				notes = notes[:len(notes)-1]
				m := &model[e.i]
				if e.delivered {
					if !m.delivered {
						deliveredFirst++
					}
					m.delivered = true
					q.delivered(m.token)
				} else {
					m.committed = true
					q.committed(m.token)
				}
				if r.IntN(8) == 0 {
					// The same note again: no effect on a reply that left
					// or was already released.
					notes = append(notes, e)
				}
			case x == 8 && left > 0:
				// A note for a reply that already left is ignored.
				stale := model[r.IntN(left)].token
				q.committed(stale)
				q.delivered(stale)
			default:
				flush()
			}
		}
		flush()
		want := n
		for i := range model {
			if model[i].failed {
				want = i
				break
			}
		}
		if left != want {
			fail("%d of %d replies left, want %d (failed commits: %d)", left, n, want, failures)
		}
		if failures == 0 && (q.len() != 0 || q.held() > keepBufferBytes) {
			fail("an emptied queue holds %d replies, %d bytes", q.len(), q.held())
		}
		if got := rm.ack.Get() - ackedBefore; got != uint64(deliveredFirst) {
			fail("reliable_ack counted %d, want %d (one per ack a delivery released)", got, deliveredFirst)
		}
	}
}

// TestAckQueueRepliesAtOnce: error replies, pongs and acks of records not
// kept leave at the next flush, in one write, unless a reply queued before
// them still waits.
func TestAckQueueRepliesAtOnce(t *testing.T) {
	q := newAckQueue(10)
	q.pushError([]byte("t1"), nil, errorText)
	q.pushPong([]byte("ping"))
	q.pushAck(nil, nil, nil)
	out, k := q.leaving()
	if k != 3 {
		t.Fatalf("%d replies may leave, want 3", k)
	}
	want := wsframe.AppendFrame(nil, ws.OpBinary, true, envelope.AppendError(nil, []byte("t1"), nil, errorText))
	want = wsframe.AppendFrame(want, ws.OpPong, true, []byte("ping"))
	want = wsframe.AppendFrame(want, ws.OpBinary, true, envelope.AppendAck(nil, nil, nil, nil))
	if !bytes.Equal(out, want) {
		t.Fatalf("leaving %x, want %x", out, want)
	}
	q.sent(k, time.Now())

	rec := q.pushRecordAck([]byte("t2"), []byte("V"), nil, waitCommit, time.Now().UnixNano(), nil)
	q.pushError([]byte("t3"), nil, errorText)
	q.pushPong(nil)
	if _, k := q.leaving(); k != 0 {
		t.Fatalf("%d replies leave ahead of an ack waiting for its commit", k)
	}
	q.committed(rec)
	if _, k := q.leaving(); k != 3 {
		t.Fatalf("after the commit %d replies may leave, want 3", k)
	}
}

// TestAckQueueFailedCommit: a record whose commit failed is never acked,
// and neither is anything behind it; what was queued before it leaves.
func TestAckQueueFailedCommit(t *testing.T) {
	q := newAckQueue(10)
	a := q.pushRecordAck([]byte("a"), []byte("V"), nil, waitCommit, 1, nil)
	b := q.pushRecordAck([]byte("b"), []byte("V"), nil, waitCommit, 1, nil) // its commit fails
	c := q.pushRecordAck([]byte("c"), []byte("V"), nil, waitCommit, 1, nil)
	q.pushError([]byte("d"), nil, errorText)
	q.committed(c)
	q.committed(a)
	out, k := q.leaving()
	if k != 1 || !bytes.Equal(out, wsframe.AppendFrame(nil, ws.OpBinary, true, envelope.AppendAck(nil, []byte("a"), []byte("V"), nil))) {
		t.Fatalf("%d replies leave (%x), want a's ack alone", k, out)
	}
	q.sent(k, time.Now())
	q.delivered(b + 100) // a note for no queued reply
	if _, k := q.leaving(); k != 0 {
		t.Fatalf("%d replies leave behind a failed commit", k)
	}
}

// TestAckQueueDeliveryWaitsPastCommit: the ack of a reliable topic's record
// ignores its commit and leaves on its delivery, counted once.
func TestAckQueueDeliveryWaitsPastCommit(t *testing.T) {
	rm := newReliableMetrics("ack_queue_delivery_test", "test")
	q := newAckQueue(10)
	tok := q.pushRecordAck([]byte("r"), []byte("V"), nil, waitDelivery, 1, rm)
	q.committed(tok)
	if _, k := q.leaving(); k != 0 {
		t.Fatal("a reliable ack left on its commit")
	}
	q.delivered(tok)
	q.delivered(tok)
	if _, k := q.leaving(); k != 1 {
		t.Fatal("a reliable ack did not leave on its delivery")
	}
	if got := rm.ack.Get(); got != 1 {
		t.Fatalf("reliable_ack %d, want 1", got)
	}
}

// TestAckQueueInFlightCap: the queue is full at its limit, whatever the
// replies are, and has room again once some have left.
func TestAckQueueInFlightCap(t *testing.T) {
	q := newAckQueue(3)
	q.pushPong(nil)
	tok := q.pushRecordAck([]byte("a"), []byte("V"), nil, waitCommit, 1, nil)
	if q.full() {
		t.Fatal("full with 2 of 3")
	}
	q.pushError(nil, nil, errorText)
	if !q.full() {
		t.Fatal("not full with 3 of 3")
	}
	_, k := q.leaving()
	q.sent(k, time.Now())
	if q.full() || q.len() != 2 {
		t.Fatalf("%d queued, full=%v after the pong left; want 2 and room for one", q.len(), q.full())
	}
	q.pushPong(nil) // ready, but behind the waiting ack it still counts
	if !q.full() {
		t.Fatal("not full with 3 of 3")
	}
	if _, k := q.leaving(); k != 0 {
		t.Fatalf("%d replies leave ahead of the waiting ack", k)
	}
	q.committed(tok)
	_, k = q.leaving()
	q.sent(k, time.Now())
	if q.full() || q.len() != 0 {
		t.Fatalf("%d queued, full=%v after everything left", q.len(), q.full())
	}
}

// TestAckQueueDropLast: a record the spool refused takes its ack back;
// the replies before it are untouched and its token is the next one's.
func TestAckQueueDropLast(t *testing.T) {
	q := newAckQueue(10)
	q.pushAck([]byte("a"), nil, nil)
	before := append([]byte(nil), q.frames...)
	tok := q.pushRecordAck([]byte("b"), []byte("V"), nil, waitCommit, 1, nil)
	q.dropLast()
	if q.len() != 1 || !bytes.Equal(q.frames, before) || q.next() != tok {
		t.Fatalf("after dropLast: %d replies, frames %x (want %x), next token %d (want %d)", q.len(), q.frames, before, q.next(), tok)
	}
	q.dropLast()
	if q.len() != 0 || len(q.frames) != 0 {
		t.Fatal("dropping the only reply left something queued")
	}
}

// TestZeroAllocs: the ack queue's cycle on the hot path (an ack queued, a
// pong, the commit, the write) allocates nothing in steady state. (The
// name is the one make test runs without -race.)
func TestZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts: run without -race (make test does)")
	}
	q := newAckQueue(1 << 20)
	txid, topic, mid := []byte("txid-0123456789"), []byte("V"), []byte("m-1")
	now := time.Now()
	cycle := func() {
		tok := q.pushRecordAck(txid, topic, mid, waitCommit, 1, nil)
		q.pushPong(txid)
		q.committed(tok)
		_, k := q.leaving()
		q.sent(k, now)
	}
	cycle()
	if a := testing.AllocsPerRun(1000, cycle); a != 0 {
		t.Fatalf("%v allocations per ack cycle", a)
	}
}

// numberedRecords returns a record of vinA per topic, their txids
// prefix-0, prefix-1, ...
func numberedRecords(prefix string, topics ...string) []*envelope.StreamMessage {
	ms := make([]*envelope.StreamMessage, len(topics))
	for i, topic := range topics {
		ms[i] = newRecord(vinA, topic, fmt.Sprintf("%s-%d", prefix, i))
	}
	return ms
}

// expectShed fails unless what the vehicle reads next is close 1013.
func expectShed(t *testing.T, c *vehicle.Client) {
	t.Helper()
	r, err := c.ReadReply(5 * time.Second)
	var ce *vehicle.CloseError
	if !errors.As(err, &ce) || ce.Code != statusTryAgainLater {
		t.Fatalf("got %+v, %v; want close 1013", r, err)
	}
}

// TestAcksFollowArrivalNotDelivery: through a real server, acks of a
// reliable topic's records and of records acked on commit leave in the
// order the records were sent, whatever order the sink confirms them in.
func TestAcksFollowArrivalNotDelivery(t *testing.T) {
	e := newTestEnv(t, allTopics, func(o *Options) { o.ReliableTopics = []string{"V"} })
	c := e.dial(t, vinA)
	topics := []string{"V", "alerts", "V", "V", "errors", "V"}
	c.SendMany(numberedRecords("order", topics...))
	waitFor(t, func() bool { return len(spooled(t, e.sp)) == len(topics) })
	var reliable []uint64
	for _, r := range spooled(t, e.sp) {
		if string(r.Topic) == "V" {
			reliable = append(reliable, r.Seq)
		}
	}
	// Confirm all but the first, last first: nothing may leave yet.
	for i := len(reliable) - 1; i > 0; i-- {
		e.srv.Delivered(reliable[i])
	}
	expectNoReply(t, c, 300*time.Millisecond)
	e.srv.Delivered(reliable[0])
	for i, topic := range topics {
		expectAck(t, c, fmt.Sprintf("order-%d", i), topic)
	}
}

// TestInFlightCapSheds: a vehicle with MaxInFlight acks waiting is shed
// with 1013 at the next record, and the records waiting are not acked.
func TestInFlightCapSheds(t *testing.T) {
	e := newTestEnv(t, allTopics, func(o *Options) {
		o.ReliableTopics = []string{"V"}
		o.MaxInFlight = 3
	})
	before := refusedInFlightFull.Get()
	c := e.dial(t, vinA)
	c.SendMany(numberedRecords("cap", "V", "V", "V", "V"))
	expectShed(t, c)
	if got := refusedInFlightFull.Get() - before; got != 1 {
		t.Fatalf("in_flight_full counted %d, want 1", got)
	}
}

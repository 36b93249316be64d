package spool

// Per-topic commit tracking: a consumer of one topic (a forwarder lane)
// learns whether the topic has committed records beyond its cursor without
// reading, and waits for a commit that holds one of them, not for every
// commit. On a busy spool with several topics this spares the idle lanes a
// wake-up and a scan per commit, which on a one-core host is CPU taken
// from the event loop and the committer.

import (
	"sync/atomic"
)

// maxTrackedTopics bounds the topics tracked; records of others are
// treated as possibly of any topic (LastSeq, Committed).
const maxTrackedTopics = 256

// topicState is one tracked topic.
type topicState struct {
	pending   uint64 // last seq appended (under Spool.mu)
	published uint64 // pending as of the last batch taken for commit (under Spool.mu)
	committed atomic.Uint64
	notify    atomic.Pointer[chan struct{}]
}

// topicMark is a topic with records in the batch being committed.
type topicMark struct {
	t   *topicState
	seq uint64
}

type topicTable struct {
	byName atomic.Pointer[map[string]*topicState] // copy-on-write under Spool.mu
	// overflow is set once a topic could not be tracked; its waiters
	// wait for any commit.
	overflow atomic.Bool
	// openHWM is the last seq at the last (re)open: records up to it
	// were not seen by Append, so their topics are unknown.
	openHWM atomic.Uint64
	marks   []topicMark // the batch being committed (committer only)
}

func (tt *topicTable) get(topic string) *topicState {
	if m := tt.byName.Load(); m != nil {
		return (*m)[topic]
	}
	return nil
}

// addLocked tracks topic, unless maxTrackedTopics are; nil then. Called
// with Spool.mu held.
func (tt *topicTable) addLocked(topic string) *topicState {
	old := tt.byName.Load()
	if old != nil {
		if t := (*old)[topic]; t != nil {
			return t
		}
		if len(*old) >= maxTrackedTopics {
			tt.overflow.Store(true)
			return nil
		}
	}
	m := make(map[string]*topicState, 1+lenMap(old))
	if old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	t := &topicState{}
	ch := make(chan struct{})
	t.notify.Store(&ch)
	m[topic] = t
	tt.byName.Store(&m)
	return t
}

func lenMap(m *map[string]*topicState) int {
	if m == nil {
		return 0
	}
	return len(*m)
}

// noteAppendLocked records that seq of topic is pending. Called with
// Spool.mu held; allocates only the first time a topic is seen.
func (tt *topicTable) noteAppendLocked(topic []byte, seq uint64) {
	var t *topicState
	if m := tt.byName.Load(); m != nil {
		t = (*m)[string(topic)]
	}
	if t == nil {
		if t = tt.addLocked(string(topic)); t == nil {
			return
		}
	}
	t.pending = seq
}

// takeLocked lists the topics with records in the batch now taken for
// commit. Called with Spool.mu held, by the committer.
func (tt *topicTable) takeLocked() []topicMark {
	tt.marks = tt.marks[:0]
	m := tt.byName.Load()
	if m == nil {
		return nil
	}
	for _, t := range *m {
		if t.pending != t.published {
			t.published = t.pending
			tt.marks = append(tt.marks, topicMark{t, t.pending})
		}
	}
	return tt.marks
}

// publish makes a committed batch's topics visible. It runs before the
// spool's committed seq moves, so that a reader who sees LastSeq() == n
// also sees every topic's records up to n.
func publish(marks []topicMark) {
	for _, k := range marks {
		if k.seq > k.t.committed.Load() {
			k.t.committed.Store(k.seq)
		}
	}
}

// signal wakes the waiters of the topics in marks.
func signalTopics(marks []topicMark) {
	for _, k := range marks {
		k.t.signal()
	}
}

// signalAll wakes every topic's waiters.
func (tt *topicTable) signalAll() {
	if m := tt.byName.Load(); m != nil {
		for _, t := range *m {
			t.signal()
		}
	}
}

func (t *topicState) signal() {
	ch := make(chan struct{})
	close(*t.notify.Swap(&ch))
}

// closeAll closes every topic's channel for good (Close).
func (tt *topicTable) closeAll() {
	if m := tt.byName.Load(); m != nil {
		for _, t := range *m {
			close(*t.notify.Load())
		}
	}
}

// TopicLastSeq returns a seq no smaller than that of the last committed
// record of topic: a consumer whose cursor is at or beyond it has nothing
// of topic to read. Read LastSeq before it: then, when TopicLastSeq is at
// most the cursor, no record of topic lies between the cursor and that
// LastSeq, and the cursor may move there without a read.
//
// Records committed before the spool was (re)opened are of unknown topic,
// so the answer is never below the seq the spool opened with; once more
// than 256 topics were seen, untracked topics answer LastSeq.
func (s *Spool) TopicLastSeq(topic string) uint64 {
	open := s.topics.openHWM.Load()
	if t := s.topics.get(topic); t != nil {
		return max(open, t.committed.Load())
	}
	if s.topics.overflow.Load() {
		return s.LastSeq()
	}
	// Not seen since the open, so none of its records were committed
	// since: publish runs under the same commit that first holds one,
	// after Append created the entry.
	return open
}

// TopicCommitted returns a channel closed after the next commit that holds
// a record of topic (and at Close). As with Committed, take the channel
// before checking TopicLastSeq so that no commit is missed.
func (s *Spool) TopicCommitted(topic string) <-chan struct{} {
	t := s.topics.get(topic)
	if t == nil {
		s.mu.Lock()
		if !s.closed {
			t = s.topics.addLocked(topic)
		}
		s.mu.Unlock()
	}
	if t == nil {
		return s.Committed() // closed, or too many topics
	}
	return *t.notify.Load()
}

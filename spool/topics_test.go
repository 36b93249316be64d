package spool

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestTopicLastSeqNeverUnderstates checks the promise consumers skip reads
// on: with LastSeq read first, no committed record of a topic lies above
// TopicLastSeq, whatever commits run meanwhile.
func TestTopicLastSeqNeverUnderstates(t *testing.T) {
	s := openT(t, Options{Dir: t.TempDir()})
	defer s.Close()
	topics := []string{"V", "alerts", "errors", "connectivity"}
	const n = 3000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range n {
			r := testRecord(uint64(i))
			r.Topic = []byte(topics[rng.IntN(len(topics))])
			if rng.IntN(10) == 0 {
				r.Topic = []byte("V") // mostly one topic, as in service
			}
			// Small commits, many of them: each is a chance to
			// publish out of order.
			w := make(chWaiter, 1)
			if err := s.Append(r, w, 0); err != nil {
				panic(err)
			}
			if i%3 == 0 {
				<-w
			}
		}
	}()
	var violations []string
	checks := 0
	for done := false; !done; {
		last := s.LastSeq()
		bound := map[string]uint64{}
		for _, tp := range topics {
			bound[tp] = s.TopicLastSeq(tp)
		}
		for _, r := range readAll(t, s, 1) {
			if r.Seq <= last && r.Seq > bound[string(r.Topic)] {
				violations = append(violations, fmt.Sprintf("seq %d (%s) committed by LastSeq %d but TopicLastSeq %d", r.Seq, r.Topic, last, bound[string(r.Topic)]))
			}
		}
		checks++
		done = last >= n
	}
	wg.Wait()
	if len(violations) > 0 {
		t.Fatalf("%d violations in %d checks, first: %s", len(violations), checks, violations[0])
	}
	for _, tp := range topics {
		if got := s.TopicLastSeq(tp); got > n {
			t.Errorf("TopicLastSeq(%s) = %d beyond the last seq %d", tp, got, n)
		}
	}
}

// TestTopicCommittedWakesOnlyItsTopic: a waiter on one topic sleeps
// through commits of others, and wakes for its own.
func TestTopicCommittedWakesOnlyItsTopic(t *testing.T) {
	s := openT(t, Options{Dir: t.TempDir()})
	defer s.Close()
	alerts := s.TopicCommitted("alerts")
	if got := s.TopicLastSeq("alerts"); got != 0 {
		t.Fatalf("TopicLastSeq(alerts) on an empty spool = %d", got)
	}
	for i := range 20 {
		r := testRecord(uint64(i))
		w := make(chWaiter, 1)
		if err := s.Append(r, w, 0); err != nil {
			t.Fatal(err)
		}
		if rep := <-w; rep.err != nil {
			t.Fatal(rep.err)
		}
	}
	select {
	case <-alerts:
		t.Fatal("an alerts waiter woke for commits holding only V records")
	default:
	}
	if got := s.TopicLastSeq("alerts"); got != 0 {
		t.Fatalf("TopicLastSeq(alerts) after V records only = %d, want 0", got)
	}
	if got := s.TopicLastSeq("V"); got != 20 {
		t.Fatalf("TopicLastSeq(V) = %d, want 20", got)
	}
	r := testRecord(99)
	r.Topic = []byte("alerts")
	if err := s.Append(r, nil, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-alerts:
	case <-time.After(10 * time.Second):
		t.Fatal("the alerts waiter did not wake for an alerts commit")
	}
	if got := s.TopicLastSeq("alerts"); got != 21 {
		t.Fatalf("TopicLastSeq(alerts) = %d, want 21", got)
	}
}

// TestTopicLastSeqAfterReopen: records from before an open are of unknown
// topic, so every topic answers at least the seq the spool opened with.
func TestTopicLastSeqAfterReopen(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Options{Dir: dir})
	for i := range 5 {
		if err := s.Append(testRecord(uint64(i)), nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, Options{Dir: dir})
	if got := s.TopicLastSeq("alerts"); got != 5 {
		t.Fatalf("TopicLastSeq(alerts) after reopen = %d, want 5 (unknown topics up to the open)", got)
	}
	// Close closes every topic's channel for good.
	ch := s.TopicCommitted("alerts")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("Close left a topic's channel open")
	}
	select {
	case <-s.TopicCommitted("never-seen"):
	case <-time.After(5 * time.Second):
		t.Fatal("TopicCommitted after Close returned an open channel")
	}
}

// TestTopicOverflow: past the tracked topics, answers are conservative.
func TestTopicOverflow(t *testing.T) {
	s := openT(t, Options{Dir: t.TempDir()})
	defer s.Close()
	for i := range maxTrackedTopics + 10 {
		r := testRecord(uint64(i))
		r.Topic = []byte(fmt.Sprintf("t%d", i))
		if err := s.Append(r, nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, s, maxTrackedTopics+10)
	untracked := fmt.Sprintf("t%d", maxTrackedTopics+5)
	if got, want := s.TopicLastSeq(untracked), s.LastSeq(); got != want {
		t.Fatalf("TopicLastSeq(untracked) = %d, want LastSeq %d", got, want)
	}
	if got := s.TopicLastSeq("t3"); got != 4 {
		t.Fatalf("TopicLastSeq(t3) = %d, want 4", got)
	}
}

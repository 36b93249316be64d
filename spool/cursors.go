package spool

// Cursors and trimming: consumers' positions ride the group commits;
// what every consumer passed is trimmed by a range deletion.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// CursorCommitDelay is how long a cursor move waits for a commit of
// appended records to ride along with before it is committed on its own.
// While records flow, a commit happens every few milliseconds and cursor
// moves cost no fsync of their own; a crash then re-sends only what was
// delivered since the last commit.
const CursorCommitDelay = 100 * time.Millisecond

// staged is what waits for the next commit besides appended records:
// cursor moves, quarantined records, and a trim (a range deletion of
// records every consumer has passed). The committer takes all of it into
// the batch it builds; if that commit fails, it is staged again after the
// reopen (a trim is recomputed instead).
type staged struct {
	cursors    map[string]uint64
	forget     []string            // cursors to delete
	passed     map[string][]uint64 // SetPassed (nil: delete)
	quarantine []quarantineOp
	// trimFrom..trimTo (inclusive) is a staged range deletion (trimTo 0:
	// none).
	trimFrom, trimTo uint64
}

func (st *staged) empty() bool {
	return len(st.cursors) == 0 && len(st.forget) == 0 && len(st.passed) == 0 && len(st.quarantine) == 0 && st.trimTo == 0
}

// apply writes the staged operations into b.
func (st *staged) apply(b *pebble.Batch) error {
	var v [8]byte
	for name, seq := range st.cursors {
		binary.BigEndian.PutUint64(v[:], seq)
		if err := b.Set(cursorKey(name), v[:], nil); err != nil {
			return err
		}
	}
	for _, name := range st.forget {
		if err := b.Delete(cursorKey(name), nil); err != nil {
			return err
		}
		if err := b.Delete(passedKey(name), nil); err != nil {
			return err
		}
	}
	for name, seqs := range st.passed {
		var err error
		if len(seqs) == 0 {
			err = b.Delete(passedKey(name), nil)
		} else {
			err = b.Set(passedKey(name), encodeSeqs(seqs), nil)
		}
		if err != nil {
			return err
		}
	}
	for _, q := range st.quarantine {
		var err error
		if q.del {
			err = b.Delete(q.key, nil)
		} else {
			err = b.Set(q.key, q.value, nil)
		}
		if err != nil {
			return err
		}
	}
	if st.trimTo != 0 {
		return b.DeleteRange(recKey(st.trimFrom), recKeyAfter(st.trimTo), nil)
	}
	return nil
}

func cursorKey(name string) []byte {
	return append(cursorPrefix[:len(cursorPrefix):len(cursorPrefix)], name...)
}

// Advance records, without waiting for the disk, that consumer name has
// passed every record up to seq, and moves the records in quarantine (which
// must lie at or below seq) into the quarantine keyspace. All of it is
// committed together, in one Pebble batch, with the next group commit
// (within CursorCommitDelay if no record is appended meanwhile), and the
// records every consumer has passed are trimmed after. Until then Cursor
// reports the old position and a crash forgets the move: the consumer
// delivers those records again.
//
// A cursor never moves back: a seq below the one last given is ignored.
// Advance fails only for a closed spool or a seq beyond LastSeq.
func (s *Spool) Advance(name string, seq uint64, quarantine ...Quarantined) error {
	return s.advance(name, seq, false, quarantine)
}

// advance is Advance; with set, the cursor is set to seq even if that moves
// it back.
func (s *Spool) advance(name string, seq uint64, set bool, quarantine []Quarantined) error {
	if name == "" {
		return errors.New("spool: advance: empty consumer name")
	}
	if last := s.LastSeq(); seq > last {
		return fmt.Errorf("spool: advance %q to %d: beyond last committed seq %d", name, seq, last)
	}
	ops := make([]quarantineOp, 0, len(quarantine))
	for i := range quarantine {
		q := &quarantine[i]
		if q.Lane == "" {
			q.Lane = name
		}
		ops = append(ops, newQuarantineOp(q))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if set || seq > max(s.cursors[name], s.staged.cursors[name]) {
		s.staged.cursors[name] = seq
	}
	for _, op := range ops {
		s.stageQuarantineLocked(op)
	}
	s.stageDueLocked()
	return nil
}

// stageQuarantineLocked stages op and books it in the budget at once.
// Called with mu held.
func (s *Spool) stageQuarantineLocked(op quarantineOp) {
	s.staged.quarantine = append(s.staged.quarantine, op)
	s.bookQuarantineLocked(op)
}

// bookQuarantineLocked counts op in the live and quarantined totals.
func (s *Spool) bookQuarantineLocked(op quarantineOp) {
	n, recs := op.size(), int64(1)
	if op.del {
		n, recs = -n, -1
	}
	s.liveBytes += n
	s.liveRecords += recs
	s.quarantineBytes += n
	s.quarantineRecords += recs
}

// ReplaceCursor replaces cursor old by the cursors in names, each of which
// starts at old's position unless it is already past it, in one commit
// (like Advance, without waiting for it). A consumer that splits its work
// (a forwarder into lanes) keeps its place this way.
func (s *Spool) ReplaceCursor(old string, names []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	at := max(s.cursors[old], s.staged.cursors[old])
	delete(s.staged.cursors, old)
	for _, n := range names {
		if n == old {
			return fmt.Errorf("spool: replace cursor %q by itself", old)
		}
		if at > max(s.cursors[n], s.staged.cursors[n]) {
			s.staged.cursors[n] = at
		}
	}
	s.staged.forget = append(s.staged.forget, old)
	s.stageDueLocked()
	return nil
}

// SetPassed records, with the next commit (like Advance), the records
// beyond consumer name's cursor that it has already passed: a consumer
// stopped in the middle of a batch, part of which was delivered, keeps
// them from being delivered again after the restart. nil forgets them.
func (s *Spool) SetPassed(name string, seqs []uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.staged.passed[name] = slices.Clone(seqs)
	s.stageDueLocked()
	return nil
}

// Passed returns what SetPassed last committed for consumer name.
func (s *Spool) Passed(name string) ([]uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	return slices.Clone(s.passed[name]), nil
}

var passedPrefix = []byte("p/")

func passedKey(name string) []byte {
	return append(passedPrefix[:len(passedPrefix):len(passedPrefix)], name...)
}

// encodeSeqs writes seqs as uvarints.
func encodeSeqs(seqs []uint64) []byte {
	b := make([]byte, 0, len(seqs)*binary.MaxVarintLen64)
	for _, q := range seqs {
		b = binary.AppendUvarint(b, q)
	}
	return b
}

// loadPassed reads every p/ key into into.
func loadPassed(db *pebble.DB, into map[string][]uint64) error {
	return scanRange(db, passedPrefix, []byte("p0"), "read passed records", func(k, v []byte) (bool, error) {
		var seqs []uint64
		for len(v) > 0 {
			q, n := binary.Uvarint(v)
			if n <= 0 {
				return false, fmt.Errorf("corrupt passed records of %q", k[2:])
			}
			seqs = append(seqs, q)
			v = v[n:]
		}
		into[string(k[2:])] = seqs
		return true, nil
	})
}

// stageDueLocked makes sure the staged operations get committed within
// CursorCommitDelay even if nothing is appended. Called with mu held.
func (s *Spool) stageDueLocked() {
	if s.stagedTimer || s.staged.empty() {
		return
	}
	s.stagedTimer = true
	time.AfterFunc(CursorCommitDelay, func() {
		s.mu.Lock()
		s.stagedDue = true
		s.mu.Unlock()
		s.wake()
	})
}

// takeStaged moves the staged operations into b for the commit being
// built and returns them. Called with mu held.
func (s *Spool) takeStaged(b *pebble.Batch) (staged, error) {
	st := s.staged
	s.staged = staged{cursors: map[string]uint64{}, passed: map[string][]uint64{}}
	s.stagedDue, s.stagedTimer = false, false
	if st.empty() {
		return st, nil
	}
	return st, st.apply(b)
}

// committedStaged applies a committed batch's staged operations to the
// in-memory state and asks for a trim when a cursor moved. Called with mu
// held.
func (s *Spool) committedStaged(st staged) {
	for _, name := range st.forget {
		delete(s.cursors, name)
		delete(s.passed, name)
	}
	for name, seqs := range st.passed {
		if len(seqs) == 0 {
			delete(s.passed, name)
		} else {
			s.passed[name] = seqs
		}
	}
	if len(st.cursors) == 0 {
		return
	}
	for name, seq := range st.cursors {
		s.cursors[name] = seq
	}
	select {
	case s.trimKick <- struct{}{}:
	default:
	}
}

// restage puts back the staged operations of a batch whose commit failed,
// after the reopen reloaded the state from disk: cursor moves and
// quarantined records are kept (and counted again in the live bytes); a
// trim is dropped, to be recomputed from the reloaded state. Called with
// mu held.
func (s *Spool) restage(lost staged) {
	for name, seq := range lost.cursors {
		if seq > s.staged.cursors[name] {
			s.staged.cursors[name] = seq
		}
	}
	s.staged.forget = append(lost.forget, s.staged.forget...)
	for name, seqs := range lost.passed {
		if _, newer := s.staged.passed[name]; !newer {
			s.staged.passed[name] = seqs
		}
	}
	s.staged.quarantine = append(lost.quarantine, s.staged.quarantine...)
	s.staged.trimFrom, s.staged.trimTo = 0, 0
	for _, op := range s.staged.quarantine {
		s.bookQuarantineLocked(op)
	}
	s.stageDueLocked()
	select {
	case s.trimKick <- struct{}{}:
	default:
	}
}

// trimLoop stages trims as cursors move, until Close.
func (s *Spool) trimLoop() {
	for {
		select {
		case <-s.closing:
			return
		case <-s.trimKick:
		}
		if err := s.stageTrim(); err != nil && !errors.Is(err, ErrBusy) && !errors.Is(err, ErrClosed) {
			s.log.Warn("spool trim", "err", err)
		}
	}
}

// stageTrim stages the deletion of the records every consumer has passed
// (by its committed or staged cursor) for the next commit, and takes their
// bytes off the budget at once. A staged cursor and the trim it allows go
// in the same batch or the trim in a later one, never before it.
func (s *Spool) stageTrim() error {
	s.trimMu.Lock()
	defer s.trimMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	trimmed := s.trimmedTo
	cut := s.cutLocked()
	s.mu.Unlock()
	if cut <= trimmed {
		return nil
	}
	db, err := s.getDB()
	if err != nil {
		return fmt.Errorf("spool: trim: %w", err)
	}
	freedRecs, freedBytes, err := sizeRange(db, trimmed+1, cut)
	s.dbMu.RUnlock()
	if err != nil {
		return fmt.Errorf("spool: trim: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.degraded || s.trimmedTo != trimmed {
		return ErrBusy // a reopen reloaded the state meanwhile
	}
	if s.staged.trimTo == 0 {
		s.staged.trimFrom = trimmed + 1
	}
	s.staged.trimTo = cut
	s.trimmedTo = cut
	s.liveBytes -= freedBytes
	s.liveRecords -= freedRecs
	s.stageDueLocked()
	return nil
}

// cutLocked is the last seq every consumer has passed, by its committed
// or staged cursor (0 without consumers: nothing is trimmed). Called with
// mu held.
func (s *Spool) cutLocked() uint64 {
	if len(s.opts.Consumers) == 0 {
		return 0
	}
	cut := uint64(math.MaxUint64)
	for _, c := range s.opts.Consumers {
		cut = min(cut, max(s.cursors[c], s.staged.cursors[c]))
	}
	return cut
}

// SetCursor durably sets consumer name's cursor to seq (which may move it
// back), and trims what every consumer has passed: it is Advance, then a
// trim, then a wait for the commit holding both (shared with appends).
// While the spool recovers from a failed commit, including a failure of
// this very write, it returns an error matching ErrBusy.
func (s *Spool) SetCursor(name string, seq uint64) error {
	if err := s.advance(name, seq, true, nil); err != nil {
		return fmt.Errorf("spool: set cursor: %w", err)
	}
	if err := s.stageTrim(); err != nil {
		if errors.Is(err, ErrClosed) {
			return err
		}
		if !errors.Is(err, ErrBusy) {
			return fmt.Errorf("spool: set cursor %q: %w", name, err)
		}
	}
	if err := s.Sync(); err != nil {
		return fmt.Errorf("spool: set cursor %q to %d: %w", name, seq, err)
	}
	if s.trimPending() {
		// A trim computed before this cursor's commit landed.
		if err := s.stageTrim(); err == nil {
			_ = s.Sync()
		}
	}
	s.updateAgeGauge()
	return nil
}

// trimPending reports whether committed cursors allow a trim not yet done.
func (s *Spool) trimPending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cutLocked() > s.trimmedTo
}

// Sync commits whatever is staged or pending and waits for that commit.
// While the spool recovers from a failed commit it returns an error
// matching ErrBusy.
func (s *Spool) Sync() error {
	w := make(chanWaiter, 1)
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return ErrClosed
	case s.degraded:
		s.mu.Unlock()
		return fmt.Errorf("spool: sync: %w", ErrBusy)
	}
	wasEmpty := len(s.pendingW) == 0
	s.pendingW = append(s.pendingW, waitEntry{w: w})
	s.mu.Unlock()
	if wasEmpty {
		s.wake()
	}
	if err := <-w; err != nil {
		// The commit failed (a full disk, say) and the committer is
		// reopening Pebble: like an Append then, this is ErrBusy; what
		// was staged is staged again for a later commit.
		return fmt.Errorf("spool: sync: %w: %w", ErrBusy, err)
	}
	return nil
}

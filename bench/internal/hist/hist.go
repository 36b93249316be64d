// Package hist is a small HDR-style histogram: values (nanoseconds) go into
// log-spaced buckets, 32 linear sub-buckets per power of two, so every
// recorded value is known to within about 3%. Recording is one atomic add,
// safe from any number of goroutines.
package hist

import (
	"math/bits"
	"sync/atomic"
)

const (
	subBits = 5
	sub     = 1 << subBits
	// nBuckets covers values up to 2^63.
	nBuckets = (64-subBits)*sub + sub
)

// H is a histogram of non-negative int64 values. The zero value is ready.
type H struct {
	counts [nBuckets]atomic.Int64
	max    atomic.Int64
	total  atomic.Int64
	sum    atomic.Int64
}

func index(v int64) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	e := bits.Len64(u)
	if e <= subBits+1 {
		return int(u)
	}
	shift := e - (subBits + 1)
	return shift<<subBits + int(u>>shift)
}

// bounds returns the smallest and largest value of bucket i.
func bounds(i int) (lo, hi int64) {
	if i < 2*sub {
		return int64(i), int64(i)
	}
	shift := i>>subBits - 1
	top := int64(i - shift<<subBits)
	return top << shift, (top+1)<<shift - 1
}

// Record adds one value.
func (h *H) Record(v int64) {
	h.counts[index(v)].Add(1)
	h.total.Add(1)
	h.sum.Add(v)
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			return
		}
	}
}

// Snapshot is a point-in-time copy of a histogram.
type Snapshot struct {
	Counts []int64
	Max    int64
	Total  int64
	Sum    int64
}

// Snapshot copies the histogram (concurrent records may be half counted).
func (h *H) Snapshot() *Snapshot {
	s := &Snapshot{Counts: make([]int64, nBuckets), Max: h.max.Load(), Total: h.total.Load(), Sum: h.sum.Load()}
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
	}
	return s
}

// Sub returns s minus an earlier snapshot of the same histogram (Max is s's).
func (s *Snapshot) Sub(earlier *Snapshot) *Snapshot {
	d := &Snapshot{Counts: make([]int64, len(s.Counts)), Max: s.Max}
	for i := range s.Counts {
		d.Counts[i] = s.Counts[i] - earlier.Counts[i]
		d.Total += d.Counts[i]
	}
	d.Sum = s.Sum - earlier.Sum
	return d
}

// Quantile returns the value at quantile q (0..1): the upper bound of the
// bucket holding it, capped at Max. 0 when empty.
func (s *Snapshot) Quantile(q float64) int64 {
	var total int64
	for _, c := range s.Counts {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := int64(q*float64(total) + 0.5)
	if rank < 1 {
		rank = 1
	}
	if rank > total {
		rank = total
	}
	var seen int64
	for i, c := range s.Counts {
		seen += c
		if seen >= rank {
			_, hi := bounds(i)
			if s.Max > 0 && hi > s.Max {
				return s.Max
			}
			return hi
		}
	}
	return s.Max
}

// Mean is the average value.
func (s *Snapshot) Mean() float64 {
	if s.Total == 0 {
		return 0
	}
	return float64(s.Sum) / float64(s.Total)
}

// Bucket is one non-empty bucket: values in [Lo, Hi].
type Bucket struct {
	Lo, Hi int64
	Count  int64
}

// Buckets lists the non-empty buckets in order.
func (s *Snapshot) Buckets() []Bucket {
	var out []Bucket
	for i, c := range s.Counts {
		if c > 0 {
			lo, hi := bounds(i)
			out = append(out, Bucket{Lo: lo, Hi: hi, Count: c})
		}
	}
	return out
}

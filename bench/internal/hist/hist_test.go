package hist

import (
	"math/rand/v2"
	"sort"
	"testing"
)

func TestBucketsAreContiguous(t *testing.T) {
	prevHi := int64(-1)
	for i := 0; i < nBuckets-sub; i++ {
		lo, hi := bounds(i)
		if lo != prevHi+1 || hi < lo {
			t.Fatalf("bucket %d: [%d,%d] after %d", i, lo, hi, prevHi)
		}
		if index(lo) != i || index(hi) != i {
			t.Fatalf("bucket %d: index(lo)=%d index(hi)=%d", i, index(lo), index(hi))
		}
		prevHi = hi
	}
}

func TestQuantileWithinThreePercent(t *testing.T) {
	var h H
	vals := make([]int64, 100000)
	for i := range vals {
		vals[i] = int64(rand.ExpFloat64() * 1e6)
		h.Record(vals[i])
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
	s := h.Snapshot()
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := vals[int(q*float64(len(vals)))-1]
		got := s.Quantile(q)
		if d := float64(got-want) / float64(want); d < -0.04 || d > 0.04 {
			t.Errorf("q%.3f: got %d want %d (%.1f%%)", q, got, want, d*100)
		}
	}
	if s.Quantile(1) != vals[len(vals)-1] {
		t.Errorf("max: got %d want %d", s.Quantile(1), vals[len(vals)-1])
	}
}

package netloop

import "testing"

func TestBufferPool(t *testing.T) {
	for _, n := range []int{1, 4 << 10, 8<<10 + 1, 16 << 10, 40 << 10, 64 << 10, 64<<10 + 1, 1 << 20} {
		b := getBuffer(n)
		if len(b) != 0 || cap(b) < n || cap(b) != bufferCap(n) {
			t.Fatalf("getBuffer(%d): len %d cap %d, bufferCap %d", n, len(b), cap(b), bufferCap(n))
		}
		putBuffer(b)
	}
	// A get/put cycle of a pooled size allocates nothing (the pools hold
	// array pointers, not slice headers).
	if raceEnabled {
		t.Skip("allocation counts: run without -race (make test does)")
	}
	if a := testing.AllocsPerRun(100, func() { putBuffer(getBuffer(12 << 10)) }); a != 0 {
		t.Fatalf("%v allocations per get/put", a)
	}
}

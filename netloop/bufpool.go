package netloop

import "sync"

// A connection's input (partial messages) and reply buffers are released
// when they empty and are larger than keepBufferBytes, so idle vehicles
// stay small. A busy vehicle (100 records in flight) empties and refills
// them many times a second; the released buffers of the sizes below go
// back to these pools instead of to the garbage collector, and the next
// buffer that size comes from them. (A pool holds what it is given for up
// to two GC cycles, then lets it go: idle memory still returns.)
var (
	pool8k  = sync.Pool{New: func() any { return new([8 << 10]byte) }}
	pool16k = sync.Pool{New: func() any { return new([16 << 10]byte) }}
	pool32k = sync.Pool{New: func() any { return new([32 << 10]byte) }}
	pool64k = sync.Pool{New: func() any { return new([64 << 10]byte) }}
)

// bufferCap is the capacity getBuffer gives for n bytes.
func bufferCap(n int) int {
	switch {
	case n <= 8<<10:
		return 8 << 10
	case n <= 16<<10:
		return 16 << 10
	case n <= 32<<10:
		return 32 << 10
	case n <= 64<<10:
		return 64 << 10
	}
	return n
}

// getBuffer returns an empty buffer of capacity bufferCap(n): a pooled one
// up to 64 KiB, a new one beyond.
func getBuffer(n int) []byte {
	switch bufferCap(n) {
	case 8 << 10:
		return pool8k.Get().(*[8 << 10]byte)[:0]
	case 16 << 10:
		return pool16k.Get().(*[16 << 10]byte)[:0]
	case 32 << 10:
		return pool32k.Get().(*[32 << 10]byte)[:0]
	case 64 << 10:
		return pool64k.Get().(*[64 << 10]byte)[:0]
	}
	return make([]byte, 0, n)
}

// putBuffer gives b's memory back when its capacity is a pool size. The
// caller must hold no other reference into it.
func putBuffer(b []byte) {
	switch cap(b) {
	case 8 << 10:
		pool8k.Put((*[8 << 10]byte)(b[:8<<10]))
	case 16 << 10:
		pool16k.Put((*[16 << 10]byte)(b[:16<<10]))
	case 32 << 10:
		pool32k.Put((*[32 << 10]byte)(b[:32<<10]))
	case 64 << 10:
		pool64k.Put((*[64 << 10]byte)(b[:64<<10]))
	}
}

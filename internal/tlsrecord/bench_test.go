package tlsrecord

import (
	"fmt"
	"testing"
)

// benchEverySuiteAndSize runs f as a sub-benchmark for every suite and
// record size, with a server and a client Conn on the same secrets and a
// message of that size (the bytes each op moves).
func benchEverySuiteAndSize(b *testing.B, f func(b *testing.B, server, client *Conn, msg []byte)) {
	for _, suite := range suites {
		for _, size := range []int{64, 1024, MaxPlaintext} {
			b.Run(fmt.Sprintf("%#04x/%d", suite, size), func(b *testing.B) {
				server, client := peers(b, suite)
				msg := payload(size)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				f(b, server, client, msg)
			})
		}
	}
}

// The hot path: one application-data record sealed or opened, with the
// destination's capacity (Seal) and the input buffer (Open) reused, as
// netloop does. Both must not allocate.
func BenchmarkSeal(b *testing.B) {
	benchEverySuiteAndSize(b, func(b *testing.B, _, client *Conn, msg []byte) {
		dst := make([]byte, 0, len(msg)+HeaderLen+tagLen+1)
		for b.Loop() {
			dst = client.Seal(dst[:0], msg)
		}
	})
}

func BenchmarkOpen(b *testing.B) {
	benchEverySuiteAndSize(b, func(b *testing.B, server, client *Conn, msg []byte) {
		// Records are sealed in batches outside the timer: each is
		// opened once, in order, in place.
		const batch = 256
		recs := make([][]byte, batch)
		i := batch
		for b.Loop() {
			if i == batch {
				b.StopTimer()
				for j := range recs {
					recs[j] = client.Seal(recs[j][:0], msg)
				}
				i = 0
				b.StartTimer()
			}
			if _, data, err := server.Open(recs[i]); err != nil || len(data) != len(msg) {
				b.Fatalf("open: %d bytes, %v", len(data), err)
			}
			i++
		}
	})
}

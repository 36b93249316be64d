package tlsrecord

import (
	"fmt"
	"testing"
)

// The hot path: one application-data record sealed or opened, with the
// destination's capacity (Seal) and the input buffer (Open) reused, as
// netloop does. Both must not allocate.
func BenchmarkSeal(b *testing.B) {
	for _, suite := range suites {
		for _, size := range []int{64, 1024, MaxPlaintext} {
			b.Run(fmt.Sprintf("%#04x/%d", suite, size), func(b *testing.B) {
				_, client := benchPeers(b, suite)
				msg := payload(size)
				dst := make([]byte, 0, size+HeaderLen+tagLen+1)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					dst = client.Seal(dst[:0], msg)
				}
			})
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	for _, suite := range suites {
		for _, size := range []int{64, 1024, MaxPlaintext} {
			b.Run(fmt.Sprintf("%#04x/%d", suite, size), func(b *testing.B) {
				server, client := benchPeers(b, suite)
				msg := payload(size)
				// Records are sealed in batches outside the timer: each is
				// opened once, in order, in place.
				const batch = 256
				recs := make([][]byte, batch)
				b.SetBytes(int64(size))
				b.ReportAllocs()
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
					if _, data, err := server.Open(recs[i]); err != nil || len(data) != size {
						b.Fatalf("open: %d bytes, %v", len(data), err)
					}
					i++
				}
			})
		}
	}
}

func benchPeers(b *testing.B, suite uint16) (server, client *Conn) {
	s, err := suiteByID(suite)
	if err != nil {
		b.Fatal(err)
	}
	n := s.hash().Size()
	cs, ss := payload(n), payload(n)
	ss[0] ^= 1
	server, err = New(suite, append([]byte(nil), cs...), append([]byte(nil), ss...), 0)
	if err != nil {
		b.Fatal(err)
	}
	client, err = New(suite, ss, cs, 0)
	if err != nil {
		b.Fatal(err)
	}
	return server, client
}

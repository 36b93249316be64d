package netloop

import (
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/wsframe"
)

var testMask = [4]byte{1, 2, 3, 4}

// TestReassemblyCountsAgainstTheBudget: vehicles each holding 900 KB of
// an unfinished fragmented message (three non-final fragments) are shed
// with 1013 once they together pass the server's budget, which then
// holds; a small vehicle is still served.
func TestReassemblyCountsAgainstTheBudget(t *testing.T) {
	frag := make([]byte, 300_000)
	var frames []byte
	frames = wsframe.AppendMaskedFrame(frames, ws.OpBinary, false, frag, testMask)
	frames = wsframe.AppendMaskedFrame(frames, ws.OpContinuation, false, frag, testMask)
	frames = wsframe.AppendMaskedFrame(frames, ws.OpContinuation, false, frag, testMask)
	// One connection may pass the budget by its last growth step before
	// it is shed.
	expectShedOverBudget(t, 4<<20, 1_000_000, frames)
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestPeerThatNeverReadsIsClosed: a peer that sends and never reads its
// replies (pongs, or acks) makes the daemon hold them; past the
// connection's cap it is closed and counted, and the heap does not grow
// with what it sends.
func TestPeerThatNeverReadsIsClosed(t *testing.T) {
	const connCap = 256 << 10
	for _, tc := range []struct {
		name  string
		frame func(i int) []byte
	}{
		{"pings", func(int) []byte {
			return wsframe.AppendMaskedFrame(nil, ws.OpPing, true, make([]byte, 125), testMask)
		}},
		{"records", func(i int) []byte {
			b := envelope.AppendStream(nil, newRecord(vinA, "V", "never-read-"+strconv.Itoa(i)))
			return wsframe.AppendMaskedFrame(nil, ws.OpBinary, true, b, testMask)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// No record type routed: records are acked without being
			// kept, so the heap measures what the connection holds, not
			// the spool's memtable.
			e := newTestEnv(t, nil, func(o *Options) { o.MaxConnectionBytes = connCap })
			before, heap := refusedConnMemory.Get(), heapInUse()
			c := e.dial(t, vinA)
			sent := 0
			deadline := time.Now().Add(20 * time.Second)
			for refusedConnMemory.Get() == before && sent < 50<<20 && time.Now().Before(deadline) {
				var burst []byte
				for i := range 64 {
					burst = append(burst, tc.frame(sent+i)...)
				}
				c.Conn().SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
				n, err := c.Conn().Write(burst)
				sent += n
				if err != nil && !isTimeout(err) {
					break // closed by the server
				}
			}
			waitFor(t, func() bool { return refusedConnMemory.Get() > before })
			grew := int64(heapInUse()) - int64(heap)
			t.Logf("sent %.1f MB without reading; heap grew %.1f MiB", float64(sent)/1e6, float64(grew)/(1<<20))
			if grew > 16<<20 {
				t.Fatalf("heap grew %d MiB while a peer never read", grew>>20)
			}
			waitFor(t, func() bool { return totalBuffered.Load() == 0 })
		})
	}
}

package netloop

import (
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
	"github.com/fleet-telemetry/fleet-telemetry/wsframe"
)

// wakeOnly is the one gnet.Conn method the record path calls off the loop.
type wakeOnly struct{ gnet.Conn }

func (wakeOnly) Wake(gnet.AsyncCallback) error { return nil }

// BenchmarkRecordPath measures one vehicle record from decrypted bytes to
// the spool hand-off: frame decode and unmask, envelope decode, sender
// check, protobuf validation, the ack encoded into the reply queue, and
// spool.Append. TLS and the fsync (which the committer does off the loop)
// are not included. The 512-byte copy per op restores the masked frame.
func BenchmarkRecordPath(b *testing.B) {
	quiet := slog.New(slog.DiscardHandler)
	sp, err := spool.Open(spool.Options{Dir: filepath.Join(b.TempDir(), "spool"), Consumers: []string{"b"}, Logger: quiet,
		MaxPendingBytes: 256 << 20}) // the loop side outruns fsync here; nothing must be refused
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	srv := &Server{opts: Options{Spool: sp, MaxInFlight: 1 << 30, Logger: quiet}, routed: map[string]bool{"V": true}}
	srv.opts.setDefaults()
	srv.log = srv.opts.Logger
	c := &conn{srv: srv, gc: wakeOnly{}, phase: phaseWebSocket, acks: newAckQueue(srv.opts.MaxInFlight),
		id:  Identity{DeviceID: vinA, ClientType: "vehicle_device", SenderID: "vehicle_device." + vinA},
		st:  &vehicleStats{},
		dec: wsframe.NewDecoder(wsframe.Options{Role: wsframe.RoleServer, MaxMessageSize: 1_000_000})}
	m := newRecord(vinA, "V", "bench-txid-0001")
	m.Payload = vehicle.PayloadV(rng, vinA, 20, time.Now())
	frame := wsframe.AppendMaskedFrame(nil, ws.OpBinary, true, envelope.AppendStream(nil, m), [4]byte{1, 2, 3, 4})
	buf := make([]byte, len(frame))
	now := time.Now()
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		copy(buf, frame)
		if _, act := c.parseFrames(buf, now); act != gnet.None {
			b.Fatal("record refused")
		}
		if c.acks.len() > 4096 {
			c.drainMailbox()
			c.acks.slots = c.acks.slots[:0]
			c.acks.frames = c.acks.frames[:0]
			c.acks.head += 1 << 20 // commits for dropped replies land outside the queue
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(len(m.Payload)), "payload-bytes")
}

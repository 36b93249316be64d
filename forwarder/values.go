package forwarder

import (
	"iter"
	"log/slog"

	"github.com/VictoriaMetrics/metrics"

	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// Values encodes the records of batch one after the other into a buffer of
// this call's own (NextValue: each value stays valid after the sink's Send
// returns) and yields each record's index in batch with its value. A
// record that cannot be encoded is skipped: counted in undecodable and
// logged to log with its seq and VIN.
func (e Encoder) Values(batch []spool.Record, undecodable *metrics.Counter, log *slog.Logger) iter.Seq2[int, []byte] {
	return func(yield func(int, []byte) bool) {
		buf := make([]byte, 0, ValuesSize(batch))
		for i := range batch {
			r := &batch[i]
			value, _, err := e.NextValue(&buf, r)
			if err != nil {
				undecodable.Inc()
				log.Error("record cannot be encoded; skipped", "seq", r.Seq, "vin", r.VIN, "topic", string(r.Topic), "err", err)
				continue
			}
			if !yield(i, value) {
				return
			}
		}
	}
}

// Package memtrim returns the heap's free memory to the operating system
// once a burst of allocation (a reconnect storm after a restart: tens of
// kilobytes of handshake garbage per vehicle) has given way to quiet.
//
// Go keeps the heap it grew until the next collection, and the collector
// then aims at twice the live heap, so a daemon holding many idle
// connections after a storm stays at up to twice the memory they need: no
// allocation means no collection. Run notices the quiet and collects once,
// releasing what is free (runtime/debug.FreeOSMemory). Under steady
// traffic it does nothing: the collector's own pacing applies.
package memtrim

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
)

// Options configure Run. Zero values take the defaults.
type Options struct {
	// Interval is how often the allocation rate is sampled (default 5 s).
	Interval time.Duration
	// BusyBytes allocated within one interval mark a burst (default 16 MiB).
	BusyBytes uint64
	// QuietBytes: an interval allocating less, after a burst, is quiet
	// (default 1 MiB); the heap is trimmed then.
	QuietBytes uint64
	Logger     *slog.Logger
}

var trims = vm.NewCounter("fleet_memory_trims_total")

const allocsMetric = "/gc/heap/allocs:bytes"

// Run samples until ctx ends.
func Run(ctx context.Context, o Options) {
	if o.Interval <= 0 {
		o.Interval = 5 * time.Second
	}
	if o.BusyBytes == 0 {
		o.BusyBytes = 16 << 20
	}
	if o.QuietBytes == 0 {
		o.QuietBytes = 1 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	sample := []metrics.Sample{{Name: allocsMetric}}
	allocated := func() uint64 {
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return sample[0].Value.Uint64()
	}
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	prev, busy := allocated(), false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := allocated()
		d := cur - prev
		prev = cur
		switch {
		case d >= o.BusyBytes:
			busy = true
		case busy && d < o.QuietBytes:
			busy = false
			start := time.Now()
			debug.FreeOSMemory()
			trims.Inc()
			o.Logger.Info("allocation burst over: free heap returned to the OS", "took", time.Since(start).Round(time.Microsecond))
		}
	}
}

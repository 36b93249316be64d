package brokertest

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// Received is what a test's subscriber to a sink read besides the records
// the test counts: the VINs of the connectivity records, and the messages
// that belong nowhere (a subject, channel or topic the sink should not
// use, a payload that does not decode, another VIN). Subscriber callbacks
// may call it from their own goroutines.
type Received struct {
	mu           sync.Mutex
	connectivity map[string]int
	stray        []string
}

// NewReceived returns an empty Received.
func NewReceived() *Received { return &Received{connectivity: map[string]int{}} }

// Connectivity notes a connectivity record of vin.
func (r *Received) Connectivity(vin string) {
	r.mu.Lock()
	r.connectivity[vin]++
	r.mu.Unlock()
}

// Stray notes a message the subscriber could not place, described by what.
func (r *Received) Stray(what string) {
	r.mu.Lock()
	r.stray = append(r.stray, what)
	r.mu.Unlock()
}

// Connected reports whether every one of vins has a connectivity record.
func (r *Received) Connected(vins []string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !slices.ContainsFunc(vins, func(vin string) bool { return r.connectivity[vin] == 0 })
}

// Check waits up to timeout until every one of vins has a connectivity
// record, then fails the test if one has none or a message was stray.
func (r *Received) Check(t testing.TB, vins []string, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !r.Connected(vins) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var missing []string
	for _, vin := range vins {
		if r.connectivity[vin] == 0 {
			missing = append(missing, vin)
		}
	}
	if len(missing) > 0 || len(r.stray) > 0 {
		t.Errorf("no connectivity record from %v (by VIN %v); stray messages %q", missing, r.connectivity, r.stray)
	}
}

package netloop

// What the monitoring port shows of the connected vehicles (GET /connz):
// each upgraded connection publishes a vehicleStats that its loop keeps
// current with atomics, in a registry of its own. A query copies the
// registry's pointers under its lock (nothing else happens under it), then
// reads the counters, picks the page it was asked for with a bounded heap
// and builds entries for that page only.

import (
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Topic slots counted per connection: the record types a vehicle sends,
// and one for any other name (the topic is the vehicle's choice).
const (
	slotV = iota
	slotAlerts
	slotErrors
	slotConnectivity
	slotOther
	numTopicSlots
)

var topicSlotNames = [numTopicSlots]string{"V", "alerts", "errors", "connectivity", otherTopic}

// topicSlot is the per-connection slot of a record type.
func topicSlot(topic string) uint8 {
	for i, n := range topicSlotNames[:slotOther] {
		if n == topic {
			return uint8(i)
		}
	}
	return slotOther
}

// vehicleStats is one connected vehicle as the monitoring port sees it.
// The fields above the counters are set before the record is published in
// the server's registry and never change after; the counters are written by
// the connection's loop and read from anywhere.
type vehicleStats struct {
	cid           uint64
	vin           string
	clientType    string
	remote        net.Addr // rendered only for a page
	clientVersion string
	connectionID  string
	sinceMs       int64
	tlsVersion    uint16
	cipherSuite   uint16

	idx int // position in Server.vehicles, guarded by vehMu

	records      atomic.Uint64 // binary messages received
	bytes        atomic.Uint64 // their bytes
	rateLimited  atomic.Uint64 // dropped by the rate limit
	refused      atomic.Uint64 // answered with an error reply
	lastRecordMs atomic.Int64  // unix ms of the last binary message, 0: none yet
	acksOwed     atomic.Int64  // replies queued, not yet written
	buffered     atomic.Int64  // bytes held beyond the fixed state (conn.held)
	topics       [numTopicSlots]atomic.Uint64
}

// received counts a binary message of n bytes that arrived at now.
func (st *vehicleStats) received(n int, now time.Time) {
	st.records.Add(1)
	st.bytes.Add(uint64(n))
	st.lastRecordMs.Store(now.UnixMilli())
}

// publishHeld records what the connection holds and owes; loop only. It
// writes only what changed: most wakes change neither.
func (st *vehicleStats) publishHeld(held, acks int) {
	if int64(held) != st.buffered.Load() {
		st.buffered.Store(int64(held))
	}
	if int64(acks) != st.acksOwed.Load() {
		st.acksOwed.Store(int64(acks))
	}
}

// publishVehicle makes an upgraded connection visible on /connz. Loop only,
// once, after every immutable field of its stats is set.
func (c *conn) publishVehicle(now time.Time) {
	st := &vehicleStats{
		vin: c.id.DeviceID, clientType: c.id.ClientType, remote: c.mc.remote,
		clientVersion: c.clientVersion, connectionID: c.connectionID, sinceMs: now.UnixMilli(),
		tlsVersion: c.tlsVersion, cipherSuite: c.cipherSuite,
	}
	s := c.srv
	s.vehMu.Lock()
	s.lastCID++
	st.cid = s.lastCID
	st.idx = len(s.vehicles)
	s.vehicles = append(s.vehicles, st)
	s.vehMu.Unlock()
	c.st = st
}

// withdrawVehicle takes a closed connection off /connz. Loop only.
func (c *conn) withdrawVehicle() {
	st := c.st
	if st == nil {
		return
	}
	s := c.srv
	s.vehMu.Lock()
	last := len(s.vehicles) - 1
	if st.idx <= last && s.vehicles[st.idx] == st {
		moved := s.vehicles[last]
		s.vehicles[st.idx] = moved
		moved.idx = st.idx
		s.vehicles[last] = nil
		s.vehicles = s.vehicles[:last]
	}
	s.vehMu.Unlock()
}

// ConnSort is a /connz ordering.
type ConnSort string

// The orderings of /connz. Each has its natural direction (ascending for
// vin, cid and connected_since, descending for the counters and
// last_record); ConnQuery.Reverse flips it. Ties are broken by VIN, then
// by cid.
const (
	SortVIN            ConnSort = "vin"
	SortCID            ConnSort = "cid"
	SortConnectedSince ConnSort = "connected_since"
	SortRecords        ConnSort = "records"
	SortBytes          ConnSort = "bytes"
	SortLastRecord     ConnSort = "last_record"
	SortRateLimited    ConnSort = "rate_limited"
	SortRefused        ConnSort = "refused"
	SortAcksOwed       ConnSort = "acks_owed"
	SortBuffered       ConnSort = "buffered"
)

// ConnSorts lists the orderings /connz takes.
var ConnSorts = []ConnSort{SortVIN, SortCID, SortConnectedSince, SortRecords, SortBytes, SortLastRecord,
	SortRateLimited, SortRefused, SortAcksOwed, SortBuffered}

// descending reports the natural direction of a sort key.
func (k ConnSort) descending() bool {
	switch k {
	case SortVIN, SortCID, SortConnectedSince:
		return false
	}
	return true
}

// ParseConnSort checks a sort key ("" is SortVIN).
func ParseConnSort(s string) (ConnSort, error) {
	if s == "" {
		return SortVIN, nil
	}
	if slices.Contains(ConnSorts, ConnSort(s)) {
		return ConnSort(s), nil
	}
	names := make([]string, len(ConnSorts))
	for i, k := range ConnSorts {
		names[i] = string(k)
	}
	return "", fmt.Errorf("unknown sort key %q (one of %s)", s, strings.Join(names, ", "))
}

// Limits of a /connz page.
const (
	DefaultConnLimit = 100
	MaxConnLimit     = 10000
)

// ConnQuery asks for one page of the connected vehicles.
type ConnQuery struct {
	// VIN keeps the vehicles whose VIN contains it, ignoring case (empty:
	// all).
	VIN string
	// Sort orders the entries (default SortVIN); Reverse flips its
	// natural direction.
	Sort    ConnSort
	Reverse bool
	// Offset skips that many entries of the sorted list; Limit is the page
	// size (default DefaultConnLimit, at most MaxConnLimit).
	Offset, Limit int
}

// ConnInfo is one connected vehicle.
type ConnInfo struct {
	// CID numbers the server's vehicle connections in upgrade order.
	CID            uint64    `json:"cid"`
	VIN            string    `json:"vin"`
	ClientType     string    `json:"client_type"`
	RemoteAddr     string    `json:"remote_addr"`
	ClientVersion  string    `json:"client_version,omitempty"`
	ConnectionID   string    `json:"connection_id,omitempty"`
	ConnectedSince time.Time `json:"connected_since"`
	TLSVersion     string    `json:"tls_version"`
	CipherSuite    string    `json:"cipher_suite"`
	// RecordsIn counts binary messages received; RecordsByTopic the ones
	// with a usable envelope, by record type ("other" for names beyond V,
	// alerts, errors and connectivity).
	RecordsIn      uint64            `json:"records_in"`
	RecordsByTopic map[string]uint64 `json:"records_by_topic,omitempty"`
	BytesIn        uint64            `json:"bytes_in"`
	// RateLimited counts records dropped by the rate limit; Refused the
	// ones answered with an error reply.
	RateLimited  uint64     `json:"records_rate_limited"`
	Refused      uint64     `json:"records_refused"`
	LastRecordAt *time.Time `json:"last_record_at,omitempty"`
	// AcksOwed counts replies queued and not yet written (acks waiting for
	// their commit or sink, and the ones behind them).
	AcksOwed int64 `json:"acks_owed"`
	// BufferedBytes is what the connection holds beyond its fixed state.
	BufferedBytes int64 `json:"buffered_bytes"`
}

// ConnPage is a page of connected vehicles: Total match the query, Conns
// are the ones from Offset on.
type ConnPage struct {
	Total   int        `json:"total"`
	Offset  int        `json:"offset"`
	Limit   int        `json:"limit"`
	Sort    ConnSort   `json:"sort"`
	Reverse bool       `json:"reverse,omitempty"`
	Conns   []ConnInfo `json:"conns"`
}

// keyed is a registry entry with the sort key read once.
type keyed struct {
	k  int64
	st *vehicleStats
}

// snapPool recycles the pointer copies of the registry, keyedPool the
// keyed lists.
var (
	snapPool  = sync.Pool{New: func() any { return new([]*vehicleStats) }}
	keyedPool = sync.Pool{New: func() any { return new([]keyed) }}
)

// Conns returns one page of the connected vehicles. The registry's lock is
// held only to copy its pointers; the event loops never wait for the rest:
// reading the counters, picking the page (a bounded heap, O(n log(offset +
// limit))) and building its Limit entries.
func (s *Server) Conns(q ConnQuery) ConnPage {
	if q.Sort == "" {
		q.Sort = SortVIN
	}
	if q.Limit <= 0 {
		q.Limit = DefaultConnLimit
	}
	q.Limit = min(q.Limit, MaxConnLimit)
	q.Offset = max(q.Offset, 0)
	page := ConnPage{Offset: q.Offset, Limit: q.Limit, Sort: q.Sort, Reverse: q.Reverse, Conns: []ConnInfo{}}

	sp := snapPool.Get().(*[]*vehicleStats)
	s.vehMu.Lock()
	snap := append((*sp)[:0], s.vehicles...)
	s.vehMu.Unlock()
	kp := keyedPool.Get().(*[]keyed)
	ks := (*kp)[:0]
	defer func() {
		clear(snap) // no closed vehicle stays reachable from a pool
		*sp = snap[:0]
		snapPool.Put(sp)
		clear(ks)
		*kp = ks[:0]
		keyedPool.Put(kp)
	}()

	for _, st := range snap {
		if q.VIN != "" && !containsFold(st.vin, q.VIN) {
			continue
		}
		ks = append(ks, keyed{k: st.key(q.Sort), st: st})
	}
	page.Total = len(ks)
	if q.Offset >= len(ks) {
		return page
	}
	less := q.Sort.less(q.Reverse)
	top := selectFirst(ks, q.Offset+q.Limit, less)
	for _, e := range top[q.Offset:] {
		page.Conns = append(page.Conns, e.st.info())
	}
	return page
}

// key reads st's sort key for k (VIN and cid orders compare other fields).
func (st *vehicleStats) key(k ConnSort) int64 {
	switch k {
	case SortConnectedSince:
		return st.sinceMs
	case SortRecords:
		return int64(st.records.Load())
	case SortBytes:
		return int64(st.bytes.Load())
	case SortLastRecord:
		return st.lastRecordMs.Load()
	case SortRateLimited:
		return int64(st.rateLimited.Load())
	case SortRefused:
		return int64(st.refused.Load())
	case SortAcksOwed:
		return st.acksOwed.Load()
	case SortBuffered:
		return st.buffered.Load()
	}
	return 0
}

// less is the order of k, reversed or not; ties go by VIN then cid,
// always ascending, so pages do not overlap.
func (k ConnSort) less(reverse bool) func(a, b keyed) bool {
	desc := k.descending() != reverse
	return func(a, b keyed) bool {
		switch k {
		case SortVIN:
			if a.st.vin != b.st.vin {
				return (a.st.vin < b.st.vin) != desc
			}
			return (a.st.cid < b.st.cid) != desc
		case SortCID:
			return (a.st.cid < b.st.cid) != desc
		}
		if a.k != b.k {
			return (a.k < b.k) != desc
		}
		if a.st.vin != b.st.vin {
			return a.st.vin < b.st.vin
		}
		return a.st.cid < b.st.cid
	}
}

// selectFirst returns the first n entries of ks in the order less, sorted.
// With n < len(ks) it keeps a heap of n (the worst on top) and never sorts
// the rest. It reorders ks.
func selectFirst(ks []keyed, n int, less func(a, b keyed) bool) []keyed {
	if n >= len(ks) {
		slices.SortFunc(ks, func(a, b keyed) int { return cmpBy(less, a, b) })
		return ks
	}
	h := ks[:n] // a max-heap under less: h[0] is the worst kept
	for i := n/2 - 1; i >= 0; i-- {
		siftDown(h, i, less)
	}
	for i := n; i < len(ks); i++ {
		if less(ks[i], h[0]) {
			h[0] = ks[i]
			siftDown(h, 0, less)
		}
	}
	slices.SortFunc(h, func(a, b keyed) int { return cmpBy(less, a, b) })
	return h
}

func cmpBy(less func(a, b keyed) bool, a, b keyed) int {
	switch {
	case less(a, b):
		return -1
	case less(b, a):
		return 1
	}
	return 0
}

// siftDown restores the max-heap property (under less) below i.
func siftDown(h []keyed, i int, less func(a, b keyed) bool) {
	for {
		worst := i
		if l := 2*i + 1; l < len(h) && less(h[worst], h[l]) {
			worst = l
		}
		if r := 2*i + 2; r < len(h) && less(h[worst], h[r]) {
			worst = r
		}
		if worst == i {
			return
		}
		h[i], h[worst] = h[worst], h[i]
		i = worst
	}
}

// info renders st.
func (st *vehicleStats) info() ConnInfo {
	ci := ConnInfo{
		CID: st.cid, VIN: st.vin, ClientType: st.clientType,
		ClientVersion: st.clientVersion, ConnectionID: st.connectionID,
		ConnectedSince: time.UnixMilli(st.sinceMs).UTC(),
		TLSVersion:     tls.VersionName(st.tlsVersion), CipherSuite: cipherSuiteName(st.cipherSuite),
		RecordsIn: st.records.Load(), BytesIn: st.bytes.Load(),
		RateLimited: st.rateLimited.Load(), Refused: st.refused.Load(),
		AcksOwed: st.acksOwed.Load(), BufferedBytes: st.buffered.Load(),
	}
	if st.remote != nil {
		ci.RemoteAddr = st.remote.String()
	}
	if ms := st.lastRecordMs.Load(); ms > 0 {
		t := time.UnixMilli(ms).UTC()
		ci.LastRecordAt = &t
	}
	for i := range st.topics {
		if n := st.topics[i].Load(); n > 0 {
			if ci.RecordsByTopic == nil {
				ci.RecordsByTopic = map[string]uint64{}
			}
			ci.RecordsByTopic[topicSlotNames[i]] = n
		}
	}
	return ci
}

// suiteNames are crypto/tls's cipher suite names, read once:
// tls.CipherSuiteName builds its lists anew on every call.
var suiteNames = func() map[uint16]string {
	m := map[uint16]string{}
	for _, cs := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		m[cs.ID] = cs.Name
	}
	return m
}()

func cipherSuiteName(id uint16) string {
	if n, ok := suiteNames[id]; ok {
		return n
	}
	return tls.CipherSuiteName(id)
}

// containsFold reports whether s contains sub, ignoring ASCII case.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// Vehicles is the number of connections past the WebSocket upgrade.
func (s *Server) Vehicles() int {
	s.vehMu.Lock()
	defer s.vehMu.Unlock()
	return len(s.vehicles)
}

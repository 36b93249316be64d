package netloop

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
)

// connFor returns the page entry of vin (failing if it is not there once).
func connFor(t *testing.T, p ConnPage, vin string) ConnInfo {
	t.Helper()
	c, n := lookup(p, vin)
	if n != 1 {
		t.Fatalf("%s appears %d times in %+v", vin, n, p)
	}
	return c
}

// lookup returns vin's entry in p and how many there are. (A client's
// dial returns once the 101 is read; the server lists the vehicle just
// after writing it.)
func lookup(p ConnPage, vin string) (ConnInfo, int) {
	var found []ConnInfo
	for _, c := range p.Conns {
		if c.VIN == vin {
			found = append(found, c)
		}
	}
	if len(found) == 0 {
		return ConnInfo{}, 0
	}
	return found[0], len(found)
}

// TestConnzShowsEachVehicleWithItsCounters: two real vehicles over mTLS;
// one sends records of two types, a bad envelope and a record over the
// rate limit. /connz's source lists both with their identity, TLS
// parameters and counters, and a vehicle that disconnects leaves it.
func TestConnzShowsEachVehicleWithItsCounters(t *testing.T) {
	e := newTestEnv(t, []string{"V", "alerts"}, func(o *Options) { o.RateLimit = RateLimit{Limit: 4, Interval: time.Hour} })
	start := time.Now().Add(-time.Millisecond)
	a := e.dial(t, vinA)
	b := e.dial(t, vinB)
	waitFor(t, func() bool { return e.srv.Conns(ConnQuery{}).Total == 2 })

	var sent int
	for i, topic := range []string{"V", "V", "alerts"} {
		m := newRecord(vinA, topic, fmt.Sprintf("a-%d", i))
		msg := envelope.AppendStream(nil, m)
		sent += len(msg)
		a.WriteFrame(ws.OpBinary, true, msg)
		expectAck(t, a, string(m.TxID), topic)
	}
	a.WriteFrame(ws.OpBinary, true, []byte("not an envelope"))
	sent += len("not an envelope")
	if r := mustReply(t, a); r.Ack {
		t.Fatalf("a bad envelope was acked: %+v", r)
	}
	over := envelope.AppendStream(nil, newRecord(vinA, "V", "over"))
	a.WriteFrame(ws.OpBinary, true, over) // the fifth message: over the limit of 4
	sent += len(over)

	var ca ConnInfo
	waitFor(t, func() bool {
		ca = connFor(t, e.srv.Conns(ConnQuery{}), vinA)
		return ca.RateLimited == 1
	})
	if ca.RecordsIn != 5 || ca.BytesIn != uint64(sent) || ca.Refused != 1 {
		t.Errorf("records_in %d bytes_in %d refused %d; want 5, %d, 1", ca.RecordsIn, ca.BytesIn, ca.Refused, sent)
	}
	if want := map[string]uint64{"V": 2, "alerts": 1}; !mapsEqual(ca.RecordsByTopic, want) {
		t.Errorf("records_by_topic %v, want %v", ca.RecordsByTopic, want)
	}
	if ca.ClientType != "vehicle_device" || ca.TLSVersion != "TLS 1.3" || ca.CipherSuite == "" || ca.ClientVersion != "test-1.0" {
		t.Errorf("identity %+v", ca)
	}
	if ca.RemoteAddr != a.Conn().LocalAddr().String() {
		t.Errorf("remote_addr %s, want the client's %s", ca.RemoteAddr, a.Conn().LocalAddr())
	}
	if ca.ConnectedSince.Before(start.Truncate(time.Millisecond)) || ca.ConnectedSince.After(time.Now()) {
		t.Errorf("connected_since %v, test started %v", ca.ConnectedSince, start)
	}
	if ca.LastRecordAt == nil || ca.LastRecordAt.Before(ca.ConnectedSince) {
		t.Errorf("last_record_at %v", ca.LastRecordAt)
	}
	if ca.AcksOwed != 0 {
		t.Errorf("acks_owed %d after every reply arrived", ca.AcksOwed)
	}
	cb := connFor(t, e.srv.Conns(ConnQuery{}), vinB)
	if cb.RecordsIn != 0 || cb.LastRecordAt != nil || cb.RecordsByTopic != nil || cb.CID == ca.CID {
		t.Errorf("the silent vehicle: %+v", cb)
	}

	// Filter by VIN, any case, any part.
	if p := e.srv.Conns(ConnQuery{VIN: "kf000002"}); p.Total != 1 || p.Conns[0].VIN != vinB {
		t.Errorf("vin filter: %+v", p)
	}
	// Sorted by records: the sender first.
	if p := e.srv.Conns(ConnQuery{Sort: SortRecords}); p.Conns[0].VIN != vinA {
		t.Errorf("sort by records: %+v", p)
	}

	b.Close()
	waitFor(t, func() bool { return e.srv.Conns(ConnQuery{}).Total == 1 })
	if p := e.srv.Conns(ConnQuery{}); p.Conns[0].VIN != vinA || e.srv.Stats().Vehicles != 1 {
		t.Errorf("after B left: %+v", p)
	}
}

func mapsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestConnzAcksOwedAndBuffered: a reliable topic's ack waits for its sink;
// /connz says the vehicle is owed it, and that the connection holds the
// queued reply, until Delivered releases it.
func TestConnzAcksOwedAndBuffered(t *testing.T) {
	e := newTestEnv(t, allTopics, func(o *Options) { o.ReliableTopics = []string{"V"} })
	a := e.dial(t, vinA)
	a.Send(newRecord(vinA, "V", "waits"))
	var ca ConnInfo
	waitFor(t, func() bool {
		var n int
		ca, n = lookup(e.srv.Conns(ConnQuery{}), vinA)
		return n == 1 && ca.AcksOwed == 1
	})
	if ca.BufferedBytes <= 0 {
		t.Errorf("buffered_bytes %d with a reply queued", ca.BufferedBytes)
	}
	waitFor(t, func() bool { return len(spooled(t, e.sp)) == 1 })
	e.srv.Delivered(spooled(t, e.sp)[0].Seq)
	expectAck(t, a, "waits", "V")
	waitFor(t, func() bool { return connFor(t, e.srv.Conns(ConnQuery{}), vinA).AcksOwed == 0 })
}

// fakeVehicles fills a server's registry with n vehicles whose counters
// are random (a server that never started: no loop touches them).
func fakeVehicles(n int, seed uint64) *Server {
	r := rand.New(rand.NewPCG(seed, seed))
	s := &Server{}
	for i := range n {
		st := &vehicleStats{cid: uint64(i + 1), vin: fmt.Sprintf("VIN%05d", r.IntN(n/2+1)), sinceMs: int64(r.IntN(50)),
			tlsVersion: tls.VersionTLS13, cipherSuite: tls.TLS_AES_128_GCM_SHA256,
			remote: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1024 + i%60000}}
		st.records.Store(uint64(r.IntN(20)))
		st.bytes.Store(uint64(r.IntN(20)))
		st.lastRecordMs.Store(int64(r.IntN(20)))
		st.rateLimited.Store(uint64(r.IntN(3)))
		st.refused.Store(uint64(r.IntN(3)))
		st.acksOwed.Store(int64(r.IntN(5)))
		st.buffered.Store(int64(r.IntN(5)))
		st.idx = len(s.vehicles)
		s.vehicles = append(s.vehicles, st)
	}
	return s
}

// TestConnzSortAndPages: for every sort key, both directions and many
// page sizes, the pages are the full sort (checked against a plain sort
// with the same keys and tie-breaks) cut at offset and limit: no entry
// twice, none missing, totals right.
func TestConnzSortAndPages(t *testing.T) {
	for _, n := range []int{0, 1, 7, 300} {
		s := fakeVehicles(n, uint64(n))
		for _, k := range ConnSorts {
			for _, rev := range []bool{false, true} {
				want := slices.Clone(s.vehicles)
				desc := k.descending() != rev
				slices.SortFunc(want, func(a, b *vehicleStats) int {
					var c int
					switch k {
					case SortVIN:
						c = cmp.Or(cmp.Compare(a.vin, b.vin), cmp.Compare(a.cid, b.cid))
					case SortCID:
						c = cmp.Compare(a.cid, b.cid)
					default:
						c = cmp.Compare(a.key(k), b.key(k))
					}
					if desc {
						c = -c
					}
					if c != 0 || k == SortVIN || k == SortCID {
						return c
					}
					return cmp.Or(cmp.Compare(a.vin, b.vin), cmp.Compare(a.cid, b.cid))
				})
				for _, limit := range []int{1, 3, 50, 1000} {
					var got []uint64
					for off := 0; off < n+limit; off += limit {
						p := s.Conns(ConnQuery{Sort: k, Reverse: rev, Offset: off, Limit: limit})
						if p.Total != n || len(p.Conns) > limit {
							t.Fatalf("n=%d %s rev=%v limit %d offset %d: total %d, %d entries", n, k, rev, limit, off, p.Total, len(p.Conns))
						}
						for _, c := range p.Conns {
							got = append(got, c.CID)
						}
					}
					if len(got) != n {
						t.Fatalf("n=%d %s rev=%v limit %d: pages hold %d entries", n, k, rev, limit, len(got))
					}
					for i, st := range want {
						if got[i] != st.cid {
							t.Fatalf("n=%d %s rev=%v limit %d: entry %d is cid %d, want %d", n, k, rev, limit, i, got[i], st.cid)
						}
					}
				}
			}
		}
	}
}

func TestConnzQueryDefaultsAndFilter(t *testing.T) {
	s := fakeVehicles(300, 1)
	p := s.Conns(ConnQuery{Limit: -1, Offset: -5})
	if p.Limit != DefaultConnLimit || p.Offset != 0 || len(p.Conns) != DefaultConnLimit || p.Sort != SortVIN {
		t.Errorf("defaults: limit %d offset %d entries %d sort %s", p.Limit, p.Offset, len(p.Conns), p.Sort)
	}
	if p := s.Conns(ConnQuery{Limit: MaxConnLimit + 1}); p.Limit != MaxConnLimit {
		t.Errorf("limit not capped: %d", p.Limit)
	}
	if p := s.Conns(ConnQuery{Offset: 300}); p.Total != 300 || len(p.Conns) != 0 || p.Conns == nil {
		t.Errorf("past the end: %+v", p)
	}
	want := 0
	for _, st := range s.vehicles {
		if containsFold(st.vin, "in0001") {
			want++
		}
	}
	p = s.Conns(ConnQuery{VIN: "in0001", Limit: 1000})
	if p.Total != want || len(p.Conns) != want || want == 0 {
		t.Fatalf("filter: total %d, %d entries, want %d", p.Total, len(p.Conns), want)
	}
	for _, c := range p.Conns {
		if !containsFold(c.VIN, "IN0001") {
			t.Errorf("filter let %s through", c.VIN)
		}
	}
	if _, err := ParseConnSort("nope"); err == nil {
		t.Error("ParseConnSort took an unknown key")
	}
	if k, err := ParseConnSort(""); err != nil || k != SortVIN {
		t.Errorf("ParseConnSort(\"\") = %q, %v", k, err)
	}
}

// TestConnzWhileVehiclesComeAndGo reads /connz's source and Stats in a
// loop while vehicles connect, send and leave (go test -race: the
// counters read off the loops are atomics, the rest is published under
// the registry's lock).
func TestConnzWhileVehiclesComeAndGo(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, k := range ConnSorts {
					p := e.srv.Conns(ConnQuery{Sort: k, Limit: 5})
					for _, c := range p.Conns {
						if c.VIN != vinA && c.VIN != vinB {
							t.Errorf("entry %+v", c)
						}
					}
				}
				_ = e.srv.Stats()
			}
		}()
	}
	var writers sync.WaitGroup
	for w, vin := range []string{vinA, vinB, vinA} {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for round := range 5 {
				c := e.dial(t, vin)
				for i := range 10 {
					tx := fmt.Sprintf("w%d-r%d-%d", w, round, i)
					c.Send(newRecord(vin, "V", tx))
					if r, err := c.ReadReply(5 * time.Second); err != nil || !r.Ack {
						t.Errorf("%s: %+v %v", tx, r, err)
						return
					}
				}
				c.Close()
			}
		}()
	}
	writers.Wait()
	close(stop)
	readers.Wait()
	waitFor(t, func() bool { return e.srv.Conns(ConnQuery{}).Total == 0 })
	if n := e.srv.Vehicles(); n != 0 {
		t.Fatalf("%d vehicles left in the registry", n)
	}
}

// TestConnzManyConnections opens many real connections (FT_CONNZ_CONNS,
// default 300) and logs what one /connz page costs among them.
func TestConnzManyConnections(t *testing.T) {
	n := 300
	if v, err := strconv.Atoi(os.Getenv("FT_CONNZ_CONNS")); err == nil && v > 0 {
		n = v
	}
	e := newTestEnv(t, allTopics, func(o *Options) { o.Loops = 2 })
	vins := make([]string, 20)
	for i := range vins {
		vins[i] = fmt.Sprintf("5YJ3E1EA1KF1%05d", i)
	}
	// The directory's CA signs the new vehicles' certificates too.
	if _, err := devca.WriteDir(e.certs, vins); err != nil {
		t.Fatal(err)
	}
	cfgs := make([]*tls.Config, len(vins))
	for i, v := range vins {
		cfgs[i] = e.clientTLS(t, v)
	}
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var clients []*vehicle.Client
	dialStart := time.Now()
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			vin, cfg := vins[i%len(vins)], cfgs[i%len(vins)]
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := vehicle.Dial(ctx, vehicle.Config{Addr: e.addr(), TLS: cfg, Header: http.Header{"Version": []string{"many"}}})
			if err != nil {
				t.Errorf("dial %d: %v", i, err)
				return
			}
			if i%10 == 0 {
				c.Send(newRecord(vin, "V", fmt.Sprintf("many-%d", i)))
				if _, err := c.ReadReply(10 * time.Second); err != nil {
					t.Errorf("reply %d: %v", i, err)
				}
			}
			mu.Lock()
			clients = append(clients, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	if t.Failed() {
		return
	}
	t.Logf("%d connections opened in %v", n, time.Since(dialStart).Round(time.Millisecond))
	waitFor(t, func() bool { return e.srv.Conns(ConnQuery{}).Total == n })

	const rounds = 50
	for _, k := range []ConnSort{SortVIN, SortRecords, SortLastRecord} {
		var p ConnPage
		begin := time.Now()
		for range rounds {
			p = e.srv.Conns(ConnQuery{Sort: k, Limit: 100})
		}
		per := time.Since(begin) / rounds
		if p.Total != n || len(p.Conns) != min(n, 100) {
			t.Fatalf("sort %s: total %d, %d entries", k, p.Total, len(p.Conns))
		}
		if k == SortRecords && p.Conns[0].RecordsIn != 1 {
			t.Errorf("sort by records: first entry has %d records", p.Conns[0].RecordsIn)
		}
		// The registry lock is held for the copy of the pointers only.
		lockStart := time.Now()
		e.srv.vehMu.Lock()
		snap := slices.Clone(e.srv.vehicles)
		e.srv.vehMu.Unlock()
		held := time.Since(lockStart)
		t.Logf("%d vehicles, sort %s, limit 100: %v per /connz page (registry lock held ~%v for the copy of %d pointers)",
			n, k, per, held, len(snap))
	}
}

// BenchmarkConnz is one /connz page (limit 100) among 18,000 registered
// vehicles, for a few sort keys: the copy of the registry's pointers, the
// keys read, the page picked and its entries built.
func BenchmarkConnz(b *testing.B) {
	s := fakeVehicles(18000, 3)
	for _, k := range []ConnSort{SortVIN, SortRecords, SortLastRecord} {
		b.Run(string(k), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if p := s.Conns(ConnQuery{Sort: k, Limit: 100}); len(p.Conns) != 100 {
					b.Fatal(len(p.Conns))
				}
			}
		})
	}
	b.Run("registry-copy", func(b *testing.B) {
		var snap []*vehicleStats
		for b.Loop() {
			s.vehMu.Lock()
			snap = append(snap[:0], s.vehicles...)
			s.vehMu.Unlock()
		}
	})
}

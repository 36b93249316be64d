package netloop

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
)

// clientWire wraps a client's TCP connection: it can split the first TLS
// record (the ClientHello) into a 1-byte record and the rest, which is
// legal TLS, and hold back everything written after it (the client's
// second flight) until release is closed.
type clientWire struct {
	net.Conn
	split   bool
	release chan struct{} // nil: never hold back

	mu     sync.Mutex
	writes int
	hello  []byte // the first write, as the client produced it
}

func (w *clientWire) Write(p []byte) (int, error) {
	w.mu.Lock()
	n := w.writes
	w.writes++
	if n == 0 {
		w.hello = append([]byte(nil), p...)
	}
	w.mu.Unlock()
	if n == 0 && w.split {
		if _, err := w.Conn.Write(splitFirstRecord(p)); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if n > 0 && w.release != nil {
		<-w.release
	}
	return w.Conn.Write(p)
}

// splitFirstRecord re-frames the TLS record at the start of p as two
// records: the first byte of its body, then the rest.
func splitFirstRecord(p []byte) []byte {
	n := int(p[3])<<8 | int(p[4])
	body := p[5 : 5+n]
	out := append([]byte{p[0], p[1], p[2], 0, 1}, body[0])
	out = append(out, p[0], p[1], p[2], byte((n-1)>>8), byte(n-1))
	out = append(out, body[1:]...)
	return append(out, p[5+n:]...)
}

// fixedRandom makes the client's first 32-byte read, its ClientHello
// random, the given value; everything else is random.
type fixedRandom struct {
	mu     sync.Mutex
	random [32]byte
	used   bool
}

func (r *fixedRandom) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.used && len(p) == len(r.random) {
		r.used = true
		return copy(p, r.random[:]), nil
	}
	return rand.Read(p)
}

// keyLogged reports when the client has logged its application traffic
// secret: it has read the server's Finished, so the server has derived
// (and logged) its own.
type keyLogged struct {
	once sync.Once
	ch   chan struct{}
}

func newKeyLogged() *keyLogged { return &keyLogged{ch: make(chan struct{})} }

func (k *keyLogged) Write(line []byte) (int, error) {
	if bytes.HasPrefix(line, []byte("CLIENT_TRAFFIC_SECRET_0 ")) {
		k.once.Do(func() { close(k.ch) })
	}
	return len(line), nil
}

func (k *keyLogged) wait(t *testing.T, who string) {
	t.Helper()
	select {
	case <-k.ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: the server's Finished never arrived", who)
	}
}

// handshakePeer is one client of the same-random tests.
type handshakePeer struct {
	name   string
	vin    string // "" : no client certificate (the attacker)
	split  bool
	hold   bool // hold the second flight until released
	wire   *clientWire
	logged *keyLogged
	done   chan error
	client *vehicle.Client
}

// start dials: for a vehicle the whole TLS + WebSocket upgrade, for the
// attacker a bare TLS handshake, with random as the ClientHello random.
func (p *handshakePeer) start(t *testing.T, e *testEnv, random [32]byte) {
	t.Helper()
	p.logged = newKeyLogged()
	p.done = make(chan error, 1)
	var cfg *tls.Config
	if p.vin != "" {
		cfg = e.clientTLS(t, p.vin)
	} else {
		cfg = e.clientTLS(t, vinA)
		cfg.Certificates = nil
	}
	cfg.Rand = &fixedRandom{random: random}
	cfg.KeyLogWriter = p.logged
	dialWire := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		p.wire = &clientWire{Conn: c, split: p.split}
		if p.hold {
			p.wire.release = make(chan struct{})
		}
		return p.wire, nil
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if p.vin == "" {
			c, err := dialWire(ctx, "tcp", e.addr())
			if err != nil {
				p.done <- err
				return
			}
			defer c.Close()
			tc := tls.Client(c, cfg)
			err = tc.HandshakeContext(ctx)
			if err == nil {
				// TLS 1.3: the server judges the client's certificate
				// after the client's handshake returned; its verdict
				// arrives as an alert on the first read.
				tc.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err = tc.Read(make([]byte, 1))
			}
			p.done <- err
			return
		}
		c, err := vehicle.Dial(ctx, vehicle.Config{Addr: e.addr(), TLS: cfg, NetDial: dialWire})
		p.client = c
		p.done <- err
	}()
}

func (p *handshakePeer) releaseSecondFlight() {
	if p.hold {
		close(p.wire.release)
	}
}

func (p *handshakePeer) finish(t *testing.T) error {
	t.Helper()
	select {
	case err := <-p.done:
		if p.client != nil {
			t.Cleanup(func() { p.client.Close() })
		}
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: dial did not finish", p.name)
		return nil
	}
}

// helloRandom is the random of the ClientHello the peer's client wrote.
func (p *handshakePeer) helloRandom() []byte {
	p.wire.mu.Lock()
	defer p.wire.mu.Unlock()
	return p.wire.hello[11:43]
}

// TestSplitClientHelloFromAVehicleWorks: a ClientHello split over two TLS
// records is legal; the vehicle connects and its connection moves to the
// native record layer.
func TestSplitClientHelloFromAVehicleWorks(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	native := recordLayerNative.Get()
	p := &handshakePeer{name: "vehicle", vin: vinA, split: true}
	p.start(t, e, randomBytes(t))
	if err := p.finish(t); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		tx := strings.Repeat("s", i+1)
		p.client.Send(newRecord(vinA, "V", tx))
		expectAck(t, p.client, tx, "V")
	}
	if got := recordLayerNative.Get() - native; got != 1 {
		t.Fatalf("native record layer taken %d times, want 1", got)
	}
}

func randomBytes(t *testing.T) [32]byte {
	var r [32]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSameClientRandomKeepsEachConnectionsKeys: two handshakes carry the
// same ClientHello random (anyone can copy a vehicle's: it is sent in
// clear), one ClientHello split over two records and one not, the first
// one's second flight held back until the other's server Finished was
// sent. Each connection must run on the keys it negotiated itself: the
// vehicle's records are acked and spooled under its own VIN, a peer with
// no certificate is refused, and nothing the other handshake logged ever
// reaches a connection's record layer.
func TestSameClientRandomKeepsEachConnectionsKeys(t *testing.T) {
	attacker := func(split bool) *handshakePeer {
		return &handshakePeer{name: "attacker (no certificate)", split: split}
	}
	vehicleA := func(split bool) *handshakePeer {
		return &handshakePeer{name: "vehicle " + vinA, vin: vinA, split: split}
	}
	vehicleB := func(split bool) *handshakePeer {
		return &handshakePeer{name: "vehicle " + vinB, vin: vinB, split: split}
	}
	for _, tc := range []struct {
		name          string
		first, second *handshakePeer
	}{
		{"vehicle first, attacker split", vehicleA(false), attacker(true)},
		{"vehicle split first, attacker", vehicleA(true), attacker(false)},
		{"attacker split first, vehicle", attacker(true), vehicleA(false)},
		{"attacker first, vehicle split", attacker(false), vehicleA(true)},
		{"two vehicles, second split", vehicleA(false), vehicleB(true)},
		{"two vehicles, first split", vehicleA(true), vehicleB(false)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, allTopics, nil)
			native := recordLayerNative.Get()
			random := randomBytes(t)
			first, second := tc.first, tc.second
			first.hold = true
			first.start(t, e, random)
			first.logged.wait(t, first.name)
			second.start(t, e, random)
			second.logged.wait(t, second.name)
			// Both server first flights are out, so the server has derived
			// and logged both handshakes' traffic secrets; now let the
			// first one finish.
			first.releaseSecondFlight()
			errs := map[*handshakePeer]error{first: first.finish(t), second: second.finish(t)}
			for _, p := range []*handshakePeer{first, second} {
				if got := p.helloRandom(); !bytes.Equal(got, random[:]) {
					t.Fatalf("%s sent random %x, want %x", p.name, got, random)
				}
			}
			vehicles := 0
			for p, err := range errs {
				if p.vin == "" {
					if err == nil {
						t.Fatalf("%s: handshake accepted", p.name)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", p.name, err)
				}
				vehicles++
			}
			// Each vehicle's records decrypt under its own keys and are
			// kept under its own VIN.
			for _, p := range []*handshakePeer{first, second} {
				if p.vin == "" {
					continue
				}
				for i := range 5 {
					tx := p.vin + "-" + strings.Repeat("k", i+1)
					if err := p.client.Send(newRecord(p.vin, "V", tx)); err != nil {
						t.Fatalf("%s: send: %v", p.name, err)
					}
					r, err := p.client.ReadReply(5 * time.Second)
					if err != nil {
						t.Fatalf("%s: no ack (its connection runs on keys it did not negotiate?): %v", p.name, err)
					}
					if !r.Ack || r.TxID != tx {
						t.Fatalf("%s: got %+v, want ack %q", p.name, r, tx)
					}
				}
			}
			if got := recordLayerNative.Get() - native; got != uint64(vehicles) {
				t.Fatalf("native record layer taken %d times, want %d", got, vehicles)
			}
			perVIN := map[string]int{}
			recs, err := e.sp.Read(0, 0, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if string(r.Topic) == "V" {
					perVIN[r.VIN]++
					if !strings.HasPrefix(string(r.TxID), r.VIN+"-") {
						t.Fatalf("record %q kept under VIN %s", r.TxID, r.VIN)
					}
				}
			}
			for _, p := range []*handshakePeer{first, second} {
				if p.vin != "" && perVIN[p.vin] != 5 {
					t.Fatalf("spool holds %d records of %s, want 5", perVIN[p.vin], p.vin)
				}
			}
		})
	}
}

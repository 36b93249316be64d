package netloop

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/internal/tlsrecord"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
)

// timedDial is a vehicle's whole dial (TCP, TLS, WebSocket upgrade) and
// one acked record.
func timedDial(t *testing.T, e *testEnv, tx string) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := vehicle.Dial(ctx, vehicle.Config{Addr: e.addr(), TLS: e.clientTLS(t, vinA)})
	if err != nil {
		t.Fatalf("vehicle dial while peers stall: %v", err)
	}
	took := time.Since(start)
	defer c.Close()
	c.Send(newRecord(vinA, "V", tx))
	expectAck(t, c, tx, "V")
	return took
}

// openStalled opens n connections that each send first and then nothing.
func openStalled(t *testing.T, e *testEnv, n int, first []byte) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", e.addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write(first); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	return conns
}

// TestStalledHandshakesHoldNoSlot: peers that send the start of a
// ClientHello (a record header announcing 16 KiB) and stop, and peers that
// send a whole ClientHello and never their second flight, ten times as
// many of each as there are handshake slots: a vehicle still gets in, and
// the stalled ones are closed at the handshake deadline and counted.
func TestStalledHandshakesHoldNoSlot(t *testing.T) {
	const slots = 2
	e := newTestEnv(t, allTopics, func(o *Options) {
		o.MaxHandshakes = slots
		o.HandshakeTimeout = 2 * time.Second
	})
	timeouts := refusedHandshakeTimeout.Get()
	partial := openStalled(t, e, 10*slots, []byte{0x16, 0x03, 0x01, 0x40, 0x00})
	whole := openStalled(t, e, 10*slots, e2e.ClientHello(t, e.clientTLS(t, vinB)))
	waitFor(t, func() bool {
		return handshakesRunning.Load() >= 10*slots
	})
	for i := range 3 {
		timedDial(t, e, "in-"+string(rune('a'+i)))
	}
	if got := handshakeBytes.Load(); got < 10*slots*handshakeCost {
		t.Fatalf("handshake memory %d bytes, want at least %d for the stalled handshakes", got, 10*slots*handshakeCost)
	}
	for _, c := range append(partial, whole...) {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("stalled connection not closed by the server: %v", err)
		}
	}
	if got := refusedHandshakeTimeout.Get() - timeouts; got != 20*slots {
		t.Fatalf("handshake timeouts counted %d, want %d", got, 20*slots)
	}
	waitFor(t, func() bool { return handshakeBytes.Load() == 0 })
}

// TestHandshakeMemoryCap: ClientHellos arriving and handshakes in progress
// together stay under MaxHandshakeBytes; past it a connection is closed
// and counted, and once memory is returned vehicles get in again.
func TestHandshakeMemoryCap(t *testing.T) {
	e := newTestEnv(t, allTopics, func(o *Options) {
		o.MaxHandshakeBytes = 2*handshakeCost + 512
		o.HandshakeTimeout = 5 * time.Second
	})
	refused := refusedHandshakeMemory.Get()
	hello := e2e.ClientHello(t, e.clientTLS(t, vinB))
	whole := openStalled(t, e, 2, hello)
	waitFor(t, func() bool { return handshakesRunning.Load() == 2 })
	// A third whole ClientHello does not fit: closed, counted.
	third := openStalled(t, e, 1, hello)[0]
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, third); err != nil {
		t.Fatalf("connection past the handshake memory cap not closed: %v", err)
	}
	// A ClientHello still arriving is held by the loop, within the cap...
	small := openStalled(t, e, 1, hello[:300])[0]
	// ...and one more past it is closed.
	big := openStalled(t, e, 1, hello[:1000])[0]
	big.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, big); err != nil {
		t.Fatalf("partial ClientHello past the cap not closed: %v", err)
	}
	if got := refusedHandshakeMemory.Get() - refused; got != 2 {
		t.Fatalf("tls_handshake_memory counted %d, want 2", got)
	}
	if got := handshakeBytes.Load(); got > e.srv.opts.MaxHandshakeBytes {
		t.Fatalf("handshake memory %d over the cap %d", got, e.srv.opts.MaxHandshakeBytes)
	}
	small.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := small.Read(make([]byte, 1)); !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
		t.Fatalf("partial ClientHello within the cap was closed: %v", err)
	}
	for _, c := range append(whole, small) {
		c.Close()
	}
	waitFor(t, func() bool { return handshakeBytes.Load() == 0 })
	timedDial(t, e, "after")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestBadClientHelloRefused: a first flight that cannot be a ClientHello
// is closed by the loop without a handshake goroutine, with the alert
// crypto/tls would send (none to a peer not speaking TLS), and counted.
func TestBadClientHelloRefused(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	hello := e2e.ClientHello(t, e.clientTLS(t, vinA))
	// The first record carries 10 bytes of the ClientHello, the second is
	// application data.
	appInHello := append(append([]byte{22, 3, 1, 0, 10}, hello[5:15]...), 23, 3, 3, 0, 1, 0)
	for _, tc := range []struct {
		name  string
		first []byte
		alert []byte // nil: closed without one
	}{
		{"plain HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), nil},
		{"alert record first", []byte{21, 3, 1, 0, 2, 2, 40}, nil},
		{"record over 16 KiB", []byte{22, 3, 1, 0x40, 0x01}, alertRecord(tlsrecord.AlertRecordOverflow)},
		{"empty handshake record", []byte{22, 3, 1, 0, 0}, alertRecord(tlsrecord.AlertDecodeError)},
		{"ServerHello instead", []byte{22, 3, 1, 0, 4, 2, 0, 0, 0}, alertRecord(tlsrecord.AlertUnexpectedMessage)},
		{"ClientHello over 64 KiB", []byte{22, 3, 1, 0, 4, 1, 1, 0, 1}, alertRecord(tlsrecord.AlertDecodeError)},
		{"application data inside the ClientHello", appInHello, alertRecord(tlsrecord.AlertUnexpectedMessage)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, running := refusedBadClientHello.Get(), handshakesRunning.Load()
			c := openStalled(t, e, 1, tc.first)[0]
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("not closed: %v", err)
			}
			if !bytes.Equal(got, tc.alert) {
				t.Fatalf("server sent %x, want %x", got, tc.alert)
			}
			if n := refusedBadClientHello.Get() - before; n != 1 {
				t.Fatalf("tls_bad_client_hello counted %d, want 1", n)
			}
			if handshakesRunning.Load() > running {
				t.Fatal("a handshake goroutine started")
			}
		})
	}
	timedDial(t, e, "after")
}

// TestClientHelloOneByteAtATime: a ClientHello that trickles in byte by
// byte, split over many records, still makes a working connection.
func TestClientHelloOneByteAtATime(t *testing.T) {
	e := newTestEnv(t, allTopics, nil)
	native := recordLayerNative.Get()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := vehicle.Dial(ctx, vehicle.Config{Addr: e.addr(), TLS: e.clientTLS(t, vinA),
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			return &tricklingConn{Conn: c}, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Send(newRecord(vinA, "V", "trickled"))
	expectAck(t, c, "trickled", "V")
	if got := recordLayerNative.Get() - native; got != 1 {
		t.Fatalf("native record layer taken %d times, want 1", got)
	}
}

// tricklingConn re-frames its first write (the ClientHello record) as
// records of 7 bytes each and writes the result one byte per write.
type tricklingConn struct {
	net.Conn
	done bool
}

func (c *tricklingConn) Write(p []byte) (int, error) {
	if c.done {
		return c.Conn.Write(p)
	}
	c.done = true
	n := int(p[3])<<8 | int(p[4])
	body := p[5 : 5+n]
	var out []byte
	for len(body) > 0 {
		k := min(7, len(body))
		out = append(out, p[0], p[1], p[2], 0, byte(k))
		out = append(out, body[:k]...)
		body = body[k:]
	}
	out = append(out, p[5+n:]...)
	for i := range out {
		if _, err := c.Conn.Write(out[i : i+1]); err != nil {
			return 0, err
		}
		if i%64 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	return len(p), nil
}

package netloop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

// expectNoReply checks that nothing arrives for a while.
func expectNoReply(t *testing.T, c *vehicle.Client, wait time.Duration) {
	t.Helper()
	r, err := c.ReadReply(wait)
	if err == nil {
		t.Fatalf("got %+v, want no reply", r)
	}
	if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() {
		t.Fatalf("got %v, want a read timeout", err)
	}
}

func TestReliableAckWaitsForDelivery(t *testing.T) {
	e := newTestEnv(t, allTopics, func(o *Options) { o.ReliableTopics = []string{"V"} })
	c := e.dial(t, vinA)
	c.SendMany([]*envelope.StreamMessage{newRecord(vinA, "V", "reliable"), newRecord(vinA, "alerts", "plain")})
	// The alerts record is durable at once, but its ack must wait behind
	// the V record's: acks leave in order.
	expectNoReply(t, c, 300*time.Millisecond)
	recs := spooled(t, e.sp)
	if len(recs) != 2 {
		t.Fatalf("spool holds %d records, want 2", len(recs))
	}
	e.srv.Delivered(recs[0].Seq)
	expectAck(t, c, "reliable", "V")
	expectAck(t, c, "plain", "alerts")
}

func TestDeliveryReportedBeforeRegistration(t *testing.T) {
	e := newTestEnv(t, allTopics, func(o *Options) { o.ReliableTopics = []string{"V"} })
	c := &conn{srv: e.srv, gc: wakeOnly{}}
	e.srv.Delivered(42) // the forwarder was faster than the loop
	e.srv.awaitDelivery(42, c, 7, nil)
	if n := c.mb.notes; len(n) != 1 || n[0].token != 7 || !n[0].delivered {
		t.Fatalf("mailbox %+v, want the early delivery for token 7", n)
	}
	if len(e.srv.pendingDelivery) != 0 {
		t.Fatalf("registry keeps %d entries", len(e.srv.pendingDelivery))
	}
}

func TestAckOnReceipt(t *testing.T) {
	e := newTestEnv(t, allTopics, func(o *Options) { o.AckMode = AckOnReceipt })
	c := e.dial(t, vinA)
	c.Send(newRecord(vinA, "V", "fast"))
	expectAck(t, c, "fast", "V")
	waitFor(t, func() bool { return len(spooled(t, e.sp)) == 1 })
}

func TestRateLimitDropsExcessWithoutAck(t *testing.T) {
	e := newTestEnv(t, allTopics, func(o *Options) { o.RateLimit = RateLimit{Limit: 3, Interval: time.Second} })
	c := e.dial(t, vinA)
	before := recRateLimited.Get()
	start := time.Now()
	var ms []*envelope.StreamMessage
	for i := range 5 {
		ms = append(ms, newRecord(vinA, "V", fmt.Sprintf("rl-%d", i)))
	}
	c.SendMany(ms)
	for i := range 3 {
		expectAck(t, c, fmt.Sprintf("rl-%d", i), "V")
	}
	if time.Since(start) < 700*time.Millisecond {
		expectNoReply(t, c, 200*time.Millisecond)
	}
	if got := recRateLimited.Get() - before; got != 2 {
		t.Fatalf("rate-limited counter moved by %d, want 2", got)
	}
	// A new window takes records again.
	time.Sleep(time.Until(start.Add(1100 * time.Millisecond)))
	c.Send(newRecord(vinA, "V", "next-window"))
	expectAck(t, c, "next-window", "V")
}

func TestVINAllowlistRefusesOthersWith403(t *testing.T) {
	e := newTestEnv(t, allTopics, func(o *Options) { o.AllowVIN = func(v string) bool { return v == vinA } })
	before := refusedVINNotAllowed.Get()
	_, err := vehicle.Dial(context.Background(), vehicle.Config{Addr: e.addr(), TLS: e.clientTLS(t, vinB)})
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("vehicle off the allowlist: %v, want 403", err)
	}
	if refusedVINNotAllowed.Get()-before != 1 {
		t.Fatal("refusal not counted")
	}
	c := e.dial(t, vinA)
	c.Send(newRecord(vinA, "V", "allowed"))
	expectAck(t, c, "allowed", "V")
}

// spooledConnectivity returns the connectivity records in the spool.
func spooledConnectivity(t *testing.T, e *testEnv) []*pb.VehicleConnectivity {
	t.Helper()
	var out []*pb.VehicleConnectivity
	for _, r := range spooled(t, e.sp) {
		if string(r.Topic) != "connectivity" {
			continue
		}
		m := &pb.VehicleConnectivity{}
		if err := m.UnmarshalVT(r.Payload); err != nil {
			t.Fatal(err)
		}
		if r.VIN != m.Vin {
			t.Fatalf("record VIN %s, payload VIN %s", r.VIN, m.Vin)
		}
		out = append(out, m)
	}
	return out
}

func TestConnectivityEventsOncePerConnectionHoweverItEnds(t *testing.T) {
	e := newTestEnv(t, allTopics, func(o *Options) {
		o.Connectivity = true
		o.IdleTimeout = 500 * time.Millisecond
	})
	dial := func(txid string) *vehicle.Client {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := vehicle.Dial(ctx, vehicle.Config{Addr: e.addr(), TLS: e.clientTLS(t, vinA), Header: http.Header{
			"X-Txid": []string{txid}, "X-Network-Interface": []string{"cellular"}, "Version": []string{"2024.1"}}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// 1: the vehicle closes properly.
	c := dial("conn-close")
	c.WriteFrame(ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	c.ReadReply(2 * time.Second)
	c.Close()
	// 2: the TCP connection just drops.
	c = dial("conn-drop")
	c.Close()
	// 3: a protocol error (text frame).
	c = dial("conn-text")
	c.WriteFrame(ws.OpText, true, []byte("x"))
	c.ReadReply(2 * time.Second)
	c.Close()
	// 4: idle timeout.
	c = dial("conn-idle")
	defer c.Close()
	_, err := c.ReadReply(5 * time.Second)
	var ce *vehicle.CloseError
	if !errors.As(err, &ce) || ce.Code != ws.StatusGoingAway {
		t.Fatalf("idle connection: %v, want close 1001", err)
	}

	want := map[string]bool{"conn-close": true, "conn-drop": true, "conn-text": true, "conn-idle": true}
	waitFor(t, func() bool { return len(spooledConnectivity(t, e)) == 2*len(want) })
	seen := map[string][]pb.ConnectivityEvent{}
	for _, m := range spooledConnectivity(t, e) {
		if m.Vin != vinA || m.NetworkInterface != "cellular" || m.CreatedAt == nil {
			t.Fatalf("event %v lacks fields", m)
		}
		seen[m.ConnectionId] = append(seen[m.ConnectionId], m.Status)
	}
	for id := range want {
		s := seen[id]
		if len(s) != 2 || s[0] != pb.ConnectivityEvent_CONNECTED || s[1] != pb.ConnectivityEvent_DISCONNECTED {
			t.Fatalf("connection %s has events %v, want CONNECTED then DISCONNECTED", id, s)
		}
	}
}

func TestConnectivityOnShutdownAndGeneratedConnectionID(t *testing.T) {
	e := newTestEnv(t, allTopics, func(o *Options) { o.Connectivity = true })
	c := e.dial(t, vinA) // no X-TXID: the server makes a UUID
	c.Send(newRecord(vinA, "V", "x"))
	expectAck(t, c, "x", "V")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	ev := spooledConnectivity(t, e)
	if len(ev) != 2 || ev[0].Status != pb.ConnectivityEvent_CONNECTED || ev[1].Status != pb.ConnectivityEvent_DISCONNECTED {
		t.Fatalf("events %v, want CONNECTED and DISCONNECTED", ev)
	}
	if len(ev[0].ConnectionId) != 36 || ev[0].ConnectionId != ev[1].ConnectionId {
		t.Fatalf("connection ids %q / %q, want one generated UUID", ev[0].ConnectionId, ev[1].ConnectionId)
	}
}

// Deliveries nobody in this process can wait for leave nothing behind: a
// backlog from an earlier run (seqs up to the spool's last seq at start),
// and a record whose commit failed.
func TestDeliveryRegistryDoesNotLeak(t *testing.T) {
	e := newTestEnv(t, allTopics, func(o *Options) { o.ReliableTopics = []string{"V"} })
	e.srv.deliveryFloor = 100 // as if the spool held 100 records at start
	e.srv.Delivered(50)
	if n := len(e.srv.pendingDelivery); n != 0 {
		t.Fatalf("a backlog delivery left %d registry entries", n)
	}
	e.srv.Delivered(150) // this run's, ahead of its registration: kept
	if n := len(e.srv.pendingDelivery); n != 1 {
		t.Fatalf("registry holds %d entries, want the early delivery", n)
	}
	c := &conn{srv: e.srv, gc: wakeOnly{}}
	e.srv.awaitDelivery(160, c, 7, nil)
	c.Committed(7, 160, errors.New("disk gone"))
	if _, ok := e.srv.pendingDelivery[160]; ok {
		t.Fatal("a failed commit's delivery wait stayed registered")
	}
}

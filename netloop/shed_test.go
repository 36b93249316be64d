package netloop

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
	"github.com/fleet-telemetry/fleet-telemetry/wsframe"
)

// TestSpoolFullShedsWith1013 fills a small spool: the record that does not
// fit is not acked, the vehicle is closed with 1013, and once a consumer
// frees space a reconnecting vehicle is served again. Nothing acked is
// missing from the spool.
func TestSpoolFullShedsWith1013(t *testing.T) {
	dir := t.TempDir()
	certs, tlsCfg := devServerTLS(t, dir, vinA)
	sp := openTestSpool(t, dir, spool.Options{Consumers: []string{"c"}, MaxBytes: 20 << 10})
	srv, err := New(Options{Addr: "127.0.0.1:0", TLS: tlsCfg, Spool: sp, RoutedTopics: allTopics, Loops: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	e := &testEnv{srv: srv, sp: sp, certs: certs}

	before := refusedSpoolFull.Get()
	c := e.dial(t, vinA)
	acked := map[string]bool{}
	var closeErr *vehicle.CloseError
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatal("a 20 KiB spool never filled")
		}
		tx := fmt.Sprintf("fill-%d", i)
		if err := c.Send(newRecord(vinA, "V", tx)); err != nil {
			t.Fatal(err)
		}
		r, err := c.ReadReply(5 * time.Second)
		if errors.As(err, &closeErr) {
			break
		}
		if err != nil || !r.Ack || r.TxID != tx {
			t.Fatalf("record %d: %+v %v", i, r, err)
		}
		acked[tx] = true
	}
	if closeErr.Code != ws.StatusCode(1013) {
		t.Fatalf("closed with %d, want 1013", closeErr.Code)
	}
	if refusedSpoolFull.Get() == before {
		t.Fatal("spool_full refusal not counted")
	}
	kept := map[string]bool{}
	for _, r := range spooled(t, sp) {
		kept[string(r.TxID)] = true
	}
	for tx := range acked {
		if !kept[tx] {
			t.Fatalf("acked %s is not in the spool", tx)
		}
	}
	if len(kept) != len(acked) {
		t.Fatalf("spool holds %d records, %d were acked: the shed record was kept", len(kept), len(acked))
	}

	// A consumer passes everything: space returns, service resumes.
	if err := sp.SetCursor("c", sp.LastSeq()); err != nil {
		t.Fatal(err)
	}
	c2 := e.dial(t, vinA)
	c2.Send(newRecord(vinA, "V", "after-space"))
	expectAck(t, c2, "after-space", "V")
}

// TestConnectionLimitRefusesWithoutStopping: beyond MaxConnections new
// connections are closed at once and counted; the server keeps serving.
func TestConnectionLimitRefusesWithoutStopping(t *testing.T) {
	e := newTestEnv(t, allTopics, func(o *Options) { o.MaxConnections = 3 })
	before := refusedTooMany.Get()
	var open []*vehicle.Client
	for range 3 {
		open = append(open, e.dial(t, vinA))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := vehicle.Dial(ctx, vehicle.Config{Addr: e.addr(), TLS: e.clientTLS(t, vinA)}); err == nil {
		t.Fatal("a fourth connection was accepted")
	}
	if refusedTooMany.Get()-before != 1 {
		t.Fatal("refusal not counted")
	}
	open[0].Send(newRecord(vinA, "V", "still-served"))
	expectAck(t, open[0], "still-served", "V")
	open[1].Close()
	waitFor(t, func() bool { return e.srv.Connections() < 3 })
	c := e.dial(t, vinA)
	c.Send(newRecord(vinA, "V", "room-again"))
	expectAck(t, c, "room-again", "V")
}

// TestPartialMessageBudget: many vehicles each half-way through a big
// message are shed with 1013 once their buffers together pass the budget;
// the memory they hold stays under it, and a small vehicle is still served.
func TestPartialMessageBudget(t *testing.T) {
	// The header announces 1,000,000 bytes; only 800,000 follow.
	frame := wsframe.AppendMaskedFrame(nil, ws.OpBinary, true, make([]byte, 1_000_000), testMask)
	expectShedOverBudget(t, 2<<20, 0, frame[:len(frame)-200_000])
}

// expectShedOverBudget has 8 vehicles, one after the other, each write
// unfinished (frames of a message that never ends) to a server whose
// connections may hold budget bytes in all. Those that pass the budget
// must be closed with 1013, what the connections hold must stay within
// budget+slack, at least one must be shed, and a small vehicle must still
// be served afterwards.
func expectShedOverBudget(t *testing.T, budget, slack int64, unfinished []byte) {
	t.Helper()
	e := newTestEnv(t, allTopics, func(o *Options) { o.MaxBufferedBytes = budget })
	var shed int
	for i := range 8 {
		c := e.dial(t, vinA)
		if err := c.Conn().SetWriteDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Conn().Write(unfinished); err != nil {
			shed++
			continue
		}
		_, err := c.ReadReply(300 * time.Millisecond)
		var ce *vehicle.CloseError
		if errors.As(err, &ce) {
			if ce.Code != statusTryAgainLater {
				t.Fatalf("connection %d closed with %d, want 1013", i, ce.Code)
			}
			shed++
		}
		if got := totalBuffered.Load(); got > budget+slack {
			t.Fatalf("connections hold %d bytes, budget %d (+%d)", got, budget, slack)
		}
	}
	if shed == 0 {
		t.Fatalf("8 unfinished messages of %d bytes fit a budget of %d: nothing was shed", len(unfinished), budget)
	}
	t.Logf("%d of 8 connections shed", shed)
	small := e.dial(t, vinB)
	small.Send(newRecord(vinB, "V", "small"))
	expectAck(t, small, "small", "V")
}

// TestSilentConnectionsTimeOutWithoutAWorker: TCP connections that never
// send a ClientHello hold no handshake worker and are closed at the
// handshake deadline, counted; vehicles connect meanwhile.
func TestSilentConnectionsTimeOutWithoutAWorker(t *testing.T) {
	e := newTestEnv(t, allTopics, func(o *Options) {
		o.HandshakeTimeout = 500 * time.Millisecond
		o.MaxHandshakes = 1
	})
	before := refusedHandshakeTimeout.Get()
	var silent []net.Conn
	for range 20 {
		c, err := net.Dial("tcp", e.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	// One handshake worker, twenty silent sockets: a vehicle still gets in.
	v := e.dial(t, vinA)
	v.Send(newRecord(vinA, "V", "during"))
	expectAck(t, v, "during", "V")
	for _, c := range silent {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("silent connection not closed by the server: %v", err)
		}
	}
	if got := refusedHandshakeTimeout.Get() - before; got != 20 {
		t.Fatalf("handshake timeouts counted %d, want 20", got)
	}
}

package netloop

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/gobwas/ws"
	"github.com/google/uuid"
	"github.com/panjf2000/gnet/v2"

	"github.com/fleet-telemetry/fleet-telemetry/internal/tlsrecord"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
	"github.com/fleet-telemetry/fleet-telemetry/proto/record"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
	"github.com/fleet-telemetry/fleet-telemetry/wsframe"
)

type phase uint8

const (
	phaseHandshake phase = iota // ClientHello arriving, then the TLS handshake
	phaseRequest                // waiting for the HTTP upgrade request
	phaseWebSocket              // records flow
	phaseClosing                // close frame sent; input is ignored
	phaseClosed                 // OnClose ran
)

// errorText is what the reference replies to a record it cannot use.
const errorText = "incorrect message format"

// statusTryAgainLater is WebSocket close 1013 (RFC 6455 registry): shed load,
// the vehicle reconnects and resends what was not acked.
const statusTryAgainLater ws.StatusCode = 1013

// maxRequestBytes caps the HTTP upgrade request (slowloris and garbage).
const maxRequestBytes = 8 << 10

// maxHandshakeBuffer caps the bytes held for one connection's handshake:
// its ClientHello while it arrives, then ciphertext waiting for the
// handshake goroutine.
const maxHandshakeBuffer = 64 << 10

// handshakeCost is what a handshake in progress is charged against
// Options.MaxHandshakeBytes: its goroutine and crypto/tls's state (about
// 33 KiB measured once the server's first flight is out) and up to
// maxHandshakeBuffer of ciphertext waiting for the goroutine.
const handshakeCost = 96 << 10

// keepBufferBytes is the largest per-connection buffer kept while empty;
// bigger ones are released so idle vehicles stay small.
const keepBufferBytes = 4 << 10

// conn is one vehicle connection. Fields without a comment are owned by the
// connection's event loop.
type conn struct {
	srv *Server
	gc  gnet.Conn
	mc  *memConn
	tls *tls.Conn // set by the handshake goroutine before hsDone; nil once rec took over
	// rec, set by the handshake goroutine before hsDone, is the TLS 1.3
	// record layer that replaces tls after the handshake (nil: stay on
	// crypto/tls). cipher holds ciphertext that is not in gnet's buffer
	// (what arrived during the handshake); partial is how many bytes of an
	// incomplete record the last read left in gnet's buffer.
	rec     *tlsrecord.Conn
	cipher  []byte
	partial int

	phase    phase
	accepted time.Time
	// tlsEnded: the TLS stream is over for writing (a fatal alert went
	// either way, or our close_notify was sent).
	tlsEnded bool

	// Until the ClientHello is complete the loop holds the stream's first
	// bytes (hello follows them) and books them against the server's
	// handshake memory; then hsStarted: a handshake goroutine runs.
	hello     helloReader
	helloBuf  []byte
	hsStarted bool
	// Set by the handshake goroutine; hsDone publishes hsErr and tls. It is
	// set by a task the goroutine queues on the loop after its last TLS
	// write, never by the goroutine itself: the loop must not write before
	// the handshake's queued records (the session tickets) are out.
	hsErr  error
	hsDone atomic.Bool

	// deadline (unix ns, 0 = none) is when the ticker should expire the
	// connection; expired is its flag to the loop. goAway asks the loop to
	// finish and close (shutdown).
	deadline atomic.Int64
	expired  atomic.Bool
	goAway   atomic.Bool

	// upgraded is set once the WebSocket upgrade succeeded: the connection
	// then owes exactly one DISCONNECTED event.
	upgraded bool

	id    Identity
	idErr error
	// Request headers kept for records and connectivity events.
	clientVersion, connectionID, networkInterface string

	// Rate limit window: records counted since windowStart (unix ns).
	windowStart int64
	windowCount int

	// Metrics: the rate_limit_exceeded_total series last used, and the
	// vin_signal_count series when this VIN is tracked.
	rlTopic    string
	rlCounter  *metrics.Counter
	vinSignals *vinSignalMetrics
	// closed is set when OnClose ran (read off the loop by Delivered).
	closed atomic.Bool

	plain   []byte // plaintext not yet parsed (partial frame or request)
	charged int    // held() as last booked in srv.buffered
	dec     *wsframe.Decoder

	// replies holds encoded WebSocket frames (acks, error replies) in the
	// order their records arrived; queue marks where each ends and whether
	// it may leave. Token t is queue[t-headToken].
	replies   []byte
	queue     []pendingReply
	headToken uint64

	// The mailbox is written by the spool's committer goroutine.
	mbMu       sync.Mutex
	mailbox    []commitNote
	mbSpare    []commitNote
	wakeQueued bool
}

type pendingReply struct {
	end        int   // offset in replies just past this reply's frame
	receivedAt int64 // unix ns, for the ack latency histogram
	ready      bool
	// onDelivery: the ack waits for the sink's confirmation, not the commit.
	onDelivery bool
	// reliable counts the ack once delivery releases it.
	reliable *reliableMetrics
}

// commitNote tells the loop that a record's commit finished (err says how)
// or, with delivered, that its sink confirmed it.
type commitNote struct {
	token     uint64
	err       error
	delivered bool
}

func newConn(s *Server, gc gnet.Conn) *conn {
	c := &conn{srv: s, gc: gc, mc: newMemConn(gc, s.hsSlots), accepted: time.Now(), hello: newHelloReader()}
	c.deadline.Store(c.accepted.Add(s.opts.HandshakeTimeout).UnixNano())
	return c
}

// onHandshakeBytes takes bytes that arrived before the handshake is done.
// Until the ClientHello is complete the loop keeps them itself; then a
// handshake goroutine starts and they go to it.
func (c *conn) onHandshakeBytes(data []byte) gnet.Action {
	if c.hsStarted {
		if c.mc.feed(data) > maxHandshakeBuffer {
			// A handshake never needs this much: a flood, not a vehicle.
			refusedHandshakeFailed.Inc()
			return gnet.Close
		}
		return gnet.None
	}
	if len(c.helloBuf)+len(data) > maxHandshakeBuffer {
		return c.refuseHello(&helloError{alertDecodeError, "more than 64 KiB before the ClientHello ended"})
	}
	grown := append(c.helloBuf, data...)
	if !c.srv.chargeHandshake(int64(cap(grown) - cap(c.helloBuf))) {
		return gnet.Close
	}
	c.helloBuf = grown
	done, err := c.hello.scan(c.helloBuf)
	if err != nil {
		return c.refuseHello(err)
	}
	if !done {
		return gnet.None
	}
	// The ClientHello's bytes move to the handshake: its charge becomes
	// handshakeCost.
	if !c.srv.chargeHandshake(handshakeCost - int64(cap(c.helloBuf))) {
		return gnet.Close
	}
	c.mc.feed(c.helloBuf)
	c.helloBuf = nil
	c.hsStarted = true
	// Past the handshake's own deadline: a safety net, the goroutine
	// times itself out.
	c.deadline.Store(c.accepted.Add(c.srv.opts.HandshakeTimeout + time.Second).UnixNano())
	handshakesRunning.Add(1)
	go c.handshake(c.srv.baseCtx)
	return gnet.None
}

// refuseHello closes a connection whose first flight is not a ClientHello,
// with the alert crypto/tls would send (none to a peer not speaking TLS).
func (c *conn) refuseHello(err error) gnet.Action {
	refusedBadClientHello.Inc()
	var he *helloError
	if errors.As(err, &he) && he.alert != 0 {
		_, _ = c.gc.Write(alertRecord(he.alert))
	}
	if !c.srv.opts.QuietHandshakeErrors {
		c.srv.log.Info("tls handshake refused", "remote", c.mc.remote.String(), "err", err)
	}
	return gnet.Close
}

// handshake runs crypto/tls's server handshake in its own goroutine, off
// the loop, holding one of the server's handshake slots while it computes.
func (c *conn) handshake(base context.Context) {
	defer func() {
		c.srv.unchargeHandshake(handshakeCost)
		handshakesRunning.Add(-1)
	}()
	deadline := c.accepted.Add(c.srv.opts.HandshakeTimeout)
	ctx, cancel := context.WithDeadline(base, deadline)
	c.tls = tls.Server(c.mc, c.srv.tlsCfg.Load())
	var err error
	if c.mc.acquire() {
		err = c.tls.HandshakeContext(ctx)
		c.mc.release()
	} else {
		err = net.ErrClosed
	}
	if err != nil && ctx.Err() != nil {
		err = errHandshakeTimeout
	}
	cancel()
	if err == nil && !c.srv.opts.CryptoTLSRecords {
		c.rec = c.nativeRecordLayer()
	}
	c.mc.secrets.wipe()
	if err != nil {
		// Counted here: the peer may already be gone, and then the loop
		// never looks at this connection again.
		if errors.Is(err, errHandshakeTimeout) {
			refusedHandshakeTimeout.Inc()
		} else {
			refusedHandshakeFailed.Inc()
		}
		if !c.srv.opts.QuietHandshakeErrors {
			c.srv.log.Info("tls handshake failed", "remote", c.mc.remote.String(), "err", err)
		}
	}
	c.hsErr = err
	// The handshake's records went out with AsyncWrite, as high-priority
	// loop tasks in order. A read event on the socket can run OnTraffic
	// before those tasks, so hsDone is set by one more such task queued
	// behind them: once the loop sees it, every handshake record (the TLS
	// 1.3 session tickets included) has been written, and a reply the
	// loop writes cannot overtake one (the client would see "bad record
	// MAC"). The Wake that follows runs OnTraffic for the transition.
	if werr := c.gc.AsyncWrite(nil, func(gnet.Conn, error) error {
		c.hsDone.Store(true)
		return c.gc.Wake(nil)
	}); werr != nil {
		// The connection is already closed: there is nothing to finish.
		c.hsDone.Store(true)
	}
}

var errHandshakeTimeout = errors.New("tls handshake timed out")

// nativeRecordLayer builds the record layer that takes over a TLS 1.3
// connection from crypto/tls, or returns nil to stay on crypto/tls (TLS
// 1.2, or secrets that did not arrive). Handshake goroutine.
func (c *conn) nativeRecordLayer() *tlsrecord.Conn {
	state := c.tls.ConnectionState()
	if state.Version != tls.VersionTLS13 {
		return nil
	}
	client, server, ok := c.mc.secrets.take()
	if !ok {
		return nil
	}
	// The session tickets crypto/tls sent are the first records under the
	// server's secret: ours continue after them.
	seq := tlsrecord.TicketsSent(state.CipherSuite, server, c.mc.handshakeRecords())
	rec, err := tlsrecord.New(state.CipherSuite, client, server, seq)
	clear(client) // New keeps copies
	clear(server)
	if err != nil {
		c.srv.log.Warn("tls record layer not available; staying on crypto/tls", "remote", c.mc.remote.String(), "err", err)
		return nil
	}
	return rec
}

func (c *conn) onTraffic() gnet.Action {
	var data []byte
	if c.phase == phaseHandshake || c.rec == nil {
		data, _ = c.gc.Next(-1)
	}
	if c.phase == phaseHandshake {
		if len(data) > 0 {
			if act := c.onHandshakeBytes(data); act != gnet.None {
				return act
			}
		}
		if !c.hsDone.Load() {
			if c.expired.Load() {
				return c.expire(time.Now()) // silent, or a handshake stuck past its deadline
			}
			return gnet.None
		}
		if act := c.finishHandshake(); act != gnet.None {
			return act
		}
		data = nil
	}
	if c.phase >= phaseClosing {
		return gnet.None
	}
	now := time.Now()
	arrived := len(data) > 0
	if c.rec != nil {
		var act gnet.Action
		if arrived, act = c.readRecords(now); act != gnet.None {
			return act
		}
	} else if act := c.readTLS(data, now); act != gnet.None {
		return act
	}
	if c.phase == phaseWebSocket && arrived && c.srv.opts.IdleTimeout > 0 {
		c.deadline.Store(now.Add(c.srv.opts.IdleTimeout).UnixNano())
	}
	if act := c.drainMailbox(); act != gnet.None {
		return act
	}
	if act := c.flush(now); act != gnet.None {
		return act
	}
	if act := c.account(); act != gnet.None {
		return act
	}
	if c.expired.Load() {
		if act := c.expire(now); act != gnet.None {
			return act
		}
	}
	if c.goAway.Load() {
		return c.finishForShutdown()
	}
	return gnet.None
}

func (c *conn) finishHandshake() gnet.Action {
	if c.hsErr != nil {
		return gnet.Close
	}
	handshakesOK.Inc()
	state := c.tls.ConnectionState()
	// The configuration verified the chain (crypto/tls's own verification
	// or serverConfig's cached one); a handshake without a certificate
	// failed.
	if len(state.PeerCertificates) == 0 {
		refusedHandshakeFailed.Inc()
		return gnet.Close
	}
	c.id, c.idErr = IdentityFromCertificate(state.PeerCertificates[0])
	if c.rec != nil {
		// From here on the records are ours: release crypto/tls's
		// connection (its buffers, the peer's certificates).
		c.cipher = c.mc.takeInput()
		c.tls = nil
		recordLayerNative.Inc()
	} else {
		c.mc.switchToLoop()
		recordLayerCryptoTLS.Inc()
	}
	c.phase = phaseRequest
	c.deadline.Store(time.Now().Add(c.srv.opts.RequestTimeout).UnixNano())
	return gnet.None
}

// readTLS decrypts everything gnet delivered and parses it.
func (c *conn) readTLS(data []byte, now time.Time) gnet.Action {
	c.mc.setLoopInput(data)
	bp := scratchPool.Get().(*[]byte)
	defer scratchPool.Put(bp)
	buf := *bp
	for c.phase < phaseClosing {
		n, err := c.tls.Read(buf)
		if n > 0 {
			if act := c.onPlaintext(buf[:n], now); act != gnet.None {
				c.mc.detach()
				return act
			}
		}
		if err != nil {
			// The memConn's would-block (errors.As with a net.Error
			// target put one allocation on every traffic event).
			if errors.Is(err, errWouldBlock) {
				break
			}
			c.mc.detach()
			// io.EOF: the peer's close_notify, answered with ours; any
			// other error is an alert, sent or received.
			c.tlsEnded = !errors.Is(err, io.EOF)
			return gnet.Close
		}
		if n == 0 {
			break
		}
	}
	c.mc.detach()
	return gnet.None
}

// readRecords opens every whole record received, in place in gnet's
// buffer, and parses the plaintext. It reports whether new bytes arrived
// since the last call.
func (c *conn) readRecords(now time.Time) (arrived bool, act gnet.Action) {
	var in []byte
	inGnet := len(c.cipher) == 0
	if inGnet {
		in, _ = c.gc.Peek(-1)
		arrived = len(in) > c.partial
	} else {
		// Ciphertext that came with the handshake goes first.
		more, _ := c.gc.Next(-1)
		c.cipher = append(c.cipher, more...)
		in, arrived = c.cipher, true
	}
	used := 0
	for c.phase < phaseClosing {
		n, plain, err := c.rec.Open(in[used:])
		if err != nil {
			act = c.recordFailed(err)
			break
		}
		if n == 0 {
			break
		}
		used += n
		// A KeyUpdate's answer leaves before anything sealed after it.
		if p := c.rec.Pending(); len(p) > 0 {
			if _, err := c.gc.Write(p); err != nil {
				act = gnet.Close
				break
			}
		}
		if len(plain) > 0 {
			if act = c.onPlaintext(plain, now); act != gnet.None {
				break
			}
		}
	}
	if inGnet {
		if used > 0 { // gnet's Discard(0) discards everything
			_, _ = c.gc.Discard(used)
		}
		c.partial = len(in) - used
	} else {
		c.cipher = append([]byte(nil), c.cipher[used:]...)
		if len(c.cipher) == 0 {
			c.cipher = nil
		}
		c.partial = len(c.cipher)
	}
	return arrived, act
}

// recordFailed answers a record the peer should not have sent with the
// alert it calls for, and closes. close_notify and the peer's own alerts
// just close.
func (c *conn) recordFailed(err error) gnet.Action {
	var re *tlsrecord.Error
	if errors.As(err, &re) {
		refusedBadTLSRecord.Inc()
		c.srv.log.Info("tls record refused; closing connection", "vin", c.id.DeviceID, "remote", c.mc.remote.String(), "err", err)
		_, _ = c.gc.Write(c.rec.SealAlert(nil, re.Alert))
		c.tlsEnded = true
	} else if !errors.Is(err, tlsrecord.ErrCloseNotify) {
		c.tlsEnded = true // the peer's fatal alert
	}
	return gnet.Close
}

// writePlain encrypts p and writes it (gnet keeps what the socket does not
// take at once).
func (c *conn) writePlain(p []byte) (int, error) {
	if c.rec == nil {
		return c.tls.Write(p)
	}
	bp := sealPool.Get().(*[]byte)
	out := c.rec.Seal((*bp)[:0], p)
	_, err := c.gc.Write(out)
	if cap(out) <= maxPooledSeal {
		*bp = out[:0]
	}
	sealPool.Put(bp)
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// writerFunc adapts writePlain to io.Writer (the HTTP upgrader's).
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// sealPool holds the buffers writePlain encrypts into (gnet copies what
// the socket does not take at once); maxPooledSeal caps one kept for reuse
// after a large write grew it.
var sealPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

const maxPooledSeal = 256 << 10

// scratchPool holds plaintext buffers (one TLS record is at most 16 KiB).
var scratchPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (c *conn) onPlaintext(p []byte, now time.Time) gnet.Action {
	if len(c.plain) == 0 {
		n, act := c.parse(p, now)
		if act == gnet.None && n < len(p) && c.phase < phaseClosing {
			if act := c.reserve(len(p) - n); act != gnet.None {
				return act
			}
			c.plain = append(c.plain[:0], p[n:]...)
		}
		return act
	}
	if act := c.reserve(len(c.plain) + len(p)); act != gnet.None {
		return act
	}
	c.plain = append(c.plain, p...)
	n, act := c.parse(c.plain, now)
	if c.phase >= phaseClosing {
		c.plain = nil
		return act
	}
	rest := copy(c.plain, c.plain[n:])
	c.plain = c.plain[:rest]
	if rest == 0 && cap(c.plain) > keepBufferBytes {
		putBuffer(c.plain)
		c.plain = nil
	}
	return act
}

// reserve checks that growing the partial-message buffer to need bytes fits
// the connection's cap and the server-wide budget. Thousands of vehicles
// each half-way through a 1 MB message must not take the host's memory:
// past the budget the connection is shed with 1013 and the vehicle resends
// later.
func (c *conn) reserve(need int) gnet.Action {
	if need <= cap(c.plain) {
		return gnet.None
	}
	// Grown here rather than by append, so that what is booked is exactly
	// what is allocated.
	if need <= keepBufferBytes {
		nb := make([]byte, len(c.plain), need)
		copy(nb, c.plain)
		c.plain = nb
		return gnet.None
	}
	newCap := bufferCap(max(need, min(2*cap(c.plain), c.srv.opts.MaxMessageSize+ws.MaxHeaderSize)))
	if act := c.admitGrowth(newCap - cap(c.plain)); act != gnet.None {
		return act
	}
	nb := getBuffer(newCap)[:len(c.plain)]
	copy(nb, c.plain)
	putBuffer(c.plain)
	c.plain = nb
	return gnet.None
}

// held is every byte the connection holds beyond its fixed state:
// plaintext not yet parsed, a fragmented message being reassembled,
// replies not yet written, output the peer has not read yet (gnet keeps
// what the socket does not take), and ciphertext of an incomplete record.
// Loop only.
func (c *conn) held() int {
	n := cap(c.plain) + cap(c.replies) + cap(c.cipher) + c.partial + c.gc.OutboundBuffered()
	if c.dec != nil {
		n += c.dec.Buffered()
	}
	return n
}

// account books held() against the server-wide budget and enforces the
// connection's cap and, for a connection that grew, the budget.
func (c *conn) account() gnet.Action {
	h := c.held()
	grew := h - c.charged
	c.book(h)
	if c.phase >= phaseClosing || grew <= 0 {
		return gnet.None
	}
	if h > c.srv.opts.MaxConnectionBytes {
		return c.overCap(h)
	}
	if c.srv.buffered.Load() > c.srv.opts.MaxBufferedBytes {
		refusedMemoryBudget.Inc()
		return c.shed("server buffer budget exhausted", "buffer_budget")
	}
	return gnet.None
}

// admitGrowth says whether the connection may hold n more bytes.
func (c *conn) admitGrowth(n int) gnet.Action {
	if h := c.charged + n; h > c.srv.opts.MaxConnectionBytes {
		return c.overCap(h)
	}
	if c.srv.buffered.Load()+int64(n) > c.srv.opts.MaxBufferedBytes {
		refusedMemoryBudget.Inc()
		return c.shed("server buffer budget exhausted", "buffer_budget")
	}
	return gnet.None
}

// overCap closes a connection that holds more than MaxConnectionBytes.
func (c *conn) overCap(held int) gnet.Action {
	refusedConnMemory.Inc()
	c.srv.log.Warn("connection over its memory cap; closing", "vin", c.id.DeviceID,
		"held_bytes", held, "cap_bytes", c.srv.opts.MaxConnectionBytes, "unread_output_bytes", c.gc.OutboundBuffered())
	return c.closeWith(ws.StatusPolicyViolation, "connection memory cap")
}

// book records h as what the connection holds in the server-wide total.
func (c *conn) book(h int) {
	if d := h - c.charged; d != 0 {
		c.srv.buffered.Add(int64(d))
		totalBuffered.Add(int64(d))
		c.charged = h
	}
}

// parse consumes what it can of buf: HTTP requests, then frames.
func (c *conn) parse(buf []byte, now time.Time) (int, gnet.Action) {
	off := 0
	for c.phase == phaseRequest {
		// The cap is on the whole request, wherever its end falls.
		window := buf[off:min(len(buf), off+maxRequestBytes)]
		end := bytes.Index(window, []byte("\r\n\r\n"))
		if end < 0 {
			if len(buf)-off >= maxRequestBytes {
				refusedRequestTooLarge.Inc()
				c.writeHTTP(431, "request header too large")
				return len(buf), gnet.Close
			}
			return off, gnet.None
		}
		req := buf[off : off+end+4]
		off += end + 4
		if act := c.handleRequest(req); act != gnet.None {
			return len(buf), act
		}
	}
	if c.phase != phaseWebSocket {
		return len(buf), gnet.None
	}
	n, act := c.parseFrames(buf[off:], now)
	return off + n, act
}

func (c *conn) parseFrames(buf []byte, now time.Time) (int, gnet.Action) {
	off := 0
	for c.phase == phaseWebSocket {
		if c.goAway.Load() {
			// Shutting down: records after this point are not taken; the
			// vehicle resends them to another daemon or after restart.
			return len(buf), gnet.None
		}
		msg, n, err := c.dec.Decode(buf[off:])
		if err != nil {
			return len(buf), c.protocolError(err)
		}
		if n == 0 {
			break
		}
		off += n
		switch msg.Kind {
		case wsframe.KindBinary:
			if act := c.onRecord(msg.Payload, now); act != gnet.None {
				return len(buf), act
			}
		case wsframe.KindTooLarge:
			recTooBig.Inc()
			refRecordTooBig.Inc()
			c.queueReply(nil, nil, nil, true, errorText)
		case wsframe.KindText:
			refusedTextFrame.Inc()
			c.srv.log.Info("text frame refused", "vin", c.id.DeviceID)
			return len(buf), c.closeWith(ws.StatusUnsupportedData, "binary frames only")
		case wsframe.KindPing:
			if len(c.queue) >= c.srv.opts.MaxInFlight {
				refusedInFlightFull.Inc()
				return len(buf), c.shed("too many replies waiting", reasonInFlightFull)
			}
			pingsAnswered.Inc()
			c.reserveReplies(len(msg.Payload))
			c.replies = wsframe.AppendFrame(c.replies, ws.OpPong, true, msg.Payload)
			c.queue = append(c.queue, pendingReply{end: len(c.replies), ready: true})
		case wsframe.KindClose:
			code := msg.CloseCode
			if code == ws.StatusNoStatusRcvd {
				code = ws.StatusNormalClosure
			}
			return len(buf), c.closeWith(code, "")
		}
	}
	return off, gnet.None
}

// onRecord decides what one binary message gets: an ack once durable, an
// ack at once (nothing to keep), or an error reply.
func (c *conn) onRecord(msg []byte, now time.Time) gnet.Action {
	recordsReceived.Inc()
	bytesReceived.Add(len(msg))
	if rl := c.srv.opts.RateLimit; rl.Limit > 0 {
		if ns := now.UnixNano(); ns-c.windowStart >= int64(rl.Interval) {
			c.windowStart, c.windowCount = ns, 0
		}
		c.windowCount++
		if c.windowCount > rl.Limit {
			// Dropped without an ack: the vehicle resends later.
			recRateLimited.Inc()
			var env envelope.Envelope
			_ = envelope.Decode(msg, &env) // for the topic label only
			c.rateLimitCounter(env.Topic).Inc()
			return gnet.None
		}
	}
	if len(c.queue) >= c.srv.opts.MaxInFlight {
		refusedInFlightFull.Inc()
		return c.shed("too many records waiting for acks", reasonInFlightFull)
	}
	var env envelope.Envelope
	if err := envelope.Decode(msg, &env); err != nil {
		recBadEnvelope.Inc()
		c.queueReply(nil, nil, nil, true, errorText)
		return gnet.None
	}
	switch {
	case env.Type == envelope.TypeStreamAck:
		// An ack sent by the vehicle. As the reference: one ack, the
		// txid echoed, the topic left empty.
		recClientAck.Inc()
		countUnknownMessageType(env.Type)
		c.queueReply(env.TxID, nil, env.MessageID, false, "")
		return gnet.None
	case env.Type != envelope.TypeStream || !env.HasMessage:
		// As the reference: one ack with neither txid nor topic.
		recEmptyEnvelope.Inc()
		countUnknownMessageType(env.Type)
		c.queueReply(nil, nil, nil, false, "")
		return gnet.None
	}
	// A sender_id naming another vehicle is counted and never trusted:
	// the record is kept under the certificate's VIN (the spool record's
	// VIN, which the forwarders stamp into the payload), as the reference
	// dispatches it. A stolen key cannot speak for another VIN.
	foreignSender := !c.id.MatchesSender(env.Stream.SenderID)
	if foreignSender {
		senderMismatch.Inc()
		refUnauthorizedSender.Inc()
	}
	tm := metricsForTopic(env.Topic)
	if !c.srv.routed[string(env.Topic)] {
		if foreignSender {
			// As the reference: an error reply, the txid echoed.
			recSenderMismatch.Inc()
			c.queueReply(env.TxID, nil, nil, true, errorText)
			return gnet.None
		}
		// The reference counts and "dispatches" these to no sink.
		recordsUnrouted.Inc()
		tm.records.Inc()
		tm.bytes.Add(len(env.Stream.Payload))
		tm.dispatched.Inc()
		c.queueReply(env.TxID, env.Topic, env.MessageID, false, "")
		return gnet.None
	}
	signals, err := record.Validate(env.Topic, env.Stream.Payload)
	if err != nil {
		recBadPayload.Inc()
		// As the reference: the txid echoed, the topic left empty.
		c.queueReply(env.TxID, nil, nil, true, errorText)
		return gnet.None
	}
	tm.records.Inc()
	tm.bytes.Add(len(env.Stream.Payload))
	countSignals(tm, c.vinSignals, env.Topic, signals)
	token := c.headToken + uint64(len(c.queue))
	c.queueReply(env.TxID, env.Topic, env.MessageID, false, "")
	onDelivery := c.srv.reliable[string(env.Topic)]
	pr := &c.queue[len(c.queue)-1]
	pr.ready = c.srv.opts.AckMode == AckOnReceipt && !onDelivery
	pr.onDelivery = onDelivery
	pr.receivedAt = now.UnixNano()
	if onDelivery {
		pr.reliable = c.srv.reliableMetrics[string(env.Topic)]
	}
	r := spool.Record{
		ReceivedAtMs:  now.UnixMilli(),
		CreatedAtSec:  env.Stream.CreatedAt,
		VIN:           c.id.DeviceID,
		ClientVersion: c.clientVersion,
		Topic:         env.Topic,
		TxID:          env.TxID,
		Payload:       env.Stream.Payload,
	}
	if err := c.srv.opts.Spool.Append(&r, c, token); err != nil {
		// Not kept, so not acked: drop the reply we queued for it.
		c.queue = c.queue[:len(c.queue)-1]
		prevEnd := 0
		if len(c.queue) > 0 {
			prevEnd = c.queue[len(c.queue)-1].end
		}
		c.replies = c.replies[:prevEnd]
		switch {
		case errors.Is(err, spool.ErrFull):
			refusedSpoolFull.Inc()
			return c.shed("spool full", reasonSpoolFull)
		case errors.Is(err, spool.ErrBusy):
			refusedSpoolBusy.Inc()
			return c.shed("spool busy", reasonSpoolBusy)
		default:
			refusedSpoolClosed.Inc()
			return c.shed("spool closed", reasonSpoolClosed)
		}
	}
	if onDelivery {
		c.srv.awaitDelivery(r.Seq, c, token)
	}
	recordsSpooled.Inc()
	tm.dispatched.Inc()
	return gnet.None
}

// queueReply encodes an ack (or, with isError, an error reply carrying
// text) behind the replies already queued. It is ready unless the caller
// marks it pending.
func (c *conn) queueReply(txid, topic, messageID []byte, isError bool, text string) {
	var tmp [256]byte
	var body []byte
	if isError {
		body = envelope.AppendError(tmp[:0], txid, topic, text)
		errorReplies.Inc()
		refUnexpectedRecordErr.Inc()
	} else {
		body = envelope.AppendAck(tmp[:0], txid, topic, messageID)
	}
	c.reserveReplies(len(body))
	c.replies = wsframe.AppendFrame(c.replies, ws.OpBinary, true, body)
	c.queue = append(c.queue, pendingReply{end: len(c.replies), ready: true})
}

// reserveReplies makes room for one more frame with a payload of n bytes
// behind the queued replies, taking a pooled buffer once they outgrow
// keepBufferBytes (flush gives it back when they are all written).
func (c *conn) reserveReplies(n int) {
	need := len(c.replies) + n + ws.MaxHeaderSize
	if need <= cap(c.replies) || need <= keepBufferBytes {
		return // AppendFrame grows small buffers itself
	}
	nb := getBuffer(max(need, 2*cap(c.replies)))[:len(c.replies)]
	copy(nb, c.replies)
	putBuffer(c.replies)
	c.replies = nb
}

// Committed implements spool.Waiter. It runs on the spool's committer
// goroutine: it only posts to the mailbox and wakes the loop once (and,
// for a failed commit, drops any delivery wait on the record).
func (c *conn) Committed(token uint64, seq uint64, err error) {
	if err != nil {
		c.srv.forgetDelivery(seq)
	}
	c.post(commitNote{token: token, err: err})
}

// post hands a note to the connection's loop, waking it once.
func (c *conn) post(n commitNote) {
	c.mbMu.Lock()
	c.mailbox = append(c.mailbox, n)
	wake := !c.wakeQueued
	c.wakeQueued = true
	c.mbMu.Unlock()
	if wake {
		_ = c.gc.Wake(nil)
	}
}

func (c *conn) drainMailbox() gnet.Action {
	c.mbMu.Lock()
	notes := c.mailbox
	c.mailbox = c.mbSpare[:0]
	c.wakeQueued = false
	c.mbMu.Unlock()
	// mbSpare is the loop's alone (post only touches mailbox): the drained
	// slice becomes the next spare, unless it grew large.
	c.mbSpare = nil
	if cap(notes) <= 1024 {
		c.mbSpare = notes[:0]
	}
	act := gnet.None
	for _, n := range notes {
		if n.err != nil {
			// Not durable: never ack it. The vehicle resends after it
			// reconnects.
			refusedSpoolCommitFailed.Inc()
			c.srv.log.Warn("spool commit failed; closing connection", "vin", c.id.DeviceID, "err", n.err)
			act = c.shed("spool commit failed", reasonSpoolCommitFailed)
			break
		}
		if i := n.token - c.headToken; i < uint64(len(c.queue)) {
			if n.delivered || !c.queue[i].onDelivery {
				if n.delivered && !c.queue[i].ready {
					c.queue[i].reliable.acked()
				}
				c.queue[i].ready = true
			}
		}
	}
	return act
}

// flush writes every reply at the head of the queue that may leave, in one
// TLS write.
func (c *conn) flush(now time.Time) gnet.Action {
	k := 0
	for k < len(c.queue) && c.queue[k].ready {
		k++
	}
	if k == 0 {
		return gnet.None
	}
	end := c.queue[k-1].end
	if _, err := c.writePlain(c.replies[:end]); err != nil {
		refSocketErr.Inc()
		return gnet.Close
	}
	nowNs := now.UnixNano()
	acks := 0
	for _, r := range c.queue[:k] {
		if r.receivedAt > 0 {
			acks++
			ackLatencySeconds.Update(float64(nowNs-r.receivedAt) / 1e9)
		}
	}
	recordsAcked.Add(acks)
	rest := copy(c.replies, c.replies[end:])
	c.replies = c.replies[:rest]
	m := copy(c.queue, c.queue[k:])
	c.queue = c.queue[:m]
	for i := range c.queue {
		c.queue[i].end -= end
	}
	c.headToken += uint64(k)
	if m == 0 {
		if cap(c.replies) > keepBufferBytes {
			putBuffer(c.replies)
			c.replies = nil
		}
		if cap(c.queue) > keepBufferBytes/16 {
			c.queue = nil
		}
	}
	return gnet.None
}

// shed closes the connection with 1013 (try again later) after writing the
// replies that may already leave. Records not acked are the vehicle's to
// resend.
func (c *conn) shed(why, reason string) gnet.Action {
	c.srv.log.Warn("shedding connection", "vin", c.id.DeviceID, "reason", reason)
	return c.closeWith(statusTryAgainLater, why)
}

func (c *conn) protocolError(err error) gnet.Action {
	refusedProtocolError.Inc()
	code := ws.StatusProtocolError
	var pe *wsframe.ProtocolError
	if errors.As(err, &pe) {
		code = pe.Code
	}
	c.srv.log.Info("websocket protocol error", "vin", c.id.DeviceID, "err", err)
	return c.closeWith(code, "")
}

// closeWith flushes ready replies, sends a close frame and closes.
func (c *conn) closeWith(code ws.StatusCode, reason string) gnet.Action {
	if c.phase >= phaseClosing {
		return gnet.Close
	}
	_ = c.flush(time.Now())
	if c.phase == phaseClosed {
		return gnet.Close
	}
	frame := wsframe.AppendClose(nil, code, reason)
	_, _ = c.writePlain(frame)
	c.phase = phaseClosing
	return gnet.Close
}

// closeNotify sends TLS close_notify before the daemon closes a connection
// whose handshake is done (RFC 8446 §6.1), on either record path.
func (c *conn) closeNotify() {
	if c.tlsEnded || c.phase < phaseRequest || c.phase == phaseClosed {
		return
	}
	c.tlsEnded = true
	if c.rec != nil {
		_, _ = c.gc.Write(c.rec.SealAlert(nil, tlsrecord.AlertCloseNotify))
	} else if c.tls != nil {
		_ = c.tls.CloseWrite()
	}
}

// expire closes a connection whose deadline passed, if it still has.
func (c *conn) expire(now time.Time) gnet.Action {
	c.expired.Store(false)
	if d := c.deadline.Load(); d == 0 || now.UnixNano() <= d {
		return gnet.None
	}
	switch c.phase {
	case phaseHandshake:
		if !c.hsStarted {
			// Its ClientHello never completed: no goroutine ever saw it.
			refusedHandshakeTimeout.Inc()
		}
		// Otherwise the handshake goroutine counts its own timeout; this
		// is the safety net.
		return gnet.Close
	case phaseRequest:
		refusedRequestTimeout.Inc()
		c.srv.log.Info("no upgrade request in time", "vin", c.id.DeviceID, "remote", c.mc.remote.String())
		return gnet.Close
	case phaseWebSocket:
		refusedIdleTimeout.Inc()
		c.srv.log.Info("idle connection closed", "vin", c.id.DeviceID)
		return c.closeWith(ws.StatusGoingAway, "idle")
	}
	return gnet.None
}

// finishForShutdown closes once every record taken has been acked (or its
// commit failed).
func (c *conn) finishForShutdown() gnet.Action {
	if c.phase != phaseWebSocket {
		return gnet.Close
	}
	if len(c.queue) > 0 {
		return gnet.None // a later wake from the committer brings us back
	}
	return c.closeWith(ws.StatusGoingAway, "server shutting down")
}

func (c *conn) onClose(err error) {
	c.closed.Store(true)
	if c.upgraded {
		refNumConnections.Dec()
		c.srv.log.Debug("vehicle disconnected", "vin", c.id.DeviceID, "connection_id", c.connectionID, "err", err)
		c.emitConnectivity(pb.ConnectivityEvent_DISCONNECTED)
	}
	c.phase = phaseClosed
	c.mc.Close()
	if c.helloBuf != nil {
		c.srv.unchargeHandshake(int64(cap(c.helloBuf)))
		c.helloBuf = nil
	}
	c.rec, c.cipher = nil, nil
	c.plain = nil
	c.book(0)
	c.replies = nil
	c.queue = nil
	c.dec = nil
}

// emitConnectivity records a connectivity event for this vehicle in the
// spool (when connectivity records are routed). It is not acked to anyone;
// a full spool loses the event, which is counted and logged.
func (c *conn) emitConnectivity(status pb.ConnectivityEvent) {
	if status == pb.ConnectivityEvent_CONNECTED {
		c.upgraded = true
	}
	if !c.srv.opts.Connectivity {
		return
	}
	now := time.Now()
	payload, err := record.NewConnectivity(c.id.DeviceID, c.connectionID, status, now, c.networkInterface)
	if err == nil {
		txid := []byte(uuid.NewString())
		r := spool.Record{ReceivedAtMs: now.UnixMilli(), CreatedAtSec: uint32(now.Unix()), VIN: c.id.DeviceID,
			ClientVersion: c.clientVersion, Topic: []byte(record.TopicConnectivity), TxID: txid, Payload: payload}
		err = c.srv.opts.Spool.Append(&r, nil, 0)
	}
	if err != nil {
		connectivityEventsFailed.Inc()
		c.srv.log.Warn("connectivity event not recorded", "vin", c.id.DeviceID, "status", status.String(), "err", err)
		return
	}
	connectivityEvents.Inc()
}

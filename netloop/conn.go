package netloop

import (
	"crypto/tls"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/panjf2000/gnet/v2"

	"github.com/fleet-telemetry/fleet-telemetry/internal/tlsrecord"
	"github.com/fleet-telemetry/fleet-telemetry/wsframe"
)

// phase is where a connection is in its life; it only moves forward.
type phase uint8

const (
	phaseHandshake phase = iota // ClientHello arriving, then the TLS handshake
	phaseRequest                // waiting for the HTTP upgrade request
	phaseWebSocket              // records flow
	phaseClosing                // close frame sent; input is ignored
	phaseClosed                 // OnClose ran
)

// conn is one vehicle connection. Fields without a comment are owned by the
// connection's event loop.
//
// Its work is split by concern: handshake.go takes the ClientHello and runs
// the TLS handshake; records.go reads and writes TLS records; plaintext.go
// parses the HTTP upgrade and WebSocket frames; recordpath.go decides what
// each record gets; acks.go keeps the replies in arrival order; memory.go
// books what the connection holds; lifecycle.go times out, sheds and closes.
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

	phase phase
	// tlsEnded: the TLS stream is over for writing (a fatal alert went
	// either way, or our close_notify was sent).
	tlsEnded bool
	accepted time.Time

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
	// The negotiated TLS version and cipher suite (for /connz).
	tlsVersion, cipherSuite uint16

	id    Identity
	idErr error
	// st is what /connz shows of the vehicle, set at the upgrade
	// (publishVehicle); nil before.
	st *vehicleStats
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

	// acks holds the replies in the order their records arrived; mb brings
	// it commits and deliveries from other goroutines.
	acks ackQueue
	mb   mailbox
}

func newConn(s *Server, gc gnet.Conn) *conn {
	c := &conn{srv: s, gc: gc, mc: newMemConn(gc, s.hsSlots), accepted: time.Now(), hello: newHelloReader(),
		acks: newAckQueue(s.opts.MaxInFlight)}
	c.deadline.Store(c.accepted.Add(s.opts.HandshakeTimeout).UnixNano())
	return c
}

// onTraffic runs on the connection's loop for every read event and every
// wake: it feeds the handshake, or reads TLS records and parses what they
// hold; then it applies commit notes, writes the replies that may leave,
// books the memory held, and acts on a passed deadline or a shutdown.
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

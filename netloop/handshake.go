package netloop

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleet-telemetry/fleet-telemetry/internal/tlsrecord"
)

// maxHandshakeBuffer caps the bytes held for one connection's handshake:
// its ClientHello while it arrives, then ciphertext waiting for the
// handshake goroutine.
const maxHandshakeBuffer = 64 << 10

// handshakeCost is what a handshake in progress is charged against
// Options.MaxHandshakeBytes: its goroutine and crypto/tls's state (about
// 33 KiB measured once the server's first flight is out) and up to
// maxHandshakeBuffer of ciphertext waiting for the goroutine.
const handshakeCost = 96 << 10

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
		return c.refuseHello(&helloError{tlsrecord.AlertDecodeError, "more than 64 KiB before the ClientHello ended"})
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
	c.tlsVersion, c.cipherSuite = state.Version, state.CipherSuite
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

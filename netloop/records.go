package netloop

import (
	"errors"
	"io"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleet-telemetry/fleet-telemetry/internal/tlsrecord"
)

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

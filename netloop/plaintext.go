package netloop

import (
	"bytes"
	"time"

	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"

	"github.com/fleet-telemetry/fleet-telemetry/wsframe"
)

// maxRequestBytes caps the HTTP upgrade request (slowloris and garbage).
const maxRequestBytes = 8 << 10

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
			c.st.received(len(msg.Payload), now)
			recTooBig.Inc()
			refRecordTooBig.Inc()
			c.replyError(nil, nil)
		case wsframe.KindText:
			refusedTextFrame.Inc()
			c.srv.log.Info("text frame refused", "vin", c.id.DeviceID)
			return len(buf), c.closeWith(ws.StatusUnsupportedData, "binary frames only")
		case wsframe.KindPing:
			if c.acks.full() {
				refusedInFlightFull.Inc()
				return len(buf), c.shed("too many replies waiting", reasonInFlightFull)
			}
			pingsAnswered.Inc()
			c.acks.pushPong(msg.Payload)
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

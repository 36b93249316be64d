package netloop

import (
	"github.com/gobwas/ws"
	"github.com/panjf2000/gnet/v2"
)

// keepBufferBytes is the largest per-connection buffer kept while empty;
// bigger ones are released so idle vehicles stay small.
const keepBufferBytes = 4 << 10

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
	n := cap(c.plain) + c.acks.held() + cap(c.cipher) + c.partial + c.gc.OutboundBuffered()
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
	if c.st != nil {
		c.st.publishHeld(h, c.acks.len())
	}
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

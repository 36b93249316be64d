package netloop

import (
	"io"
	"net"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/fleet-telemetry/fleet-telemetry/internal/tlsrecord"
)

// memConn is the net.Conn a connection's tls.Conn runs on. It has two modes.
//
// Handshake mode: the handshake goroutine blocks in Read until the loop feeds
// ciphertext (a copy, since gnet reuses its buffer); writes leave through
// gnet's AsyncWrite, which is safe off the loop.
//
// In handshake mode Read hands out at most the rest of the current TLS
// record, so crypto/tls never takes bytes past the client's Finished: what
// follows stays here for the record layer that takes over (tlsrecord).
// The records crypto/tls writes are kept until the switch, to count its
// session tickets. The handshake goroutine holds one of the server's
// handshake slots only while it computes: Read gives the slot back while
// it waits for the peer, so peers that stall mid-handshake hold no slot.
//
// Loop mode (after a TLS 1.2 handshake, only ever touched by the
// connection's own loop): Read serves the ciphertext OnTraffic just received, without a copy,
// and reports "would block" when it runs out; Write goes straight to gnet.
// crypto/tls keeps a partial record in its own buffer and does not treat a
// temporary error as fatal after the handshake (see TestTLSSurvivesWouldBlock,
// which pins that undocumented behaviour).
type memConn struct {
	gc            gnet.Conn
	local, remote net.Addr // read on the loop at accept: gnet's are loop-only

	mu       sync.Mutex
	in       []byte
	loopMode bool
	closed   bool
	readable chan struct{} // handshake mode: signalled when in grows or on close

	// Handshake mode, under mu: where Read is in the record stream.
	hdr      [tlsrecord.HeaderLen]byte
	hdrN     int // header bytes handed out of the current record
	bodyLeft int // body bytes of the current record still to hand out

	done chan struct{} // closed by Close

	// Handshake mode, handshake goroutine only: the records written, the
	// server's handshake slots and whether one is held, and the
	// application traffic secrets crypto/tls logs for this connection.
	written [][]byte
	wpend   []byte
	slots   chan struct{}
	holding bool
	secrets trafficSecrets
}

func newMemConn(gc gnet.Conn, slots chan struct{}) *memConn {
	return &memConn{gc: gc, local: gc.LocalAddr(), remote: gc.RemoteAddr(),
		readable: make(chan struct{}, 1), done: make(chan struct{}), slots: slots}
}

// acquire takes a handshake slot, waiting for one; false if the
// connection closed first.
func (m *memConn) acquire() bool {
	if m.holding {
		return true
	}
	select {
	case m.slots <- struct{}{}:
		m.holding = true
		return true
	case <-m.done:
		return false
	}
}

// release gives the handshake slot back, if held.
func (m *memConn) release() {
	if m.holding {
		<-m.slots
		m.holding = false
	}
}

// errWouldBlock is what Read returns in loop mode when no ciphertext is left.
type wouldBlockError struct{}

func (wouldBlockError) Error() string   { return "netloop: no buffered ciphertext" }
func (wouldBlockError) Timeout() bool   { return true }
func (wouldBlockError) Temporary() bool { return true }

var errWouldBlock net.Error = wouldBlockError{}

// feed hands received ciphertext to a handshake in progress and returns how
// much is now waiting.
func (m *memConn) feed(p []byte) int {
	m.mu.Lock()
	m.in = append(m.in, p...)
	n := len(m.in)
	m.mu.Unlock()
	m.signal()
	return n
}

func (m *memConn) signal() {
	select {
	case m.readable <- struct{}{}:
	default:
	}
}

// switchToLoop ends handshake mode; any ciphertext that arrived after the
// handshake's last read stays queued for the loop.
func (m *memConn) switchToLoop() {
	m.mu.Lock()
	m.loopMode = true
	if len(m.in) == 0 {
		m.in = nil
	}
	m.written, m.wpend = nil, nil
	m.mu.Unlock()
}

// Read implements net.Conn.
func (m *memConn) Read(p []byte) (int, error) {
	m.mu.Lock()
	if m.loopMode {
		// Only the loop reads in loop mode; the lock is uncontended.
		defer m.mu.Unlock()
		if len(m.in) == 0 {
			return 0, errWouldBlock
		}
		n := copy(p, m.in)
		m.in = m.in[n:]
		return n, nil
	}
	for len(m.in) == 0 {
		if m.closed {
			m.mu.Unlock()
			return 0, io.EOF
		}
		m.mu.Unlock()
		// Waiting for the peer is not work: free the slot meanwhile.
		m.release()
		<-m.readable
		if !m.acquire() {
			return 0, io.EOF
		}
		m.mu.Lock()
	}
	n := m.takeRecordBytes(p)
	if len(m.in) == 0 {
		m.in = m.in[:0:0]
	}
	m.mu.Unlock()
	return n, nil
}

// takeRecordBytes copies into p from in, never past the end of the
// current record. Called with mu held.
func (m *memConn) takeRecordBytes(p []byte) int {
	limit := m.bodyLeft
	if limit == 0 {
		limit = tlsrecord.HeaderLen - m.hdrN
	}
	n := copy(p[:min(len(p), limit)], m.in)
	if m.bodyLeft > 0 {
		m.bodyLeft -= n
	} else {
		copy(m.hdr[m.hdrN:], m.in[:n])
		m.hdrN += n
		if m.hdrN == tlsrecord.HeaderLen {
			m.bodyLeft = int(m.hdr[3])<<8 | int(m.hdr[4])
			m.hdrN = 0
		}
	}
	m.in = m.in[n:]
	return n
}

// takeInput ends handshake mode for a connection the record layer takes
// over: it returns the ciphertext that arrived after the handshake's last
// record (whole records only ever went to crypto/tls) and drops the rest
// of the handshake state.
func (m *memConn) takeInput() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	in := m.in
	m.in, m.written, m.wpend = nil, nil, nil
	m.loopMode = true
	if len(in) == 0 {
		return nil
	}
	return append([]byte(nil), in...)
}

// handshakeRecords returns the records crypto/tls wrote during the
// handshake (handshake goroutine only).
func (m *memConn) handshakeRecords() [][]byte { return m.written }

// setLoopInput points Read at ciphertext gnet just delivered. If bytes from
// the handshake were still queued, the new ones are appended to them.
func (m *memConn) setLoopInput(p []byte) {
	m.mu.Lock()
	if len(m.in) == 0 {
		m.in = p
	} else {
		m.in = append(m.in, p...)
	}
	m.mu.Unlock()
}

// Write implements net.Conn.
func (m *memConn) Write(p []byte) (int, error) {
	m.mu.Lock()
	loop, closed := m.loopMode, m.closed
	m.mu.Unlock()
	if closed {
		return 0, net.ErrClosed
	}
	if loop {
		return m.gc.Write(p)
	}
	// crypto/tls reuses its buffer after Write returns: copy.
	cp := append([]byte(nil), p...)
	m.keepRecords(cp)
	if err := m.gc.AsyncWrite(cp, nil); err != nil {
		return 0, err
	}
	return len(p), nil
}

// keepRecords notes the whole records in p (handshake mode, written by the
// handshake goroutine). They alias p, which nobody modifies: gnet only
// reads it.
func (m *memConn) keepRecords(p []byte) {
	if len(m.wpend) > 0 {
		m.wpend = append(m.wpend, p...)
		p = m.wpend
	}
	for {
		n, ok, err := tlsrecord.RecordLen(p)
		if err != nil {
			p = nil // not ours to judge; just stop keeping
			break
		}
		if !ok || len(p) < n {
			break
		}
		m.written = append(m.written, p[:n:n])
		p = p[n:]
	}
	m.wpend = append([]byte(nil), p...)
}

// Close implements net.Conn. crypto/tls calls it when a handshake's context
// ends; OnClose calls it so a blocked handshake returns.
func (m *memConn) Close() error {
	m.mu.Lock()
	if !m.closed {
		m.closed = true
		close(m.done)
	}
	m.mu.Unlock()
	m.signal()
	return nil
}

func (m *memConn) LocalAddr() net.Addr                { return m.local }
func (m *memConn) RemoteAddr() net.Addr               { return m.remote }
func (m *memConn) SetDeadline(t time.Time) error      { return nil }
func (m *memConn) SetReadDeadline(t time.Time) error  { return nil }
func (m *memConn) SetWriteDeadline(t time.Time) error { return nil }

// detach ends an OnTraffic: ciphertext crypto/tls did not take (it normally
// takes all) must not keep aliasing gnet's buffer, which is reused.
func (m *memConn) detach() {
	m.mu.Lock()
	if len(m.in) == 0 {
		m.in = nil
	} else {
		m.in = append([]byte(nil), m.in...)
	}
	m.mu.Unlock()
}

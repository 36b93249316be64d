package netloop

import (
	"io"
	"net"
	"sync"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// memConn is the net.Conn a connection's tls.Conn runs on. It has two modes.
//
// Handshake mode: the handshake goroutine blocks in Read until the loop feeds
// ciphertext (a copy, since gnet reuses its buffer); writes leave through
// gnet's AsyncWrite, which is safe off the loop.
//
// Loop mode (after the handshake, only ever touched by the connection's own
// loop): Read serves the ciphertext OnTraffic just received, without a copy,
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
}

func newMemConn(gc gnet.Conn) *memConn {
	return &memConn{gc: gc, local: gc.LocalAddr(), remote: gc.RemoteAddr(), readable: make(chan struct{}, 1)}
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
		<-m.readable
		m.mu.Lock()
	}
	n := copy(p, m.in)
	m.in = m.in[n:]
	if len(m.in) == 0 {
		m.in = m.in[:0:0]
	}
	m.mu.Unlock()
	return n, nil
}

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
	if err := m.gc.AsyncWrite(append([]byte(nil), p...), nil); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close implements net.Conn. crypto/tls calls it when a handshake's context
// ends; OnClose calls it so a blocked handshake returns.
func (m *memConn) Close() error {
	m.mu.Lock()
	m.closed = true
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

package testkit

import (
	"net"
	"testing"
	"time"
)

// UDPListener is a UDP socket on 127.0.0.1 that the code under test sends
// datagrams to (a StatsD server's place) and the test reads.
type UDPListener struct {
	pc  net.PacketConn
	buf []byte
}

// ListenUDP opens a UDPListener on a free port, closed when the test ends.
func ListenUDP(t testing.TB) *UDPListener {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return &UDPListener{pc: pc, buf: make([]byte, 64<<10)}
}

// Addr is the host:port to send to.
func (l *UDPListener) Addr() string { return l.pc.LocalAddr().String() }

// ReadUntil hands each datagram received to got until got returns true
// (then ReadUntil returns true) or the deadline passes (false). The
// datagram is only valid during the call. ReadUntil is for one goroutine.
func (l *UDPListener) ReadUntil(deadline time.Time, got func(datagram []byte) bool) bool {
	for time.Now().Before(deadline) {
		wait := time.Now().Add(200 * time.Millisecond)
		if wait.After(deadline) {
			wait = deadline
		}
		_ = l.pc.SetReadDeadline(wait)
		n, _, err := l.pc.ReadFrom(l.buf)
		if err != nil {
			continue
		}
		if got(l.buf[:n]) {
			return true
		}
	}
	return false
}

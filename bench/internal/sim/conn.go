package sim

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/fleet-telemetry/fleet-telemetry/bench/internal/hist"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/wsframe"
)

// Stats are shared by every connection of a scenario.
type Stats struct {
	Sent, Acked                          atomic.Int64
	ErrorReplies, Mismatches, Unexpected atomic.Int64
	ConnErrors, DialErrors               atomic.Int64
	Handshakes                           atomic.Int64
	// Latency holds ack latencies (ns) while Measure is set.
	Latency hist.H
	// Handshake holds TCP connect + TLS handshake + upgrade times (ns).
	Handshake hist.H
	Measure   atomic.Bool

	failMu   sync.Mutex
	failures []string
	nFail    int
}

// Fail records a failure (the first 20 messages are kept).
func (s *Stats) Fail(format string, args ...any) {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	s.nFail++
	if len(s.failures) < 20 {
		s.failures = append(s.failures, fmt.Sprintf(format, args...))
	}
}

// Failures returns the kept failure messages and the total count.
func (s *Stats) Failures() ([]string, int) {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	return append([]string(nil), s.failures...), s.nFail
}

// DialOptions say where and how to connect.
type DialOptions struct {
	// Addr is the daemon's host:port.
	Addr string
	// ServerName is checked against the server certificate.
	ServerName string
	// Local is the source address (nil: the kernel's choice).
	Local net.IP
	// ReadBuf is the initial read buffer (idle connections keep it small).
	ReadBuf int
	// Timeout bounds connect + handshake + upgrade.
	Timeout time.Duration
}

// Conn is one vehicle connection. One goroutine may send while another
// reads replies.
type Conn struct {
	VIN   string
	nc    *tls.Conn
	start time.Time // the scenario's clock origin

	wmu sync.Mutex
	out []byte
	env []byte
	rng *rand.Rand

	in  []byte
	off int
	dec *wsframe.Decoder

	mu   sync.Mutex
	fifo []pending
	head int
	seq  uint64
	txb  []byte
}

type pending struct {
	seq   uint64
	topic string
	sent  time.Duration
}

// CloseError is a server close frame.
type CloseError struct{ Code ws.StatusCode }

func (e *CloseError) Error() string {
	return fmt.Sprintf("server closed the websocket with %d", e.Code)
}

// Dial connects vin: TCP (from o.Local), TLS with vin's certificate, the
// WebSocket upgrade. start is the scenario clock's origin.
func Dial(ctx context.Context, o DialOptions, vin string, cfg *tls.Config, start time.Time) (*Conn, error) {
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}
	d := net.Dialer{}
	if o.Local != nil {
		d.LocalAddr = &net.TCPAddr{IP: o.Local}
	}
	t0 := time.Now()
	raw, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	if o.ReadBuf <= 0 {
		o.ReadBuf = 16 << 10
	}
	c := &Conn{VIN: vin, nc: tc, start: start, in: make([]byte, 0, o.ReadBuf),
		rng: rand.New(rand.NewPCG(uint64(t0.UnixNano()), uint64(len(vin)))),
		dec: wsframe.NewDecoder(wsframe.Options{Role: wsframe.RoleClient, MaxMessageSize: 1 << 20})}
	if dl, ok := ctx.Deadline(); ok {
		_ = tc.SetDeadline(dl)
	}
	if err := c.upgrade(o); err != nil {
		tc.Close()
		return nil, err
	}
	_ = tc.SetDeadline(time.Time{})
	return c, nil
}

func (c *Conn) upgrade(o DialOptions) error {
	var key [16]byte
	for i := range key {
		key[i] = byte(c.rng.Uint32())
	}
	req := "GET / HTTP/1.1\r\nHost: " + o.ServerName + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(key[:]) + "\r\nSec-WebSocket-Version: 13\r\n" +
		"Version: fleet-telemetry-bench\r\nX-Network-Interface: wifi\r\n\r\n"
	if _, err := c.nc.Write([]byte(req)); err != nil {
		return fmt.Errorf("upgrade: write: %w", err)
	}
	buf := make([]byte, 0, 1024)
	for {
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			status := buf[:bytes.IndexByte(buf, '\n')]
			if !bytes.HasPrefix(status, []byte("HTTP/1.1 101")) {
				return fmt.Errorf("upgrade refused: %q", bytes.TrimSpace(status))
			}
			c.in = append(c.in, buf[i+4:]...) // frames sent right after the upgrade
			return nil
		}
		if len(buf) == cap(buf) {
			if len(buf) > 16<<10 {
				return errors.New("upgrade: response header too large")
			}
			buf = append(buf, make([]byte, len(buf))...)[:len(buf)]
		}
		n, err := c.nc.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil && n == 0 {
			return fmt.Errorf("upgrade: read: %w", err)
		}
	}
}

// Close closes the TCP connection without a close handshake (a vehicle
// losing coverage).
func (c *Conn) Close() error { return c.nc.Close() }

// Outstanding is the number of records sent and not yet answered.
func (c *Conn) Outstanding() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.fifo) - c.head
}

func appendTxID(dst []byte, seq uint64) []byte {
	return strconv.AppendUint(append(dst, 'b', '-'), seq, 36)
}

// Send sends n records back to back in one write, each remembered for the
// reader to match its ack against.
func (c *Conn) Send(n int, corpus *Corpus, st *Stats) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.out = c.out[:0]
	now := time.Since(c.start)
	c.mu.Lock()
	for range n {
		c.seq++
		rec := corpus.Pick(c.rng)
		c.txb = appendTxID(c.txb[:0], c.seq)
		c.env = envelope.AppendStream(c.env[:0], &envelope.StreamMessage{
			TxID: c.txb, Topic: []byte(rec.Topic), MessageID: c.txb,
			CreatedAt: uint32(time.Now().Unix()), SenderID: []byte("vehicle_device." + c.VIN),
			Payload: rec.Payload,
		})
		var mask [4]byte
		m := c.rng.Uint32()
		mask[0], mask[1], mask[2], mask[3] = byte(m), byte(m>>8), byte(m>>16), byte(m>>24)
		c.out = wsframe.AppendMaskedFrame(c.out, ws.OpBinary, true, c.env, mask)
		c.fifo = append(c.fifo, pending{seq: c.seq, topic: rec.Topic, sent: now})
	}
	c.mu.Unlock()
	st.Sent.Add(int64(n))
	_, err := c.nc.Write(c.out)
	return err
}

func (c *Conn) pong(payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var mask [4]byte
	m := c.rng.Uint32()
	mask[0], mask[1], mask[2], mask[3] = byte(m), byte(m>>8), byte(m>>16), byte(m>>24)
	c.out = wsframe.AppendMaskedFrame(c.out[:0], ws.OpPong, true, payload, mask)
	_, err := c.nc.Write(c.out)
	return err
}

// handle matches one reply against the oldest record in flight.
func (c *Conn) handle(payload []byte, st *Stats) {
	var env envelope.Envelope
	if err := envelope.Decode(payload, &env); err != nil {
		st.Mismatches.Add(1)
		st.Fail("%s: undecodable reply: %v", c.VIN, err)
		return
	}
	now := time.Since(c.start)
	c.mu.Lock()
	if c.head == len(c.fifo) {
		c.mu.Unlock()
		st.Unexpected.Add(1)
		st.Fail("%s: reply txid=%q topic=%q with nothing in flight", c.VIN, env.TxID, env.Topic)
		return
	}
	p := c.fifo[c.head]
	c.head++
	if c.head > 256 && c.head*2 > len(c.fifo) {
		c.fifo = c.fifo[:copy(c.fifo, c.fifo[c.head:])]
		c.head = 0
	}
	c.txb = appendTxID(c.txb[:0], p.seq)
	txOK := bytes.Equal(env.TxID, c.txb)
	want := string(c.txb)
	c.mu.Unlock()
	switch {
	case env.Type == envelope.TypeStream:
		st.ErrorReplies.Add(1)
		st.Fail("%s: error reply txid=%q (expected %s, topic %s): %q", c.VIN, env.TxID, want, p.topic, env.Stream.Payload)
	case env.Type != envelope.TypeStreamAck:
		st.Mismatches.Add(1)
		st.Fail("%s: reply of message type %d", c.VIN, env.Type)
	case !txOK || string(env.Topic) != p.topic:
		st.Mismatches.Add(1)
		st.Fail("%s: ack txid=%q topic=%q, expected txid=%q topic=%q", c.VIN, env.TxID, env.Topic, want, p.topic)
	default:
		st.Acked.Add(1)
		if st.Measure.Load() {
			st.Latency.Record(int64(now - p.sent))
		}
	}
}

// ReadReplies handles replies until max have been read (max <= 0: until
// the connection fails or is closed), calling onReply after each.
func (c *Conn) ReadReplies(st *Stats, max int, onReply func()) error {
	handled := 0
	for {
		for c.off < len(c.in) {
			msg, n, err := c.dec.Decode(c.in[c.off:])
			if err != nil {
				return fmt.Errorf("decode frame: %w", err)
			}
			if n == 0 {
				break
			}
			c.off += n
			switch msg.Kind {
			case wsframe.KindBinary:
				c.handle(msg.Payload, st)
				handled++
				if onReply != nil {
					onReply()
				}
				if max > 0 && handled >= max {
					return nil
				}
			case wsframe.KindClose:
				return &CloseError{Code: msg.CloseCode}
			case wsframe.KindPing:
				if err := c.pong(msg.Payload); err != nil {
					return err
				}
			}
		}
		if c.off > 0 {
			c.in = c.in[:copy(c.in, c.in[c.off:])]
			c.off = 0
		}
		if cap(c.in)-len(c.in) < 512 {
			c.in = append(c.in, make([]byte, cap(c.in)+4096)...)[:len(c.in)]
		}
		n, err := c.nc.Read(c.in[len(c.in):cap(c.in)])
		c.in = c.in[:len(c.in)+n]
		if err != nil && n == 0 {
			return err
		}
	}
}

// SetReadDeadline bounds the next reads.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// Package vehicle is a simulated vehicle: an mTLS WebSocket client that
// sends telemetry records the way a car does and reads the daemon's
// replies, and builders of realistic record payloads. The end-to-end tests
// and the `send` command use the client; the load generator uses the
// payload builders (bench/internal/sim has its own connections, made for
// tens of thousands at once).
package vehicle

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/gobwas/ws"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/wsframe"
)

// Client is one vehicle connection. It is not safe for concurrent use,
// except that one goroutine may write while another reads.
type Client struct {
	conn net.Conn
	r    io.Reader
	dec  *wsframe.Decoder
	in   []byte
	off  int
	out  []byte
}

// Config says where and how to connect.
type Config struct {
	// Addr is host:port of the daemon.
	Addr string
	// TLS carries the vehicle's client certificate and the server's CA.
	TLS *tls.Config
	// Header is sent with the upgrade request (X-TXID, X-Network-Interface,
	// Version ...).
	Header http.Header
	// NetDial, when set, opens the TCP connection TLS runs on (tests wrap
	// it to split or delay what the client sends).
	NetDial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// TLSFromDir builds a client TLS config from a `certs dev` directory: the
// VIN's certificate and key, trusting the directory's CA.
func TLSFromDir(dir, vin string) (*tls.Config, error) {
	d := devca.Dir{Path: dir}
	cert, err := tls.LoadX509KeyPair(d.VehicleCertFile(vin), d.VehicleKeyFile(vin))
	if err != nil {
		return nil, fmt.Errorf("vehicle: load certificate for %s: %w", vin, err)
	}
	caPEM, err := os.ReadFile(d.File(devca.CACertFile))
	if err != nil {
		return nil, fmt.Errorf("vehicle: read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("vehicle: %s holds no certificate", d.File(devca.CACertFile))
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "localhost"}, nil
}

// Dial connects, completes TLS and the WebSocket upgrade.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	d := ws.Dialer{TLSConfig: cfg.TLS, NetDial: cfg.NetDial}
	if cfg.Header != nil {
		d.Header = ws.HandshakeHeaderHTTP(cfg.Header)
	}
	conn, br, _, err := d.Dial(ctx, "wss://"+cfg.Addr+"/")
	if err != nil {
		return nil, fmt.Errorf("vehicle: dial %s: %w", cfg.Addr, err)
	}
	c := &Client{conn: conn, r: conn, dec: wsframe.NewDecoder(wsframe.Options{Role: wsframe.RoleClient, MaxMessageSize: 16 << 20})}
	if br != nil {
		// Frames the server sent right after the upgrade sit in br.
		c.r = io.MultiReader(br, conn)
	}
	return c, nil
}

// Conn is the underlying connection (for deadlines and raw writes).
func (c *Client) Conn() net.Conn { return c.conn }

// Close closes the TCP connection without a close handshake.
func (c *Client) Close() error { return c.conn.Close() }

func newMask() [4]byte {
	var m [4]byte
	_, _ = rand.Read(m[:])
	return m
}

// WriteFrame sends one masked frame.
func (c *Client) WriteFrame(op ws.OpCode, fin bool, payload []byte) error {
	c.out = wsframe.AppendMaskedFrame(c.out[:0], op, fin, payload, newMask())
	_, err := c.conn.Write(c.out)
	return err
}

// Send sends one record.
func (c *Client) Send(m *envelope.StreamMessage) error {
	return c.WriteFrame(ws.OpBinary, true, envelope.AppendStream(nil, m))
}

// SendMany sends records back to back in one write (pipelined).
func (c *Client) SendMany(ms []*envelope.StreamMessage) error {
	c.out = c.out[:0]
	var body []byte
	for _, m := range ms {
		body = envelope.AppendStream(body[:0], m)
		c.out = wsframe.AppendMaskedFrame(c.out, ws.OpBinary, true, body, newMask())
	}
	_, err := c.conn.Write(c.out)
	return err
}

// Message is one frame or message received from the server; Payload is the
// client's own copy.
type Message struct {
	Kind      wsframe.Kind
	Payload   []byte
	CloseCode ws.StatusCode
}

// ReadMessage reads the next message or control frame. A deadline on Conn()
// bounds the wait.
func (c *Client) ReadMessage() (Message, error) {
	for {
		if c.off < len(c.in) {
			msg, n, err := c.dec.Decode(c.in[c.off:])
			if err != nil {
				return Message{}, fmt.Errorf("vehicle: decode frame: %w", err)
			}
			if n > 0 {
				c.off += n
				if msg.Kind == wsframe.KindNone {
					continue
				}
				return Message{Kind: msg.Kind, Payload: append([]byte(nil), msg.Payload...), CloseCode: msg.CloseCode}, nil
			}
		}
		if c.off > 0 {
			c.in = c.in[:copy(c.in, c.in[c.off:])]
			c.off = 0
		}
		if cap(c.in)-len(c.in) < 16<<10 {
			c.in = append(c.in, make([]byte, 32<<10)...)[:len(c.in)]
		}
		n, err := c.r.Read(c.in[len(c.in):cap(c.in)])
		c.in = c.in[:len(c.in)+n]
		if err != nil && n == 0 {
			return Message{}, err
		}
	}
}

// Reply is the server's answer to a record.
type Reply struct {
	// Ack is true for an ack, false for an error reply.
	Ack         bool
	TxID, Topic string
	MessageID   string
	// Text is an error reply's message.
	Text string
}

// ParseReply decodes a reply envelope.
func ParseReply(b []byte) (Reply, error) {
	var env envelope.Envelope
	if err := envelope.Decode(b, &env); err != nil {
		return Reply{}, fmt.Errorf("vehicle: reply: %w", err)
	}
	r := Reply{TxID: string(env.TxID), Topic: string(env.Topic), MessageID: string(env.MessageID)}
	switch env.Type {
	case envelope.TypeStreamAck:
		r.Ack = true
	case envelope.TypeStream:
		r.Text = string(env.Stream.Payload)
	default:
		return Reply{}, fmt.Errorf("vehicle: reply has message type %d", env.Type)
	}
	return r, nil
}

// ErrClosed is returned by ReadReply when the server sent a close frame.
var ErrClosed = errors.New("vehicle: server closed the websocket")

// CloseError carries the close code the server sent.
type CloseError struct{ Code ws.StatusCode }

func (e *CloseError) Error() string { return fmt.Sprintf("vehicle: server closed with %d", e.Code) }
func (e *CloseError) Unwrap() error { return ErrClosed }

// ReadReply reads until the next ack or error reply, answering nothing and
// skipping pongs. A close frame returns a *CloseError.
func (c *Client) ReadReply(timeout time.Duration) (Reply, error) {
	if timeout > 0 {
		_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
		defer c.conn.SetReadDeadline(time.Time{})
	}
	for {
		m, err := c.ReadMessage()
		if err != nil {
			return Reply{}, err
		}
		switch m.Kind {
		case wsframe.KindBinary:
			return ParseReply(m.Payload)
		case wsframe.KindClose:
			return Reply{}, &CloseError{Code: m.CloseCode}
		}
	}
}

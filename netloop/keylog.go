package netloop

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"io"
)

// trafficSecrets collects the TLS 1.3 application traffic secrets of one
// connection's handshake from crypto/tls's key log, so that connection's
// record layer can take over after the handshake (see tlsrecord).
//
// Each handshake gets its own collector through its own tls.Config (see
// perConnConfig): crypto/tls writes a handshake's lines only to the
// KeyLogWriter of the configuration that handshake runs on, so the
// secrets reach the connection that negotiated them by construction. No
// lookup is keyed by anything a peer chooses (such as the ClientHello
// random, which any peer can copy from another's ClientHello).
//
// Only the connection's handshake goroutine writes and reads it.
type trafficSecrets struct {
	client, server []byte
	// next, when set, also receives every line (the operator's own
	// KeyLogWriter, for debugging with a packet capture).
	next io.Writer
}

var (
	labelClientTraffic = []byte("CLIENT_TRAFFIC_SECRET_0")
	labelServerTraffic = []byte("SERVER_TRAFFIC_SECRET_0")
)

// Write takes one NSS key log line: "LABEL <client random hex> <secret hex>\n".
func (s *trafficSecrets) Write(line []byte) (int, error) {
	if s.next != nil {
		_, _ = s.next.Write(line)
	}
	label, rest, ok := bytes.Cut(bytes.TrimSpace(line), []byte{' '})
	if !ok {
		return len(line), nil
	}
	client := bytes.Equal(label, labelClientTraffic)
	if !client && !bytes.Equal(label, labelServerTraffic) {
		return len(line), nil // handshake secrets, TLS 1.2's CLIENT_RANDOM
	}
	_, secretHex, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		return len(line), nil
	}
	secret := make([]byte, hex.DecodedLen(len(secretHex)))
	if _, err := hex.Decode(secret, secretHex); err != nil {
		return len(line), nil
	}
	if client {
		s.client = secret
	} else {
		s.server = secret
	}
	return len(line), nil
}

// take returns both secrets once both arrived, and forgets them: from
// then on the record layer holds the only copies.
func (s *trafficSecrets) take() (client, server []byte, ok bool) {
	client, server = s.client, s.server
	s.client, s.server = nil, nil
	return client, server, client != nil && server != nil
}

// wipe zeroes secrets that were never handed to a record layer.
func (s *trafficSecrets) wipe() {
	clear(s.client)
	clear(s.server)
	s.client, s.server = nil, nil
}

// perConnConfig returns the tls.Config for handshakes on base whose
// GetConfigForClient gives each connection a configuration of its own,
// whose KeyLogWriter is that connection's trafficSecrets. ClientHelloInfo.Conn
// is the net.Conn the handshake runs on, the connection's own memConn.
func perConnConfig(base *tls.Config) *tls.Config {
	outer := base.Clone()
	outer.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		mc, ok := hello.Conn.(*memConn)
		if !ok {
			return nil, nil // not one of ours: no record layer hand-over
		}
		cfg := base.Clone()
		mc.secrets.next = base.KeyLogWriter
		cfg.KeyLogWriter = &mc.secrets
		return cfg, nil
	}
	return outer
}

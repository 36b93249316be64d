package netloop

import (
	"bytes"
	"encoding/hex"
	"sync"
)

// handshakeSecrets are the TLS 1.3 application traffic secrets of one
// handshake, as crypto/tls logs them.
type handshakeSecrets struct {
	client, server []byte
	// ambiguous: another connection presented the same ClientHello random,
	// so the log lines cannot be told apart; the connection stays on
	// crypto/tls.
	ambiguous bool
}

// keyLogRouter is the KeyLogWriter of the server's TLS configuration. It
// hands each TLS 1.3 handshake's traffic secrets to the connection that
// registered its ClientHello random, so that connection's record layer can
// take over from crypto/tls (see tlsrecord). Secrets never leave the
// process; lines for randoms nobody registered are dropped.
type keyLogRouter struct {
	mu sync.Mutex
	m  map[[32]byte]*handshakeSecrets
}

var keyLogs = &keyLogRouter{m: map[[32]byte]*handshakeSecrets{}}

// register starts collecting the secrets of the handshake whose
// ClientHello carried random. A random seen twice at once (a replayed or
// forged ClientHello) makes both entries ambiguous.
func (r *keyLogRouter) register(random [32]byte) *handshakeSecrets {
	r.mu.Lock()
	defer r.mu.Unlock()
	if prev, dup := r.m[random]; dup {
		prev.ambiguous = true
		return &handshakeSecrets{ambiguous: true}
	}
	s := &handshakeSecrets{}
	r.m[random] = s
	return s
}

// unregister ends the collection for s (registered under random).
func (r *keyLogRouter) unregister(random [32]byte, s *handshakeSecrets) {
	r.mu.Lock()
	if r.m[random] == s {
		delete(r.m, random)
	}
	r.mu.Unlock()
}

// take returns s's secrets once both are in and unambiguous.
func (r *keyLogRouter) take(s *handshakeSecrets) (client, server []byte, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.ambiguous || s.client == nil || s.server == nil {
		return nil, nil, false
	}
	return s.client, s.server, true
}

var (
	labelClientTraffic = []byte("CLIENT_TRAFFIC_SECRET_0")
	labelServerTraffic = []byte("SERVER_TRAFFIC_SECRET_0")
)

// Write takes one NSS key log line: "LABEL <client random hex> <secret hex>\n".
func (r *keyLogRouter) Write(line []byte) (int, error) {
	label, rest, ok := bytes.Cut(bytes.TrimSpace(line), []byte{' '})
	if !ok {
		return len(line), nil
	}
	client := bytes.Equal(label, labelClientTraffic)
	if !client && !bytes.Equal(label, labelServerTraffic) {
		return len(line), nil // handshake secrets, TLS 1.2's CLIENT_RANDOM
	}
	randomHex, secretHex, ok := bytes.Cut(rest, []byte{' '})
	var random [32]byte
	if !ok || hex.DecodedLen(len(randomHex)) != len(random) {
		return len(line), nil
	}
	if _, err := hex.Decode(random[:], randomHex); err != nil {
		return len(line), nil
	}
	secret := make([]byte, hex.DecodedLen(len(secretHex)))
	if _, err := hex.Decode(secret, secretHex); err != nil {
		return len(line), nil
	}
	r.mu.Lock()
	if s := r.m[random]; s != nil {
		if client {
			s.client = secret
		} else {
			s.server = secret
		}
	}
	r.mu.Unlock()
	return len(line), nil
}

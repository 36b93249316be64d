// Package netloop terminates vehicle connections on gnet event loops: TLS
// (crypto/tls, handshake off the loop), the HTTP upgrade, WebSocket frames,
// envelope and payload checks, the hand-off to the spool, and acks written
// back in arrival order once the spool says a record is durable.
//
// The loops never block: a connection's ClientHello is collected on its
// loop, then its handshake runs in a goroutine of its own that holds one of
// a bounded number of handshake slots while it computes; fsyncs happen in
// the spool's committer, and timeouts are enforced by a separate ticker
// that only flags connections and wakes their loop.
package netloop

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// Options configure a Server. Zero values take the documented defaults.
type Options struct {
	// Addr is host:port to listen on, e.g. "127.0.0.1:4443" (port 0 picks a
	// free port; Addr() tells which).
	Addr string
	// TLS is the server configuration; it must require and verify client
	// certificates (NewTLSConfig builds one). SetTLSConfig replaces it.
	TLS *tls.Config
	// Spool receives every record that is acked once durable (a
	// *spool.Spool).
	Spool Spool
	// RoutedTopics are the record types some sink takes. Records of other
	// types are acked and not kept, as the reference does.
	RoutedTopics []string
	// Loops is the number of event loops (default: one per CPU).
	Loops int
	// MaxMessageSize bounds one WebSocket message (default 1,000,000 bytes).
	MaxMessageSize int
	// MaxInFlight bounds replies (acks) a connection has waiting; a vehicle
	// that pushes more is shed with close 1013 (default 4096).
	MaxInFlight int
	// HandshakeTimeout bounds accept → TLS established (default 10s).
	HandshakeTimeout time.Duration
	// RequestTimeout bounds TLS established → WebSocket upgrade request
	// complete (default 10s): slow or silent HTTP clients are dropped.
	RequestTimeout time.Duration
	// IdleTimeout closes a WebSocket that received nothing for this long
	// (default 10m; negative disables).
	IdleTimeout time.Duration
	// MaxHandshakes bounds the TLS handshakes computing at once (default
	// 64 per CPU). A handshake takes a slot only once its whole ClientHello
	// has arrived, and gives it back while it waits for the peer's next
	// flight; more wait for a slot in arrival order.
	MaxHandshakes int
	// MaxHandshakeBytes bounds the memory all connections together may
	// hold before their handshake is done (default 256 MiB): ClientHellos
	// still arriving, and handshakeCost per handshake in progress. A
	// connection that would pass it is closed and counted
	// (tls_handshake_memory).
	MaxHandshakeBytes int64
	// VerifiedCertCache bounds how many client certificate chains that
	// verified are remembered, so a reconnecting vehicle skips chain
	// verification (default 65536; negative disables). It is emptied when
	// SetTLSConfig installs a new configuration.
	VerifiedCertCache int
	// CryptoTLSRecords keeps every connection on crypto/tls after its
	// handshake. By default a TLS 1.3 connection's records are handled by
	// tlsrecord once the handshake is done, and crypto/tls's connection
	// state (a few KiB per vehicle) is released; TLS 1.2 connections
	// always stay on crypto/tls.
	CryptoTLSRecords bool
	// MaxConnections caps open connections (default: the process's
	// open-file limit less ReservedFiles). Beyond it new connections are
	// closed at once and counted: accept must never run out of file
	// descriptors, because gnet stops its event loops when accept fails.
	MaxConnections int
	// MaxBufferedBytes bounds the memory all connections together may hold
	// beyond their fixed state (default 256 MiB): partly received frames
	// and requests, fragmented messages being reassembled, queued replies
	// and pongs, output the peer has not read yet, and ciphertext of
	// incomplete TLS records. A connection that grows past it is shed
	// with 1013 (try again later).
	MaxBufferedBytes int64
	// MaxConnectionBytes bounds what one connection may hold of the above
	// (default the larger of 4 MiB and three times MaxMessageSize): a
	// peer past it, typically one that never reads its acks or pongs, is
	// closed with 1008 (policy violation) and counted
	// (connection_memory_cap).
	MaxConnectionBytes int
	// ReservedFiles are descriptors kept for everything but vehicles (the
	// spool's files, sinks, metrics; default 1024).
	ReservedFiles int
	// AckMode says when a record kept in the spool is acked (default
	// AckOnCommit).
	AckMode AckMode
	// ReliableTopics are record types acked only once their sink confirmed
	// delivery (the reference's reliable_ack_sources); the caller reports
	// deliveries with Server.Delivered.
	ReliableTopics []string
	// RateLimit, when Limit > 0, caps records per connection: at most Limit
	// per Interval; the excess is dropped without an ack and counted.
	RateLimit RateLimit
	// Connectivity makes the server record a CONNECTED event after each
	// upgrade and a DISCONNECTED event when the socket ends, however it
	// ends, into the spool as "connectivity" records.
	Connectivity bool
	// AllowVIN, when set, must accept a vehicle's device id or the upgrade
	// is refused with 403.
	AllowVIN func(deviceID string) bool
	// ReliableAckDispatchers names, per reliable topic, the dispatcher whose
	// confirmation releases its acks: the dispatcher label of the
	// reliable_ack metrics (metrics only).
	ReliableAckDispatchers map[string]string
	// SignalTrackingVINs are the vehicles whose signals are also counted
	// per VIN (vin_signal_count; the reference's
	// vins_signal_tracking_enabled).
	SignalTrackingVINs []string
	// QuietHandshakeErrors stops logging failed TLS handshakes (they are
	// still counted): scanners and bad clients can be loud.
	QuietHandshakeErrors bool
	// Logger receives one line per connection event (default slog.Default).
	Logger *slog.Logger
}

func (o *Options) setDefaults() {
	if o.Loops <= 0 {
		o.Loops = runtime.NumCPU()
	}
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = 1_000_000
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 4096
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 10 * time.Second
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 10 * time.Minute
	}
	if o.MaxBufferedBytes <= 0 {
		o.MaxBufferedBytes = 256 << 20
	}
	if o.MaxConnectionBytes <= 0 {
		o.MaxConnectionBytes = max(4<<20, 3*o.MaxMessageSize)
	}
	if o.ReservedFiles <= 0 {
		o.ReservedFiles = 1024
	}
	if o.MaxConnections <= 0 {
		var rl unix.Rlimit
		o.MaxConnections = 1 << 20
		if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Cur < uint64(o.MaxConnections+o.ReservedFiles) {
			o.MaxConnections = max(int(rl.Cur)-o.ReservedFiles, 16)
		}
	}
	if o.MaxHandshakes <= 0 {
		o.MaxHandshakes = 64 * runtime.NumCPU()
	}
	if o.MaxHandshakeBytes <= 0 {
		o.MaxHandshakeBytes = 256 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// AckMode says when a record is acked.
type AckMode uint8

const (
	// AckOnCommit acks once the spool commit holding the record was
	// fsync'd: an acked record survives a crash.
	AckOnCommit AckMode = iota
	// AckOnReceipt acks as soon as the record is handed to the spool, like
	// the reference server's default; a crash may lose acked records.
	AckOnReceipt
)

// RateLimit is a per-connection record budget.
type RateLimit struct {
	// Limit is the number of records allowed per Interval (0: no limit).
	Limit int
	// Interval is the window the budget is counted over.
	Interval time.Duration
}

// Server is a running listener. Create with New, then Start.
type Server struct {
	gnet.BuiltinEventEngine

	opts     Options
	log      *slog.Logger
	tlsCfg   atomic.Pointer[tls.Config]
	routed   map[string]bool
	reliable map[string]bool

	// Metric series prepared in New (nil maps are fine).
	reliableMetrics map[string]*reliableMetrics
	vinSignals      map[string]*vinSignalMetrics

	// pendingDelivery maps the spool seq of a record acked on delivery to
	// the connection waiting for it (see Delivered).
	pdMu            sync.Mutex
	pendingDelivery map[uint64]deliveryWaiter
	// deliveryFloor is the spool's last seq when the server started: no
	// connection of this process waits for a record at or below it (the
	// forwarder delivering a backlog from an earlier run).
	deliveryFloor uint64

	engine   gnet.Engine
	addr     net.Addr
	booted   chan struct{}
	done     chan struct{}
	runErr   error
	draining atomic.Bool

	openConns   atomic.Int64
	buffered    atomic.Int64 // bytes booked by conn.account, all connections
	lastFullLog atomic.Int64 // unix seconds of the last "limit reached" line
	// lastHsFullLog: the same for the handshake memory limit.
	lastHsFullLog atomic.Int64

	hsSlots chan struct{}
	hsHeld  atomic.Int64 // bytes charged against MaxHandshakeBytes

	regMu sync.Mutex
	conns map[*conn]struct{}

	// vehicles are the upgraded connections' stats (what /connz lists),
	// each knowing its index; lastCID numbers them. vehMu is held only to
	// add, remove (swap with the last) or copy the pointers.
	vehMu    sync.Mutex
	vehicles []*vehicleStats
	lastCID  uint64

	shutdownOnce sync.Once
	shutdownErr  error

	stopTicker chan struct{}
	tickerDone chan struct{}
	baseCtx    context.Context
	cancelBase context.CancelFunc
}

// New checks the options and prepares a Server.
func New(o Options) (*Server, error) {
	o.setDefaults()
	if o.TLS == nil {
		return nil, errors.New("netloop: no TLS configuration")
	}
	if o.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
		return nil, errors.New("netloop: TLS configuration must require and verify client certificates")
	}
	if sp, ok := o.Spool.(*spool.Spool); o.Spool == nil || ok && sp == nil {
		return nil, errors.New("netloop: no spool")
	}
	s := &Server{
		opts:       o,
		log:        o.Logger,
		routed:     make(map[string]bool, len(o.RoutedTopics)),
		booted:     make(chan struct{}),
		done:       make(chan struct{}),
		hsSlots:    make(chan struct{}, o.MaxHandshakes),
		conns:      make(map[*conn]struct{}),
		stopTicker: make(chan struct{}),
		tickerDone: make(chan struct{}),
	}
	s.baseCtx, s.cancelBase = context.WithCancel(context.Background())
	handshakeSlots.Store(int64(o.MaxHandshakes))
	s.tlsCfg.Store(serverConfig(o.TLS, o.VerifiedCertCache, o.CryptoTLSRecords))
	for _, t := range o.RoutedTopics {
		s.routed[t] = true
	}
	s.reliable = map[string]bool{}
	s.pendingDelivery = map[uint64]deliveryWaiter{}
	s.deliveryFloor = o.Spool.LastSeq()
	for _, t := range o.ReliableTopics {
		if !s.routed[t] {
			return nil, fmt.Errorf("netloop: reliable topic %q is not routed", t)
		}
		s.reliable[t] = true
	}
	s.reliableMetrics = make(map[string]*reliableMetrics, len(o.ReliableTopics))
	for _, t := range o.ReliableTopics {
		s.reliableMetrics[t] = newReliableMetrics(t, o.ReliableAckDispatchers[t])
	}
	s.vinSignals = make(map[string]*vinSignalMetrics, len(o.SignalTrackingVINs))
	for _, v := range o.SignalTrackingVINs {
		s.vinSignals[v] = newVINSignalMetrics(v)
	}
	if o.RateLimit.Limit > 0 && o.RateLimit.Interval <= 0 {
		return nil, errors.New("netloop: rate limit without an interval")
	}
	return s, nil
}

// SetTLSConfig makes new handshakes use cfg; established connections keep
// theirs.
func (s *Server) SetTLSConfig(cfg *tls.Config) {
	s.tlsCfg.Store(serverConfig(cfg, s.opts.VerifiedCertCache, s.opts.CryptoTLSRecords))
}

// Start listens and runs the event loops in the background. It returns once
// the listener accepts connections, or with the reason it could not.
func (s *Server) Start() error {
	go func() {
		err := gnet.Run(s, "tcp://"+s.opts.Addr,
			// A restart binds the port at once although the connections
			// the previous process closed itself (refused handshakes,
			// error closes, 403s, idle timeouts) still sit in TIME_WAIT
			// on it; without SO_REUSEADDR the bind fails for up to 60 s.
			// A second process still cannot listen on the port while the
			// first does (Linux refuses SO_REUSEADDR binds next to a
			// listening socket); SO_REUSEPORT, which would allow that, is
			// deliberately not set.
			gnet.WithReuseAddr(true),
			gnet.WithMulticore(true),
			gnet.WithNumEventLoop(s.opts.Loops),
			gnet.WithTCPKeepAlive(time.Minute),
			gnet.WithLogger(gnetLogger{s.log}),
		)
		s.runErr = err
		close(s.done)
	}()
	select {
	case <-s.booted:
	case <-s.done:
		// gnet reports a port in use as "setsockopt: bad file
		// descriptor"; a plain listen names the real cause.
		ln, err := net.Listen("tcp", s.opts.Addr)
		if err != nil {
			return fmt.Errorf("netloop: listen %s: %w", s.opts.Addr, err)
		}
		ln.Close()
		return fmt.Errorf("netloop: listen %s: %w", s.opts.Addr, s.runErr)
	}
	go s.tick()
	return nil
}

// Addr is the address the listener is bound to (valid after Start).
func (s *Server) Addr() net.Addr { return s.addr }

// Done is closed when the event loops have stopped.
func (s *Server) Done() <-chan struct{} { return s.done }

// OnBoot implements gnet.EventHandler.
func (s *Server) OnBoot(eng gnet.Engine) gnet.Action {
	s.engine = eng
	s.addr = boundAddr(eng)
	close(s.booted)
	return gnet.None
}

// boundAddr reads the listener's address, which tells the port when the
// configuration asked for port 0.
func boundAddr(eng gnet.Engine) net.Addr {
	fd, err := eng.Dup()
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}
	}
	return nil
}

// OnOpen implements gnet.EventHandler: a new TCP connection starts its TLS
// handshake in the handshake pool.
func (s *Server) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	connectionsAccepted.Inc()
	if s.draining.Load() {
		refusedDraining.Inc()
		return nil, gnet.Close
	}
	if n := s.openConns.Load(); n >= int64(s.opts.MaxConnections) {
		refusedTooMany.Inc()
		if now := time.Now().Unix(); s.lastFullLog.Swap(now) != now {
			s.log.Warn("connection limit reached; refusing new connections", "limit", s.opts.MaxConnections)
		}
		return nil, gnet.Close
	}
	c := newConn(s, gc)
	gc.SetContext(c)
	s.register(c)
	// The handshake starts once the whole ClientHello is in (see
	// conn.onHandshakeBytes): a connection that sends nothing, or part of
	// a ClientHello, holds only those bytes and its deadline, so stalled
	// sockets cannot starve real vehicles.
	return nil, gnet.None
}

// chargeHandshake books n more bytes of handshake-phase memory, or says no
// (counted) when that would pass MaxHandshakeBytes.
func (s *Server) chargeHandshake(n int64) bool {
	if n <= 0 {
		s.unchargeHandshake(-n)
		return true
	}
	if s.hsHeld.Add(n) > s.opts.MaxHandshakeBytes {
		s.hsHeld.Add(-n)
		refusedHandshakeMemory.Inc()
		if now := time.Now().Unix(); s.lastHsFullLog.Swap(now) != now {
			s.log.Warn("handshake memory limit reached; refusing handshakes", "limit_bytes", s.opts.MaxHandshakeBytes)
		}
		return false
	}
	handshakeBytes.Add(n)
	return true
}

// unchargeHandshake returns n bytes booked by chargeHandshake.
func (s *Server) unchargeHandshake(n int64) {
	s.hsHeld.Add(-n)
	handshakeBytes.Add(-n)
}

// OnTraffic implements gnet.EventHandler.
func (s *Server) OnTraffic(gc gnet.Conn) gnet.Action {
	c, _ := gc.Context().(*conn)
	if c == nil {
		return gnet.Close
	}
	act := c.onTraffic()
	if act == gnet.Close {
		c.closeNotify()
	}
	return act
}

// OnClose implements gnet.EventHandler.
func (s *Server) OnClose(gc gnet.Conn, err error) gnet.Action {
	c, _ := gc.Context().(*conn)
	if c == nil {
		return gnet.None
	}
	c.onClose(err)
	s.unregister(c)
	return gnet.None
}

func (s *Server) register(c *conn) {
	s.regMu.Lock()
	s.conns[c] = struct{}{}
	s.regMu.Unlock()
	s.openConns.Add(1)
	connectionsOpen.Inc()
}

func (s *Server) unregister(c *conn) {
	s.regMu.Lock()
	_, ok := s.conns[c]
	delete(s.conns, c)
	s.regMu.Unlock()
	if ok {
		s.openConns.Add(-1)
		connectionsOpen.Dec()
	}
}

// Connections is the number of open connections.
func (s *Server) Connections() int {
	return int(s.openConns.Load())
}

// tick enforces deadlines. It runs off the loops: it only flags expired
// connections and wakes their loop, which closes them.
func (s *Server) tick() {
	defer close(s.tickerDone)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var expired []*conn
	for {
		select {
		case <-s.stopTicker:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		expired = expired[:0]
		s.regMu.Lock()
		for c := range s.conns {
			if d := c.deadline.Load(); d > 0 && now > d {
				expired = append(expired, c)
			}
		}
		s.regMu.Unlock()
		for _, c := range expired {
			c.expired.Store(true)
			_ = c.gc.Wake(nil)
		}
	}
}

// Shutdown stops taking connections and records, lets every connection
// write the acks the spool still owes it, closes each vehicle with
// WebSocket close 1001, and stops the loops. Records that were not acked
// when ctx ends are left to the vehicles to resend.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() { s.shutdownErr = s.shutdown(ctx) })
	return s.shutdownErr
}

func (s *Server) shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.regMu.Lock()
	all := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		all = append(all, c)
	}
	s.regMu.Unlock()
	for _, c := range all {
		c.goAway.Store(true)
		_ = c.gc.Wake(nil)
	}
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
wait:
	for s.Connections() > 0 {
		select {
		case <-ctx.Done():
			break wait
		case <-poll.C:
		}
	}
	s.cancelBase()
	close(s.stopTicker)
	<-s.tickerDone
	stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.engine.Stop(stopCtx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("netloop: stop: %w", err)
	}
	<-s.done
	return nil
}

// gnetLogger sends gnet's own messages to slog: its start banner at debug,
// its errors as errors.
type gnetLogger struct{ log *slog.Logger }

func (g gnetLogger) Debugf(format string, args ...any) {
	g.log.Debug("gnet: " + fmt.Sprintf(format, args...))
}
func (g gnetLogger) Infof(format string, args ...any) {
	g.log.Debug("gnet: " + fmt.Sprintf(format, args...))
}
func (g gnetLogger) Warnf(format string, args ...any) {
	g.log.Warn("gnet: " + fmt.Sprintf(format, args...))
}
func (g gnetLogger) Errorf(format string, args ...any) {
	g.log.Error("gnet: " + fmt.Sprintf(format, args...))
}
func (g gnetLogger) Fatalf(format string, args ...any) {
	g.log.Error("gnet: " + fmt.Sprintf(format, args...))
}

// deliveryWaiter is a connection waiting for a record's delivery; a nil
// conn marks a delivery reported before the connection registered.
type deliveryWaiter struct {
	c     *conn
	token uint64
	m     *reliableMetrics // counts a miss
}

// Delivered reports that the sink named for a reliable topic confirmed the
// record with spool sequence seq: its ack may leave. Safe to call from any
// goroutine; unknown seqs (records of other topics) are ignored once the
// connection would have registered them.
func (s *Server) Delivered(seq uint64) {
	s.pdMu.Lock()
	w, ok := s.pendingDelivery[seq]
	if ok {
		delete(s.pendingDelivery, seq)
	} else if seq > s.deliveryFloor {
		// The forwarder can be faster than the loop that appended the
		// record (awaitDelivery runs just after Append, the commit may
		// already be done); remember it for awaitDelivery. Seqs from an
		// earlier run are nobody's: remembering them would only leak.
		s.pendingDelivery[seq] = deliveryWaiter{}
	}
	s.pdMu.Unlock()
	if ok && w.c != nil {
		if w.c.closed.Load() {
			w.m.missed() // the vehicle is gone: nobody gets this ack
		}
		w.c.post(commitNote{token: w.token, delivered: true})
	}
}

// forgetDelivery drops the wait for seq, whose commit failed: it will
// never be delivered.
func (s *Server) forgetDelivery(seq uint64) {
	s.pdMu.Lock()
	delete(s.pendingDelivery, seq)
	s.pdMu.Unlock()
}

// awaitDelivery registers conn c's reply token for seq; m counts a miss.
func (s *Server) awaitDelivery(seq uint64, c *conn, token uint64, m *reliableMetrics) {
	s.pdMu.Lock()
	_, early := s.pendingDelivery[seq]
	if early {
		delete(s.pendingDelivery, seq)
	} else {
		s.pendingDelivery[seq] = deliveryWaiter{c: c, token: token, m: m}
	}
	s.pdMu.Unlock()
	if early {
		c.post(commitNote{token: token, delivered: true})
	}
}

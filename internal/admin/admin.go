// Package admin is the daemon's local admin socket: a unix socket (mode
// 0600, default <spool dir>/admin.sock) through which `fleet-telemetry
// spool …` reads a running daemon's spool. Pebble allows one process per
// store, so while the daemon runs this is the only way in. Everything it
// offers is read-only (no cursor moves), except replaying or dropping a
// quarantined record (see lanes.go).
//
// The protocol is HTTP/1.1 over the socket:
//
//	GET /v1/stats
//	    200, application/json: a spool.Info.
//	GET /v1/records?from=A&to=B            records A <= seq <= B (B 0 or absent: to the newest)
//	GET /v1/records?last=N                 the newest N records, oldest first
//	GET /v1/records?follow=1[&from=A]      records from A (default: after the newest) and
//	                                       then every new commit, until the client goes away;
//	                                       with last=N, the newest N first
//	    optional on each: vin=V, topic=T (only records with that VIN / topic;
//	    records that do not decode are then left out)
//	    200, application/x-fleet-spool-records: a stream of frames
//	        uvarint seq (>= 1), uvarint length, length bytes (the record as
//	        spool.EncodeRecord wrote it, undecoded)
//	    ended by the frame
//	        uvarint 0, uvarint length, length bytes of an error message
//	        (empty: the stream is complete).
//	    A stream that ends without that frame was cut (the daemon stopped).
//
// Errors before the stream starts are 4xx/5xx with a text/plain message.
// Connections from a user other than the daemon's own or root are refused
// (SO_PEERCRED), on top of the socket's mode.
package admin

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// SocketName is the admin socket's file name in the spool directory.
const SocketName = "admin.sock"

// DefaultSocketPath returns the admin socket of the spool in spoolDir.
func DefaultSocketPath(spoolDir string) string { return filepath.Join(spoolDir, SocketName) }

// ContentTypeRecords is the media type of a record stream.
const ContentTypeRecords = "application/x-fleet-spool-records"

// Source is what the server reads; *spool.Spool implements it.
type Source interface {
	spool.RawReader
	Committed() <-chan struct{}
	LastSeq() uint64
}

// Server serves the admin socket.
type Server struct {
	path  string
	src   Source
	log   *slog.Logger
	ln    net.Listener
	hs    *http.Server
	done  chan struct{}
	close sync.Once
	fwds  atomic.Pointer[[]*forwarder.Forwarder]
}

// Listen creates the socket at path (replacing a stale one), mode 0600, and
// serves src on it until Close.
func Listen(path string, src Source, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "admin")
	// The socket is created under a temporary name and renamed into place
	// once its mode is 0600, so that it is never reachable with the
	// process umask's mode.
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	_ = os.Remove(tmp)
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		_ = ln.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	// A socket left by a daemon that was killed answers nobody; the spool's
	// lock (held by our caller) proves no other daemon serves this spool.
	if err := os.Rename(tmp, path); err != nil {
		_ = ln.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	s := &Server{path: path, src: src, log: log, ln: peerCredListener{ln.(*net.UnixListener), log}, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/stats", s.stats)
	mux.HandleFunc("GET /v1/records", s.records)
	mux.HandleFunc("GET /v1/lanes", s.lanes)
	mux.HandleFunc("GET /v1/quarantine", s.quarantineList)
	mux.HandleFunc("POST /v1/quarantine/replay", s.quarantineReplay)
	mux.HandleFunc("POST /v1/quarantine/drop", s.quarantineDrop)
	s.hs = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() {
		defer close(s.done)
		if err := s.hs.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin socket stopped", "err", err)
		}
	}()
	log.Info("serving admin socket", "path", path)
	return s, nil
}

// Close stops serving (open streams, such as a tail, are cut) and removes
// the socket. It is idempotent.
func (s *Server) Close() error {
	s.close.Do(func() {
		_ = s.hs.Close()
		<-s.done
		_ = os.Remove(s.path)
	})
	return nil
}

// peerCredListener refuses connections from other users than ours and
// root.
type peerCredListener struct {
	*net.UnixListener
	log *slog.Logger
}

func (l peerCredListener) Accept() (net.Conn, error) {
	for {
		c, err := l.UnixListener.AcceptUnix()
		if err != nil {
			return nil, err
		}
		uid, ok := peerUID(c)
		if ok && (uid == 0 || uid == uint32(os.Getuid())) {
			return c, nil
		}
		l.log.Warn("admin socket: connection from another user refused", "uid", uid, "known", ok)
		_ = c.Close()
	}
}

func peerUID(c *net.UnixConn) (uint32, bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return 0, false
	}
	return cred.Uid, true
}

func (s *Server) stats(w http.ResponseWriter, _ *http.Request) {
	in, err := s.src.Info()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(in)
}

// Query selects records; it maps to /v1/records' parameters.
type Query struct {
	From, To uint64 // range; To 0: to the newest
	Last     int    // > 0: the newest Last records instead of a range
	Follow   bool   // keep streaming new commits
	VIN      string // only this VIN
	Topic    string // only this record type
}

func (q Query) values() string {
	v := url.Values{}
	if q.From > 0 {
		v.Set("from", strconv.FormatUint(q.From, 10))
	}
	if q.To > 0 {
		v.Set("to", strconv.FormatUint(q.To, 10))
	}
	if q.Last > 0 {
		v.Set("last", strconv.Itoa(q.Last))
	}
	if q.Follow {
		v.Set("follow", "1")
	}
	if q.VIN != "" {
		v.Set("vin", q.VIN)
	}
	if q.Topic != "" {
		v.Set("topic", q.Topic)
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

func parseQuery(r *http.Request) (Query, error) {
	var q Query
	var err error
	vals := r.URL.Query()
	u := func(name string) uint64 {
		s := vals.Get(name)
		if s == "" || err != nil {
			return 0
		}
		var v uint64
		v, err = strconv.ParseUint(s, 10, 64)
		if err != nil {
			err = fmt.Errorf("parameter %s: %w", name, err)
		}
		return v
	}
	q.From, q.To = u("from"), u("to")
	last := u("last")
	if last > 1<<20 {
		return q, errors.New("parameter last: at most 1048576")
	}
	q.Last = int(last)
	q.Follow = vals.Get("follow") == "1" || vals.Get("follow") == "true"
	q.VIN, q.Topic = vals.Get("vin"), vals.Get("topic")
	return q, err
}

// Matcher returns the filter for q's vin and topic, nil when there is none.
// A record that does not decode never matches a filter.
func (q Query) Matcher() func(spool.RawRecord) bool {
	if q.VIN == "" && q.Topic == "" {
		return nil
	}
	return func(r spool.RawRecord) bool {
		var rec spool.Record
		if spool.DecodeRecord(r.Value, r.Seq, &rec) != nil {
			return false
		}
		return (q.VIN == "" || rec.VIN == q.VIN) && (q.Topic == "" || string(rec.Topic) == q.Topic)
	}
}

// frameWriter writes the record stream.
type frameWriter struct {
	bw *bufio.Writer
	fl http.Flusher
}

func (f *frameWriter) record(r spool.RawRecord) error {
	var hdr [2 * binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], r.Seq)
	n += binary.PutUvarint(hdr[n:], uint64(len(r.Value)))
	if _, err := f.bw.Write(hdr[:n]); err != nil {
		return err
	}
	_, err := f.bw.Write(r.Value)
	return err
}

func (f *frameWriter) end(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	var hdr [1 + binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[1:], uint64(len(msg))) + 1
	_, _ = f.bw.Write(hdr[:n])
	_, _ = f.bw.WriteString(msg)
	f.flush()
}

func (f *frameWriter) flush() {
	_ = f.bw.Flush()
	if f.fl != nil {
		f.fl.Flush()
	}
}

func (s *Server) records(w http.ResponseWriter, r *http.Request) {
	q, err := parseQuery(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	match := q.Matcher()
	w.Header().Set("Content-Type", ContentTypeRecords)
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	fw := &frameWriter{bw: bufio.NewWriterSize(w, 64<<10), fl: fl}
	emit := func(rec spool.RawRecord) error {
		if match != nil && !match(rec) {
			return nil
		}
		return fw.record(rec)
	}
	switch {
	case q.Follow:
		fw.end(s.follow(ctx, q, fw, emit))
	case q.Last > 0:
		recs, err := spool.LastRaw(ctx, s.src, q.Last, match)
		for _, rec := range recs {
			if err == nil {
				err = fw.record(rec)
			}
		}
		fw.end(err)
	default:
		fw.end(spool.ScanRaw(ctx, s.src, q.From, q.To, emit))
	}
}

// follow streams records from q.From (0: after the newest) and then new
// commits until ctx ends or the spool closes.
func (s *Server) follow(ctx context.Context, q Query, fw *frameWriter, emit func(spool.RawRecord) error) error {
	next := q.From
	if next == 0 {
		next = s.src.LastSeq() + 1
	}
	if q.Last > 0 {
		// The newest Last records first; everything LastRaw did not see
		// is newer than both bounds below.
		start := s.src.LastSeq()
		recs, err := spool.LastRaw(ctx, s.src, q.Last, q.Matcher())
		if err != nil {
			return err
		}
		next = start + 1
		for _, rec := range recs {
			if err := fw.record(rec); err != nil {
				return err
			}
			next = max(next, rec.Seq+1)
		}
	}
	// The commit signal is backed by a poll, as in the forwarders.
	poll := time.NewTicker(time.Second)
	defer poll.Stop()
	var buf []spool.RawRecord
	for {
		committed := s.src.Committed() // before the read: no lost wake-up
		var err error
		buf, err = s.src.ReadRaw(next, q.To, 1024, 4<<20, buf[:0])
		if err != nil {
			return err
		}
		for _, rec := range buf {
			if err := emit(rec); err != nil {
				return err
			}
		}
		if len(buf) > 0 {
			next = buf[len(buf)-1].Seq + 1
			clear(buf)
			fw.flush()
			if q.To != 0 && next > q.To {
				return nil
			}
			continue
		}
		fw.flush()
		select {
		case <-ctx.Done():
			return nil
		case <-committed:
		case <-poll.C:
		}
	}
}

// Client talks to an admin socket.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client for the socket at path; nothing is dialled
// yet.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableCompression: true,
		MaxIdleConns:       2,
	}
	return &Client{path: path, hc: &http.Client{Transport: tr}}
}

// Path is the socket's path.
func (c *Client) Path() string { return c.path }

// Close releases idle connections.
func (c *Client) Close() error {
	c.hc.CloseIdleConnections()
	return nil
}

func (c *Client) get(ctx context.Context, pathAndQuery string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://admin"+pathAndQuery, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", c.path, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("admin socket %s: %s: %s", c.path, resp.Status, bytesTrim(msg))
	}
	return resp, nil
}

// Info fetches /v1/stats.
func (c *Client) Info(ctx context.Context) (spool.Info, error) {
	var in spool.Info
	resp, err := c.get(ctx, "/v1/stats")
	if err != nil {
		return in, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&in); err != nil {
		return in, fmt.Errorf("admin socket %s: stats: %w", c.path, err)
	}
	return in, nil
}

// ErrCut means a record stream ended without its end frame: the daemon
// stopped (or closed the socket) in the middle.
var ErrCut = errors.New("admin: record stream cut short (daemon stopped?)")

// Records streams the records q selects to fn, in order. It returns fn's
// first error, the daemon's error, ErrCut, or nil once the stream is
// complete (for a follow: when ctx ends).
func (c *Client) Records(ctx context.Context, q Query, fn func(spool.RawRecord) error) error {
	resp, err := c.get(ctx, "/v1/records"+q.values())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != ContentTypeRecords {
		return fmt.Errorf("admin socket %s: unexpected content type %q", c.path, ct)
	}
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		seq, err := binary.ReadUvarint(br)
		if err != nil {
			if q.Follow && ctx.Err() != nil {
				return nil
			}
			return ErrCut
		}
		n, err := binary.ReadUvarint(br)
		if err != nil || n > 1<<30 {
			if q.Follow && ctx.Err() != nil {
				return nil
			}
			return ErrCut
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			if q.Follow && ctx.Err() != nil {
				return nil
			}
			return ErrCut
		}
		if seq == 0 {
			if n == 0 {
				return nil
			}
			return fmt.Errorf("daemon: %s", b)
		}
		if err := fn(spool.RawRecord{Seq: seq, Value: b}); err != nil {
			return err
		}
	}
}

func bytesTrim(b []byte) string {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return string(b)
}

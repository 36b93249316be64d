package admin

// The forwarders' lanes and the spool's quarantine, for `fleet-telemetry
// spool stats` and `spool quarantine …`:
//
//	GET  /v1/lanes                          200, JSON: every lane's forwarder.LaneStatus
//	GET  /v1/quarantine[?lane=L]            200, JSON: the quarantined records (QuarantineEntry)
//	POST /v1/quarantine/replay?lane=L&seq=N send it again through the lane's sink; on success
//	                                        it leaves the quarantine (200), else 502 with why
//	POST /v1/quarantine/drop?lane=L&seq=N   delete it for good (200)
//
// Replay and drop are the admin socket's only writes; the CLI asks for
// confirmation before a drop.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// QuarantineStore is what the quarantine endpoints need of the spool;
// *spool.Spool implements it.
type QuarantineStore interface {
	Quarantine(lane string, fn func(*spool.Quarantined) bool) error
	DropQuarantined(lane string, seq uint64) error
}

// QuarantineEntry is one quarantined record on the wire: the quarantine's
// facts and the record as spool.EncodeRecord wrote it.
type QuarantineEntry struct {
	spool.Quarantined
	Seq    uint64 `json:"seq"`
	Record []byte `json:"record"`
}

// Decode returns the entry as a spool.Quarantined with its record decoded.
func (e QuarantineEntry) Decode() (spool.Quarantined, error) {
	q := e.Quarantined
	if err := spool.DecodeRecord(e.Record, e.Seq, &q.Record); err != nil {
		return q, err
	}
	return q, nil
}

// SetForwarders makes the forwarders' lanes visible (and their sinks
// usable for replays) on the socket.
func (s *Server) SetForwarders(fs []*forwarder.Forwarder) {
	s.fwds.Store(&fs)
}

func (s *Server) forwarders() []*forwarder.Forwarder {
	if p := s.fwds.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *Server) lanes(w http.ResponseWriter, _ *http.Request) {
	out := []forwarder.LaneStatus{}
	for _, f := range s.forwarders() {
		out = append(out, f.Lanes()...)
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func (s *Server) store(w http.ResponseWriter) (QuarantineStore, bool) {
	qs, ok := s.src.(QuarantineStore)
	if !ok {
		http.Error(w, "this spool has no quarantine", http.StatusNotImplemented)
	}
	return qs, ok
}

func (s *Server) quarantineList(w http.ResponseWriter, r *http.Request) {
	qs, ok := s.store(w)
	if !ok {
		return
	}
	out := []QuarantineEntry{}
	err := qs.Quarantine(r.URL.Query().Get("lane"), func(q *spool.Quarantined) bool {
		out = append(out, QuarantineEntry{Quarantined: *q, Seq: q.Record.Seq, Record: spool.EncodeRecord(nil, &q.Record)})
		return true
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// laneAndSeq reads ?lane=L&seq=N.
func laneAndSeq(r *http.Request) (lane string, seq uint64, err error) {
	lane = r.URL.Query().Get("lane")
	seq, err = strconv.ParseUint(r.URL.Query().Get("seq"), 10, 64)
	if lane == "" || err != nil || seq == 0 {
		return "", 0, errors.New("lane=LANE and seq=SEQ (>= 1) are required")
	}
	return lane, seq, nil
}

// quarantineError answers a failed replay or drop: 404 when the record is
// not in the quarantine, status otherwise.
func quarantineError(w http.ResponseWriter, err error, status int) {
	if errors.Is(err, spool.ErrNotQuarantined) {
		status = http.StatusNotFound
	}
	http.Error(w, err.Error(), status)
}

func (s *Server) quarantineReplay(w http.ResponseWriter, r *http.Request) {
	lane, seq, err := laneAndSeq(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	name, recordType, _ := strings.Cut(lane, "/")
	for _, f := range s.forwarders() {
		if f.Name() != name {
			continue
		}
		if err := f.Replay(r.Context(), recordType, seq); err != nil {
			quarantineError(w, err, http.StatusBadGateway)
			return
		}
		s.log.Info("quarantined record replayed through the admin socket", "lane", lane, "seq", seq)
		w.WriteHeader(http.StatusOK)
		return
	}
	http.Error(w, fmt.Sprintf("no forwarder %q runs in this daemon", name), http.StatusNotFound)
}

func (s *Server) quarantineDrop(w http.ResponseWriter, r *http.Request) {
	qs, ok := s.store(w)
	if !ok {
		return
	}
	lane, seq, err := laneAndSeq(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := qs.DropQuarantined(lane, seq); err != nil {
		quarantineError(w, err, http.StatusServiceUnavailable)
		return
	}
	s.log.Warn("quarantined record dropped through the admin socket", "lane", lane, "seq", seq)
	w.WriteHeader(http.StatusOK)
}

// Lanes fetches /v1/lanes.
func (c *Client) Lanes(ctx context.Context) ([]forwarder.LaneStatus, error) {
	var out []forwarder.LaneStatus
	return out, c.getJSON(ctx, "/v1/lanes", &out)
}

// Quarantine fetches the quarantined records of lane ("": every lane).
func (c *Client) Quarantine(ctx context.Context, lane string) ([]QuarantineEntry, error) {
	var out []QuarantineEntry
	return out, c.getJSON(ctx, "/v1/quarantine?"+url.Values{"lane": {lane}}.Encode(), &out)
}

// ReplayQuarantined asks the daemon to send a quarantined record again.
func (c *Client) ReplayQuarantined(ctx context.Context, lane string, seq uint64) error {
	return c.post(ctx, "/v1/quarantine/replay", lane, seq)
}

// DropQuarantined asks the daemon to delete a quarantined record.
func (c *Client) DropQuarantined(ctx context.Context, lane string, seq uint64) error {
	return c.post(ctx, "/v1/quarantine/drop", lane, seq)
}

func (c *Client) getJSON(ctx context.Context, pathAndQuery string, v any) error {
	resp, err := c.get(ctx, pathAndQuery)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("admin socket %s: %s: %w", c.path, pathAndQuery, err)
	}
	return nil
}

func (c *Client) post(ctx context.Context, path, lane string, seq uint64) error {
	q := url.Values{"lane": {lane}, "seq": {strconv.FormatUint(seq, 10)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://admin"+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("admin socket %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		err := fmt.Errorf("%s", bytesTrim(msg))
		if resp.StatusCode == http.StatusNotFound && strings.Contains(string(msg), "no such quarantined record") {
			err = fmt.Errorf("%w: %s seq %d", spool.ErrNotQuarantined, lane, seq)
		}
		return err
	}
	return nil
}

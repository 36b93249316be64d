package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

// recordView is one record as ls, cat and tail show it.
type recordView struct {
	Seq           uint64          `json:"seq"`
	ReceivedAtMs  int64           `json:"received_at_ms"`
	CreatedAtSec  uint32          `json:"created_at_sec"`
	VIN           string          `json:"vin"`
	Topic         string          `json:"topic"`
	TxID          string          `json:"txid"`
	ClientVersion string          `json:"client_version"`
	Size          int             `json:"size"` // stored bytes (key plus encoded record)
	PayloadBytes  int             `json:"payload_bytes"`
	Error         string          `json:"error,omitempty"`  // the record or its payload does not decode
	Record        json.RawMessage `json:"record,omitempty"` // the decoded JSON form (cat, tail --json)
}

// viewRecord decodes raw; with full, the payload is decoded to its JSON
// form too. The error is also in the view's Error.
func viewRecord(raw spool.RawRecord, full bool) (recordView, error) {
	v := recordView{Seq: raw.Seq, Size: spool.RecordSize(raw)}
	var r spool.Record
	if err := spool.DecodeRecord(raw.Value, raw.Seq, &r); err != nil {
		v.Error = err.Error()
		return v, err
	}
	v.ReceivedAtMs, v.CreatedAtSec, v.VIN, v.Topic = r.ReceivedAtMs, r.CreatedAtSec, r.VIN, string(r.Topic)
	v.TxID, v.ClientVersion, v.PayloadBytes = string(r.TxID), r.ClientVersion, len(r.Payload)
	if full {
		js, err := recordJSON(&r)
		if err != nil {
			v.Error = err.Error()
			return v, err
		}
		v.Record = js
	}
	return v, nil
}

// recordJSON is the reference's JSON form of r's payload: what the logger
// sink prints and a sink with transmit_decoded_records sends.
func recordJSON(r *spool.Record) (json.RawMessage, error) {
	js, _, err := forwarder.Encoder{JSON: true}.AppendValue(nil, r)
	if err != nil {
		return nil, fmt.Errorf("record %d: %w", r.Seq, err)
	}
	return js, nil
}

// exportLine is one line of `export --format jsonl` and `tail --json`: the
// logger sink's line with the seq in front.
type exportLine struct {
	Seq          uint64          `json:"seq"`
	Topic        string          `json:"topic"`
	VIN          string          `json:"vin"`
	TxID         string          `json:"txid"`
	ReceivedAtMs int64           `json:"received_at_ms"`
	Record       json.RawMessage `json:"record"`
}

func fmtTime(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).Format("2006-01-02 15:04:05.000")
}

func fmtAge(ms int64, now time.Time) string {
	if ms == 0 {
		return "-"
	}
	d := now.Sub(time.UnixMilli(ms))
	if d < 0 {
		d = 0
	}
	if d < time.Minute {
		return d.Round(100*time.Millisecond).String() + " ago"
	}
	return d.Round(time.Second).String() + " ago"
}

// fmtCount writes n with thousands separators.
func fmtCount(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	out := make([]byte, 0, len(s)+len(s)/3)
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}

func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// progress draws a one-line progress bar with rate and ETA on stderr.
type progress struct {
	w       io.Writer
	label   string
	total   int64 // estimate; 0 if unknown
	done    int64
	start   time.Time
	last    time.Time
	enabled bool
	now     func() time.Time
}

func newProgress(w io.Writer, enabled bool, label string, total int64) *progress {
	p := &progress{w: w, label: label, total: total, enabled: enabled, now: time.Now}
	p.start = p.now()
	p.last = p.start
	return p
}

// add counts n more records and redraws at most 5 times a second.
func (p *progress) add(n int) {
	p.done += int64(n)
	if !p.enabled {
		return
	}
	if now := p.now(); now.Sub(p.last) >= 200*time.Millisecond {
		p.last = now
		p.draw(now, false)
	}
}

// finish draws the final state and ends the line.
func (p *progress) finish() {
	if p.enabled {
		p.draw(p.now(), true)
	}
}

func (p *progress) line(now time.Time, final bool) string {
	el := now.Sub(p.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(p.done) / el
	}
	total := p.total
	if final || p.done > total {
		total = max(total, p.done)
	}
	s := fmt.Sprintf("%s %s", p.label, fmtCount(p.done))
	if total > 0 {
		s += fmt.Sprintf("/%s records %3.0f%%", fmtCount(total), 100*float64(p.done)/float64(total))
	} else {
		s += " records"
	}
	s += fmt.Sprintf("  %s rec/s", fmtCount(int64(rate)))
	switch {
	case final:
		s += fmt.Sprintf("  done in %s", now.Sub(p.start).Round(10*time.Millisecond))
	case total > p.done && rate > 0:
		eta := time.Duration(float64(total-p.done) / rate * float64(time.Second))
		s += "  ETA " + eta.Round(time.Second).String()
	default:
		s += "  ETA -"
	}
	return s
}

func (p *progress) draw(now time.Time, final bool) {
	end := ""
	if final {
		end = "\n"
	}
	fmt.Fprintf(p.w, "\r\x1b[K%s%s", p.line(now, final), end)
}

// estimate is the number of live records with from <= seq <= to (to 0: no
// bound), from seqs (they have gaps only after a failed commit).
func estimate(in spool.Info, from, to uint64) int64 {
	if in.Records == 0 {
		return 0
	}
	lo, hi := max(from, in.FirstSeq), in.NewestSeq
	if to != 0 {
		hi = min(hi, to)
	}
	if hi < lo {
		return 0
	}
	return min(int64(hi-lo+1), in.Records)
}

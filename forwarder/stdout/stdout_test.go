package stdout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/internal/sinktest"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/proto/record"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func drainTo(t *testing.T, sp *spool.Spool, out io.Writer, batchRecords int) {
	t.Helper()
	sink, err := New(Options{Out: out, Logger: quiet})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	sinktest.Drain(t, sp, sink, forwarder.Options{
		Name: "logger", BatchRecords: batchRecords,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Logger: quiet,
	}, 5*time.Second)
}

// parseLines splits out into lines, checking that it ends with a newline and
// that every line is exactly one JSON object with the five keys.
func parseLines(t *testing.T, out []byte) []map[string]any {
	t.Helper()
	if len(out) > 0 && out[len(out)-1] != '\n' {
		t.Fatalf("output does not end with a newline: %q", out)
	}
	var lines []map[string]any
	for i, l := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		if l == "" && len(out) == 0 {
			break
		}
		if !json.Valid([]byte(l)) {
			t.Fatalf("line %d is not valid JSON: %q", i, l)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if len(m) != 5 {
			t.Fatalf("line %d has keys %v, want topic, vin, txid, received_at_ms, record", i, keys(m))
		}
		lines = append(lines, m)
	}
	return lines
}

func keys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// Every acked reference vector, spooled the way ingest spools it and
// forwarded through the logger sink, comes out as one line whose record is
// the reference's dispatched JSON.
func TestVectorsThroughStdoutSink(t *testing.T) {
	acked := sinktest.Acked(t, sinktest.Vectors(t))
	sp := sinktest.OpenSpool(t, "logger", quiet)
	recs := make([]spool.Record, len(acked))
	for i, v := range acked {
		env := sinktest.Envelope(t, v)
		if env.Type != envelope.TypeStream || !env.HasMessage {
			t.Fatalf("%s: envelope type %d (message %v), want a stream", v.Name, env.Type, env.HasMessage)
		}
		if string(env.Topic) != v.Topic || string(env.TxID) != v.TxID {
			t.Fatalf("%s: envelope topic %q txid %q, want %q %q", v.Name, env.Topic, env.TxID, v.Topic, v.TxID)
		}
		if len(v.DispatchedJSON) == 0 {
			t.Fatalf("%s: acked vector without dispatched_json", v.Name)
		}
		recs[i] = sinktest.Record(v, env, 1_700_000_000_000+int64(i)*1001, "")
	}
	sinktest.Append(t, sp, recs)

	// One batch for all, and one record per batch.
	for _, batch := range []int{0, 1} {
		var out bytes.Buffer
		sp := sp
		if batch == 1 {
			sp = sinktest.OpenSpool(t, "logger", quiet)
			sinktest.Append(t, sp, recs)
		}
		drainTo(t, sp, &out, batch)
		lines := parseLines(t, out.Bytes())
		if len(lines) != len(acked) {
			t.Fatalf("batch %d: %d lines for %d acked vectors:\n%s", batch, len(lines), len(acked), out.String())
		}
		// In order within each record type (the forwarder's lanes).
		byTopic := sinktest.ByType(lines, func(l map[string]any) string { return l["topic"].(string) })
		next := map[string]int{}
		for i, v := range acked {
			if next[v.Topic] >= len(byTopic[v.Topic]) {
				t.Fatalf("%s: no %s line left", v.Name, v.Topic)
			}
			l := byTopic[v.Topic][next[v.Topic]]
			next[v.Topic]++
			if l["topic"] != v.Topic || l["vin"] != v.CertVIN || l["txid"] != v.TxID {
				t.Errorf("%s: line topic %v vin %v txid %v, want %q %q %q", v.Name, l["topic"], l["vin"], l["txid"], v.Topic, v.CertVIN, v.TxID)
			}
			if got, want := l["received_at_ms"], float64(recs[i].ReceivedAtMs); got != want {
				t.Errorf("%s: received_at_ms %v, want %v", v.Name, got, want)
			}
			var want any
			if err := json.Unmarshal(v.DispatchedJSON, &want); err != nil {
				t.Fatalf("%s: dispatched_json: %v", v.Name, err)
			}
			if !reflect.DeepEqual(l["record"], want) {
				got, _ := json.Marshal(l["record"])
				t.Errorf("%s: record\n got %s\nwant %s", v.Name, got, v.DispatchedJSON)
			}
		}
	}
}

// A record that cannot be decoded is skipped (and counted); the others
// around it still go out, and the cursor passes it.
func TestUndecodableRecordSkipped(t *testing.T) {
	sp := sinktest.OpenSpool(t, "logger", quiet)
	good, err := record.NewConnectivity("5YJ3E1EA1KF000001", "conn-1", 1, time.UnixMilli(1_700_000_000_123), "wifi")
	if err != nil {
		t.Fatal(err)
	}
	mk := func(payload []byte, tx string) spool.Record {
		return spool.Record{VIN: "5YJ3E1EA1KF000001", Topic: []byte(record.TopicConnectivity), TxID: []byte(tx), Payload: payload, ReceivedAtMs: 1}
	}
	sinktest.Append(t, sp, []spool.Record{mk(good, "a"), mk([]byte{0xff, 0xff, 0xff}, "bad"), mk(good, "c")})
	before := undecodable.Get()
	var out bytes.Buffer
	drainTo(t, sp, &out, 0)
	lines := parseLines(t, out.Bytes())
	if len(lines) != 2 || lines[0]["txid"] != "a" || lines[1]["txid"] != "c" {
		t.Fatalf("lines %v, want txids a and c", lines)
	}
	if d := undecodable.Get() - before; d != 1 {
		t.Fatalf("undecodable counter grew by %d, want 1", d)
	}
}

func TestNewRequiresOut(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("New without Out: want error")
	}
}

// flakyWriter accepts limit bytes, then fails one write after writing part
// of it; later writes succeed.
type flakyWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	limit  int
	failed bool
	fails  int
}

func (w *flakyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.failed && w.buf.Len()+len(p) > w.limit {
		w.failed = true
		w.fails++
		n := w.limit - w.buf.Len()
		w.buf.Write(p[:n])
		return n, errors.New("write: broken pipe")
	}
	return w.buf.Write(p)
}

// A failed write does not wedge the sink: the forwarder's retry succeeds,
// the line cut short is completed, and the output stays one JSON object per
// line with every record present; only the record whose line was cut is
// written twice.
func TestSinkRecoversFromWriteError(t *testing.T) {
	sp := sinktest.OpenSpool(t, "logger", quiet)
	good, err := record.NewConnectivity("5YJ3E1EA1KF000001", "conn-1", 1, time.UnixMilli(1_700_000_000_123), "wifi")
	if err != nil {
		t.Fatal(err)
	}
	var recs []spool.Record
	for _, tx := range []string{"a", "b", "c"} {
		recs = append(recs, spool.Record{VIN: "5YJ3E1EA1KF000001", Topic: []byte(record.TopicConnectivity), TxID: []byte(tx), Payload: good, ReceivedAtMs: 1})
	}
	sinktest.Append(t, sp, recs)

	// Measure one line, then cut the output in the middle of the second.
	var probe bytes.Buffer
	ps, _ := New(Options{Out: &probe, Logger: quiet})
	if err := ps.Send(context.Background(), recs[:1]); err != nil {
		t.Fatal(err)
	}
	w := &flakyWriter{limit: probe.Len() + probe.Len()/2}
	drainTo(t, sp, w, 0)
	if w.fails != 1 {
		t.Fatalf("writer failed %d times, want 1", w.fails)
	}
	var txids []string
	for _, l := range parseLines(t, w.buf.Bytes()) {
		txids = append(txids, l["txid"].(string))
	}
	if want := []string{"a", "b", "b", "c"}; !reflect.DeepEqual(txids, want) {
		t.Fatalf("txids %v, want %v", txids, want)
	}
}

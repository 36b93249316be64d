package kinesis

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"google.golang.org/protobuf/proto"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/internal/sinktest"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/kinesis/kinesistest"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/proto/record"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var allTopics = []string{record.TopicV, record.TopicAlerts, record.TopicErrors, record.TopicConnectivity}

const namespace = "tesla_telemetry"

// drainOptions are the forwarder's options where a test drains a spool.
var drainOptions = forwarder.Options{Name: "kinesis", MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, Logger: quiet}

func decode(t *testing.T, topic string, b []byte) proto.Message {
	t.Helper()
	m := sinktest.NewMessage(t, topic)
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatalf("decode %s data: %v", topic, err)
	}
	return m
}

// newSink builds a sink for endpoint from the test environment.
// startV starts kinesalite with one stream, <namespace>_V, of shards shards
// and returns the server and the stream's name.
func startV(t *testing.T, shards int32) (*kinesistest.Server, string) {
	t.Helper()
	srv := kinesistest.Start(t)
	stream := namespace + "_V"
	srv.CreateStream(t, stream, shards)
	return srv, stream
}

func newSink(t *testing.T, endpoint string, o Options) *Sink {
	t.Helper()
	kinesistest.SetEnv(t)
	o.OverrideHost = endpoint
	if o.Namespace == "" {
		o.Namespace = namespace
	}
	if o.Encoder.Namespace == "" {
		o.Encoder.Namespace = namespace
	}
	if o.Logger == nil {
		o.Logger = quiet
	}
	if o.MinBackoff == 0 {
		o.MinBackoff, o.MaxBackoff = time.Millisecond, 10*time.Millisecond
	}
	s, err := New(context.Background(), o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// Every acked reference vector, spooled the way ingest spools it and
// drained by a forwarder through the sink into a real Kinesis API, can be
// read back from <namespace>_<topic> with the certificate's VIN as the
// partition key and the reference's dispatched protobuf as the data.
func TestVectorsThroughKinesis(t *testing.T) {
	srv := kinesistest.Start(t)
	for _, topic := range allTopics {
		srv.CreateStream(t, namespace+"_"+topic, 2)
	}
	acked := sinktest.Acked(t, sinktest.Vectors(t))
	recs := make([]spool.Record, len(acked))
	for i, v := range acked {
		env := sinktest.Envelope(t, v)
		if env.Type != envelope.TypeStream || !env.HasMessage || string(env.Topic) != v.Topic {
			t.Fatalf("%s: envelope type %d topic %q, want a %s stream", v.Name, env.Type, env.Topic, v.Topic)
		}
		recs[i] = sinktest.Record(v, env, 1_700_000_000_000+int64(i), "1.0")
	}
	sp := sinktest.OpenSpool(t, "kinesis", quiet)
	sinktest.Append(t, sp, recs)
	sinktest.Drain(t, sp, newSink(t, srv.Endpoint, Options{MaxRetries: 3}), drainOptions, 30*time.Second)

	got := map[string][]types.Record{}
	for _, topic := range allTopics {
		got[topic] = srv.ReadAll(t, namespace+"_"+topic)
	}
	want := map[string]int{}
	for _, v := range acked {
		want[v.Topic]++
	}
	for _, topic := range allTopics {
		if len(got[topic]) != want[topic] {
			t.Errorf("stream %s_%s holds %d records, want %d", namespace, topic, len(got[topic]), want[topic])
		}
	}
	used := map[*types.Record]bool{}
	for _, v := range acked {
		b, err := base64.StdEncoding.DecodeString(v.DispatchedProtoB64)
		if err != nil {
			t.Fatalf("%s: dispatched_proto_b64: %v", v.Name, err)
		}
		wantMsg := decode(t, v.Topic, b)
		found := false
		for i := range got[v.Topic] {
			r := &got[v.Topic][i]
			if used[r] || !proto.Equal(decode(t, v.Topic, r.Data), wantMsg) {
				continue
			}
			used[r], found = true, true
			if pk := aws.ToString(r.PartitionKey); pk != v.CertVIN {
				t.Errorf("%s: partition key %q, want the certificate's VIN %q", v.Name, pk, v.CertVIN)
			}
			break
		}
		if !found {
			t.Errorf("%s: no record in %s_%s equals the reference's dispatched protobuf", v.Name, namespace, v.Topic)
		}
	}
}

// The stream name comes from the streams map (internal/config puts the
// KINESIS_STREAM_<TYPE> overrides in), then <namespace>_<type>; the
// environment is not read here.
func TestStreamName(t *testing.T) {
	t.Setenv("KINESIS_STREAM_ALERTS", "env_alerts")
	s := newSink(t, "http://127.0.0.1:1", Options{
		Namespace: "ns",
		Streams:   map[string]string{"V": "map_V", "alerts": "map_alerts", "errors": ""},
	})
	for typ, want := range map[string]string{
		"V": "map_V", "alerts": "map_alerts", "errors": "ns_errors", "other": "ns_other",
	} {
		if got := s.StreamName(typ); got != want {
			t.Errorf("StreamName(%q) = %q, want %q", typ, got, want)
		}
	}
	// The namespace defaults to the encoder's.
	s, err := New(context.Background(), Options{Encoder: forwarder.Encoder{Namespace: "enc"}, OverrideHost: "127.0.0.1:1", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.StreamName("alerts"); got != "enc_alerts" {
		t.Errorf("StreamName with the encoder's namespace = %q, want enc_alerts", got)
	}
	if _, err := New(context.Background(), Options{Logger: quiet}); err == nil {
		t.Error("New without a namespace succeeded")
	}
}

func testRecords(n int, topic string, payload func(i int) []byte) []spool.Record {
	return testRecordsOf(n, 7, topic, payload)
}

// testRecordsOf is testRecords with vins VINs taking turns.
func testRecordsOf(n, vins int, topic string, payload func(i int) []byte) []spool.Record {
	recs := make([]spool.Record, n)
	for i := range recs {
		vin := fmt.Sprintf("5YJ3E1EA1KF%06d", i%vins)
		recs[i] = spool.Record{
			Seq: uint64(i + 1), VIN: vin, Topic: []byte(topic), TxID: []byte(fmt.Sprintf("tx-%d", i)),
			ReceivedAtMs: 1_700_000_000_000, CreatedAtSec: 1_700_000_000, Payload: payload(i),
		}
	}
	return recs
}

// smallV makes distinct small V payloads.
func smallV(i int) []byte {
	return vehicle.PayloadWithString("SPOOFED0000000000", fmt.Sprintf("record-%d", i))
}

// Records reach the stream their type's name resolves to, end to end.
func TestStreamRouting(t *testing.T) {
	srv := kinesistest.Start(t)
	for _, name := range []string{"map_errors", "map_alerts", namespace + "_V"} {
		srv.CreateStream(t, name, 1)
	}
	s := newSink(t, srv.Endpoint, Options{Streams: map[string]string{"alerts": "map_alerts", "errors": "map_errors"}, MaxRetries: 0})
	now := time.Unix(1_700_000_000, 0)
	var batch []spool.Record
	batch = append(batch, testRecords(3, "V", smallV)...)
	batch = append(batch, testRecords(2, "alerts", func(int) []byte { return vehicle.PayloadAlerts("X", now) })...)
	batch = append(batch, testRecords(4, "errors", func(int) []byte { return vehicle.PayloadErrors("X", now) })...)
	if err := s.Send(context.Background(), batch); err != nil {
		t.Fatalf("Send: %v", err)
	}
	for stream, want := range map[string]int{"map_errors": 4, "map_alerts": 2, namespace + "_V": 3} {
		if got := len(srv.ReadAll(t, stream)); got != want {
			t.Errorf("stream %s holds %d records, want %d", stream, got, want)
		}
	}
}

// split keeps each call within 500 records and 5 MiB, in order.
func TestSplit(t *testing.T) {
	mk := func(sizes ...int) []entry {
		var es []entry
		for i, n := range sizes {
			es = append(es, entry{seq: uint64(i), key: "K", data: make([]byte, n-1)})
		}
		return es
	}
	lens := func(chunks [][]entry) []int {
		var ls []int
		for _, c := range chunks {
			ls = append(ls, len(c))
		}
		return ls
	}
	many := make([]int, 1201)
	for i := range many {
		many[i] = 10
	}
	mib := 1 << 20
	for _, tc := range []struct {
		name  string
		sizes []int
		want  []int
	}{
		{"empty", nil, nil},
		{"one", []int{10}, []int{1}},
		{"records", many, []int{500, 500, 201}},
		{"bytes", []int{2 * mib, 2 * mib, mib, 1, 3 * mib, 2 * mib}, []int{3, 2, 1}},
		{"exactly 5 MiB", []int{5 * mib, 1, 5*mib - 1}, []int{1, 2}},
		{"oversized alone", []int{1, 6 * mib, 1}, []int{1, 1, 1}},
	} {
		chunks := split(mk(tc.sizes...))
		if got := lens(chunks); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: chunk lengths %v, want %v", tc.name, got, tc.want)
		}
		next := uint64(0)
		for _, c := range chunks {
			size := 0
			for _, e := range c {
				if e.seq != next {
					t.Fatalf("%s: seq %d out of order, want %d", tc.name, e.seq, next)
				}
				next++
				size += e.size()
			}
			if len(c) > 1 && (size > MaxCallBytes || len(c) > MaxCallRecords) {
				t.Errorf("%s: chunk of %d records, %d bytes", tc.name, len(c), size)
			}
		}
	}
}

// faultProxy stands in front of kinesalite and marks chosen records of
// PutRecords calls failed the way Kinesis does (ErrorCode, ErrorMessage,
// FailedRecordCount). Failed records are taken out of the request before
// it is forwarded, so they are not stored: each stored record was reported
// stored, and every call is logged.
type faultProxy struct {
	t      *testing.T
	target string
	srv    *httptest.Server

	mu sync.Mutex
	// fail says whether a record's n-th appearance (1-based) fails.
	fail func(data []byte, n int) bool
	// status, when not 0, answers every PutRecords call with this HTTP
	// status and an InternalFailure error.
	status int
	seen   map[string]int
	calls  []putCall
}

// putCall is one PutRecords call as the proxy saw it.
type putCall struct {
	stream string
	keys   []string
	data   [][]byte
	failed []bool
}

type putRecordsRequest struct {
	StreamName string            `json:"StreamName"`
	Records    []putRequestEntry `json:"Records"`
}

type putRequestEntry struct {
	Data         []byte `json:"Data"`
	PartitionKey string `json:"PartitionKey"`
}

type putRecordsResponse struct {
	FailedRecordCount int              `json:"FailedRecordCount"`
	Records           []putResultEntry `json:"Records"`
}

type putResultEntry struct {
	SequenceNumber string `json:"SequenceNumber,omitempty"`
	ShardId        string `json:"ShardId,omitempty"`
	ErrorCode      string `json:"ErrorCode,omitempty"`
	ErrorMessage   string `json:"ErrorMessage,omitempty"`
}

func newFaultProxy(t *testing.T, target string) *faultProxy {
	p := &faultProxy{t: t, target: target, seen: map[string]int{}, fail: func([]byte, int) bool { return false }}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *faultProxy) setFail(f func(data []byte, n int) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail = f
}

func (p *faultProxy) setStatus(code int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status = code
}

func (p *faultProxy) takeCalls() []putCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.calls
	p.calls = nil
	return c
}

func (p *faultProxy) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.Header.Get("X-Amz-Target") != "Kinesis_20131202.PutRecords" {
		p.forward(w, r, body)
		return
	}
	var req putRecordsRequest
	if err := json.Unmarshal(body, &req); err != nil {
		p.t.Errorf("proxy: PutRecords request: %v", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	call := putCall{stream: req.StreamName}
	keep := putRecordsRequest{StreamName: req.StreamName}
	p.mu.Lock()
	status := p.status
	for _, e := range req.Records {
		p.seen[string(e.Data)]++
		failed := status == 0 && p.fail(e.Data, p.seen[string(e.Data)])
		call.keys = append(call.keys, e.PartitionKey)
		call.data = append(call.data, e.Data)
		call.failed = append(call.failed, failed)
		if !failed {
			keep.Records = append(keep.Records, e)
		}
	}
	p.calls = append(p.calls, call)
	p.mu.Unlock()
	if status != 0 {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(status)
		fmt.Fprint(w, `{"__type":"InternalFailure","message":"injected by the test proxy"}`)
		return
	}
	var stored putRecordsResponse
	if len(keep.Records) > 0 {
		fwdBody, _ := json.Marshal(keep)
		rec := httptest.NewRecorder()
		p.forward(rec, r, fwdBody)
		if rec.Code != http.StatusOK {
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			_, _ = w.Write(rec.Body.Bytes())
			return
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &stored); err != nil || len(stored.Records) != len(keep.Records) {
			p.t.Errorf("proxy: PutRecords response %s: %v", rec.Body.Bytes(), err)
			http.Error(w, "bad upstream response", http.StatusBadGateway)
			return
		}
	}
	var resp putRecordsResponse
	j := 0
	for _, failed := range call.failed {
		if failed {
			resp.FailedRecordCount++
			resp.Records = append(resp.Records, putResultEntry{
				ErrorCode:    "ProvisionedThroughputExceededException",
				ErrorMessage: "Rate exceeded for shard shardId-000000000000 in stream " + req.StreamName + " (injected by the test proxy).",
			})
			continue
		}
		resp.Records = append(resp.Records, stored.Records[j])
		j++
	}
	out, _ := json.Marshal(resp)
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_, _ = w.Write(out)
}

// forward sends a request with body to kinesalite and copies the answer.
func (p *faultProxy) forward(w http.ResponseWriter, r *http.Request, body []byte) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	for k, v := range r.Header {
		req.Header[k] = v
	}
	req.Header.Del("Content-Length")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		if k != "Content-Length" {
			w.Header()[k] = v
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// failures picks records by a hash of their data: about a fifth fail once,
// another fifth twice, the rest never.
func failures(data []byte, n int) bool {
	h := fnv.New32a()
	h.Write(data)
	switch h.Sum32() % 5 {
	case 0:
		return n <= 2
	case 1:
		return n <= 1
	}
	return false
}

func counter(name, stream string) uint64 {
	return metrics.GetOrCreateCounter(fmt.Sprintf(`%s{stream=%q}`, name, stream)).Get()
}

// Records a PutRecords result marks failed are sent again on their own, not
// with the whole batch, until Kinesis takes them; every record is stored.
func TestPartialFailureRetriesOnlyFailedRecords(t *testing.T) {
	srv, stream := startV(t, 2)
	proxy := newFaultProxy(t, srv.Endpoint)
	proxy.setFail(failures)
	s := newSink(t, proxy.srv.URL, Options{MaxRetries: 0})

	// 700 records of 700 VINs (one wave): one call of 500 and one of 200,
	// each followed by calls for its failed records.
	recs := testRecordsOf(700, 700, "V", smallV)
	putBefore, failBefore, callsBefore := counter("fleet_kinesis_put_records_total", stream),
		counter("fleet_kinesis_record_failures_total", stream), counter("fleet_kinesis_calls_total", stream)
	if err := s.Send(context.Background(), recs); err != nil {
		t.Fatalf("Send: %v", err)
	}
	calls := proxy.takeCalls()
	// Calls come in rounds: a chunk, then its failed records, then those
	// that failed again.
	var firsts, totalFailed int
	for i, c := range calls {
		if c.stream != stream {
			t.Fatalf("call %d to stream %q", i, c.stream)
		}
		nFailed := 0
		for _, f := range c.failed {
			if f {
				nFailed++
			}
		}
		totalFailed += nFailed
		if i > 0 && hasFailures(calls[i-1]) {
			// A retry: exactly the previous call's failed records, in order.
			var want [][]byte
			for j, f := range calls[i-1].failed {
				if f {
					want = append(want, calls[i-1].data[j])
				}
			}
			if !equalData(c.data, want) {
				t.Fatalf("call %d sent %d records, want only the %d that call %d failed", i, len(c.data), len(want), i-1)
			}
			continue
		}
		firsts++
		if len(c.data) != 500 && len(c.data) != 200 {
			t.Errorf("first call of a chunk carried %d records, want 500 or 200", len(c.data))
		}
	}
	if firsts != 2 {
		t.Errorf("%d chunks, want 2", firsts)
	}
	if totalFailed == 0 || len(calls) < 4 {
		t.Fatalf("%d calls, %d failed records: the fault injection did not work", len(calls), totalFailed)
	}
	// Every record is stored exactly once (failed records were not stored
	// by the proxy), with its VIN as the partition key.
	sent := map[string]string{}
	for i := range recs {
		msg, err := s.opts.Encoder.Encode(&recs[i])
		if err != nil {
			t.Fatal(err)
		}
		sent[string(msg.Value)] = msg.Key
	}
	got := srv.ReadAll(t, stream)
	if len(got) != len(recs) {
		t.Errorf("stream holds %d records, want %d", len(got), len(recs))
	}
	for _, r := range got {
		key, ok := sent[string(r.Data)]
		if !ok {
			t.Fatalf("stream holds a record that was not sent (or twice): %x", r.Data)
		}
		if aws.ToString(r.PartitionKey) != key {
			t.Errorf("partition key %q, want %q", aws.ToString(r.PartitionKey), key)
		}
		delete(sent, string(r.Data))
	}
	if len(sent) != 0 {
		t.Errorf("%d records never stored", len(sent))
	}
	if d := counter("fleet_kinesis_put_records_total", stream) - putBefore; d != uint64(len(recs)) {
		t.Errorf("fleet_kinesis_put_records_total rose by %d, want %d", d, len(recs))
	}
	if d := counter("fleet_kinesis_record_failures_total", stream) - failBefore; d != uint64(totalFailed) {
		t.Errorf("fleet_kinesis_record_failures_total rose by %d, want %d", d, totalFailed)
	}
	if d := counter("fleet_kinesis_calls_total", stream) - callsBefore; d != uint64(len(calls)) {
		t.Errorf("fleet_kinesis_calls_total rose by %d, want %d", d, len(calls))
	}
}

func hasFailures(c putCall) bool {
	for _, f := range c.failed {
		if f {
			return true
		}
	}
	return false
}

func equalData(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// A record that keeps failing is reported, after RecordAttempts calls,
// together with the later records of its VIN (which are not sent, to keep
// the VIN's order); the other VINs' records are stored. The forwarder then
// sends only the reported records again, and once Kinesis takes the record
// the spool is drained: nothing is lost, nothing stored twice.
func TestPersistentFailureReportsRecordAndForwarderRetries(t *testing.T) {
	srv, stream := startV(t, 1)
	proxy := newFaultProxy(t, srv.Endpoint)
	recs := testRecords(10, "V", smallV) // VINs 0..6, then 0..2
	s := newSink(t, proxy.srv.URL, Options{MaxRetries: 0, RecordAttempts: 3})
	poison, err := s.opts.Encoder.Encode(&recs[0])
	if err != nil {
		t.Fatal(err)
	}
	proxy.setFail(func(data []byte, _ int) bool { return bytes.Equal(data, poison.Value) })

	err = s.Send(context.Background(), recs)
	var be *forwarder.BatchError
	if !errors.As(err, &be) || !strings.Contains(err.Error(), "ProvisionedThroughputExceededException") {
		t.Fatalf("Send = %v, want a BatchError naming the error code", err)
	}
	var failed []int
	for _, f := range be.Failed {
		failed = append(failed, f.Index)
	}
	// Record 0 failed; record 7 has its VIN and was held back.
	if !slices.Equal(failed, []int{0, 7}) || !errors.Is(be.Failed[1].Err, forwarder.ErrEarlierRecordFailed) {
		t.Fatalf("failed records %v (%v), want [0 7], 7 held back", failed, be)
	}
	calls := proxy.takeCalls()
	// The first wave (7 VINs), the failing record twice more, the second
	// wave without VIN 0.
	if got := callLens(calls); !slices.Equal(got, []int{7, 1, 1, 2}) {
		t.Fatalf("calls carried %v records, want [7 1 1 2]", got)
	}

	// Through a forwarder: the first Sends fail, then Kinesis heals.
	sp := sinktest.OpenSpool(t, "kinesis", quiet)
	sinktest.Append(t, sp, recs)
	go func() {
		time.Sleep(100 * time.Millisecond)
		proxy.setFail(func([]byte, int) bool { return false })
	}()
	sinktest.Drain(t, sp, s, drainOptions, 30*time.Second)
	got := srv.ReadAll(t, stream)
	seen := map[string]int{}
	for _, r := range got {
		seen[string(r.Data)]++
	}
	for i := range recs {
		m, _ := s.opts.Encoder.Encode(&recs[i])
		// Stored by the first Send and again by the forwarder's: the
		// records the first Send stored were not this spool's.
		if seen[string(m.Value)] == 0 {
			t.Errorf("record %d never stored", i)
		}
	}
	if seen[string(poison.Value)] != 1 {
		t.Errorf("the failing record was stored %d times, want once", seen[string(poison.Value)])
	}
}

// Partial failures never reorder a VIN's records: records fail at random
// on their first appearances, the forwarder sends again what was not
// confirmed, and in the stream each VIN's records are in spool order,
// each exactly once.
func TestPartialFailuresKeepEachVINInOrder(t *testing.T) {
	srv, stream := startV(t, 2)
	proxy := newFaultProxy(t, srv.Endpoint)
	proxy.setFail(failures)
	s := newSink(t, proxy.srv.URL, Options{MaxRetries: 0, RecordAttempts: 1})
	recs := testRecordsOf(300, 5, "V", smallV)
	sp := sinktest.OpenSpool(t, "kinesis", quiet)
	sinktest.Append(t, sp, recs)
	o := drainOptions
	o.BatchRecords = 64
	sinktest.Drain(t, sp, s, o, 60*time.Second)
	if totalFailed := countFailed(proxy.takeCalls()); totalFailed == 0 {
		t.Fatal("the fault injection did not work")
	}
	order := map[string]int{}
	for i := range recs {
		m, _ := s.opts.Encoder.Encode(&recs[i])
		order[string(m.Value)] = i
	}
	last := map[string]int{}
	stored := 0
	for _, r := range srv.ReadAll(t, stream) {
		i, ok := order[string(r.Data)]
		if !ok {
			t.Fatalf("stream holds a record that was not sent")
		}
		vin := aws.ToString(r.PartitionKey)
		if prev, seen := last[vin]; seen && prev >= i {
			t.Fatalf("VIN %s: record %d stored after record %d", vin, i, prev)
		}
		last[vin] = i
		stored++
	}
	if stored != len(recs) {
		t.Fatalf("stream holds %d records, want %d", stored, len(recs))
	}
}

func countFailed(calls []putCall) int {
	n := 0
	for _, c := range calls {
		for _, f := range c.failed {
			if f {
				n++
			}
		}
	}
	return n
}

// A record over Kinesis's 1 MiB limit is refused for good without being
// sent; through a forwarder it is quarantined and the records around it
// are stored.
func TestOversizeRecordQuarantined(t *testing.T) {
	srv, stream := startV(t, 1)
	s := newSink(t, srv.Endpoint, Options{MaxRetries: 0})
	recs := testRecords(5, "V", func(i int) []byte {
		if i == 2 {
			return vehicle.PayloadWithString("SPOOFED0000000000", strings.Repeat("x", MaxRecordBytes))
		}
		return smallV(i)
	})
	sinktest.RefusedAlone(t, s.Send(context.Background(), recs), 2, "message_too_large")
	if n := len(srv.ReadAll(t, stream)); n != 4 {
		t.Fatalf("stream holds %d records, want the 4 others", n)
	}

	sp := sinktest.OpenSpool(t, "kinesis", quiet)
	sinktest.Append(t, sp, recs)
	sinktest.Drain(t, sp, s, drainOptions, 30*time.Second)
	var q []spool.Quarantined
	if err := sp.Quarantine("", func(e *spool.Quarantined) bool { q = append(q, *e); return true }); err != nil {
		t.Fatal(err)
	}
	if len(q) != 1 || string(q[0].Record.TxID) != "tx-2" || q[0].Reason != "message_too_large" {
		t.Fatalf("quarantine %+v, want record tx-2 (message_too_large)", q)
	}
	if n := len(srv.ReadAll(t, stream)); n != 8 {
		t.Fatalf("stream holds %d records, want the 4 others twice (Send, then the forwarder)", n)
	}
}

func callLens(calls []putCall) []int {
	var ls []int
	for _, c := range calls {
		ls = append(ls, len(c.data))
	}
	return ls
}

// max_retries bounds the AWS client's retries of a failed call.
func TestMaxRetriesBoundsCallAttempts(t *testing.T) {
	srv, stream := startV(t, 1)
	proxy := newFaultProxy(t, srv.Endpoint)
	proxy.setStatus(http.StatusInternalServerError)
	recs := testRecords(2, "V", smallV)
	for _, retries := range []int{0, 2} {
		s := newSink(t, proxy.srv.URL, Options{MaxRetries: retries})
		err := s.Send(context.Background(), recs)
		if err == nil || !strings.Contains(err.Error(), "PutRecords") {
			t.Fatalf("max_retries %d: Send = %v, want a PutRecords error", retries, err)
		}
		if calls := proxy.takeCalls(); len(calls) != retries+1 {
			t.Errorf("max_retries %d: %d calls, want %d", retries, len(calls), retries+1)
		}
	}
	proxy.setStatus(0)
	s := newSink(t, proxy.srv.URL, Options{MaxRetries: 0})
	if err := s.Send(context.Background(), recs); err != nil {
		t.Fatalf("Send after recovery: %v", err)
	}
	if n := len(srv.ReadAll(t, stream)); n != 2 {
		t.Errorf("stream holds %d records, want 2", n)
	}
}

// Large records are spread over calls of at most 5 MiB that the real
// server accepts.
func TestLargeRecordsSplitByBytes(t *testing.T) {
	srv, stream := startV(t, 1)
	proxy := newFaultProxy(t, srv.Endpoint)
	s := newSink(t, proxy.srv.URL, Options{MaxRetries: 0})
	big := strings.Repeat("x", 900_000)
	recs := testRecords(7, "V", func(i int) []byte {
		return vehicle.PayloadWithString("SPOOFED0000000000", fmt.Sprintf("%d-%s", i, big))
	})
	if err := s.Send(context.Background(), recs); err != nil {
		t.Fatalf("Send: %v", err)
	}
	calls := proxy.takeCalls()
	if len(calls) < 2 {
		t.Errorf("%d calls for 7 records of 900 kB, want at least 2", len(calls))
	}
	for i, c := range calls {
		size := 0
		for j := range c.data {
			size += len(c.data[j]) + len(c.keys[j])
		}
		if size > MaxCallBytes {
			t.Errorf("call %d carried %d bytes, more than %d", i, size, MaxCallBytes)
		}
	}
	if n := len(srv.ReadAll(t, stream)); n != len(recs) {
		t.Errorf("stream holds %d records, want %d", n, len(recs))
	}
}

// A record whose payload cannot be decoded is skipped, not retried forever.
func TestUndecodableRecordSkipped(t *testing.T) {
	srv, stream := startV(t, 1)
	s := newSink(t, srv.Endpoint, Options{MaxRetries: 0})
	recs := testRecords(3, "V", smallV)
	recs[1].Payload = []byte{0xff, 0xff, 0xff}
	before := metrics.GetOrCreateCounter(`fleet_forwarder_undecodable_total{forwarder="kinesis"}`).Get()
	if err := s.Send(context.Background(), recs); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if n := len(srv.ReadAll(t, stream)); n != 2 {
		t.Errorf("stream holds %d records, want 2", n)
	}
	if d := metrics.GetOrCreateCounter(`fleet_forwarder_undecodable_total{forwarder="kinesis"}`).Get() - before; d != 1 {
		t.Errorf("undecodable counter rose by %d, want 1", d)
	}
}

// BenchmarkGroup is Send's encoding of 256 generated 20-datum V records
// into per-stream entries (the part before the PutRecords calls).
func BenchmarkGroup(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	at := time.Unix(1795000000, 0)
	batch := make([]spool.Record, 256)
	for i := range batch {
		vin := fmt.Sprintf("5YJ3E1EA1KF%06d", i%50)
		batch[i] = spool.Record{Seq: uint64(i + 1), ReceivedAtMs: at.UnixMilli(), CreatedAtSec: uint32(at.Unix()),
			VIN: vin, ClientVersion: "fw-1", Topic: []byte("V"), TxID: []byte(fmt.Sprintf("tx-%04d", i)),
			Payload: vehicle.PayloadV(rng, vin, 20, at)}
	}
	s := &Sink{opts: Options{Namespace: "tesla_telemetry", Encoder: forwarder.Encoder{Namespace: "tesla_telemetry"}},
		log: slog.New(slog.DiscardHandler), undecodable: metrics.GetOrCreateCounter(`bench_undecodable`)}
	b.ReportAllocs()
	for b.Loop() {
		if e := s.encode(batch); len(e) != len(batch) {
			b.Fatal(len(e))
		}
	}
}

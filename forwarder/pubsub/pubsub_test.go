package pubsub

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ps "cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/forwarder/internal/sinktest"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/record"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

const (
	project   = "test-project-id"
	namespace = "tesla_telemetry"
)

var (
	quiet     = slog.New(slog.NewTextHandler(io.Discard, nil))
	allTopics = []string{record.TopicV, record.TopicAlerts, record.TopicErrors, record.TopicConnectivity}
	// drainOptions are the forwarder's options where a test drains a spool.
	drainOptions = forwarder.Options{Name: "pubsub", MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Logger: quiet}
)

// fake starts an in-process pstest server on 127.0.0.1 and points the
// client library at it through PUBSUB_EMULATOR_HOST (so tests using it
// cannot run in parallel).
func fake(t *testing.T, opts ...pstest.ServerReactorOption) *pstest.Server {
	t.Helper()
	srv := pstest.NewServerWithAddress("127.0.0.1:0", opts...)
	t.Cleanup(func() { _ = srv.Close() })
	t.Setenv("PUBSUB_EMULATOR_HOST", srv.Addr)
	return srv
}

// adminClient is a client of the test's own, for topics and subscriptions.
func adminClient(t *testing.T) *ps.Client {
	t.Helper()
	c, err := ps.NewClient(context.Background(), project)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func topicPath(topic string) string { return "projects/" + project + "/topics/" + topic }

// deleteTopic deletes the topic of recordType, <namespace>_<recordType>,
// through admin.
func deleteTopic(t *testing.T, admin *ps.Client, recordType string) {
	t.Helper()
	req := &pubsubpb.DeleteTopicRequest{Topic: topicPath(namespace + "_" + recordType)}
	if err := admin.TopicAdminClient.DeleteTopic(context.Background(), req); err != nil {
		t.Fatalf("DeleteTopic %s: %v", req.Topic, err)
	}
}

func topicExists(t *testing.T, c *ps.Client, topic string) bool {
	t.Helper()
	_, err := c.TopicAdminClient.GetTopic(context.Background(), &pubsubpb.GetTopicRequest{Topic: topicPath(topic)})
	switch status.Code(err) {
	case codes.OK:
		return true
	case codes.NotFound:
		return false
	}
	t.Fatalf("GetTopic %s: %v", topic, err)
	return false
}

// subscribe creates a subscription on topic and returns its ID.
func subscribe(t *testing.T, c *ps.Client, topic string) string {
	t.Helper()
	id := "sub-" + topic
	_, err := c.SubscriptionAdminClient.CreateSubscription(context.Background(), &pubsubpb.Subscription{
		Name: "projects/" + project + "/subscriptions/" + id, Topic: topicPath(topic),
	})
	if err != nil {
		t.Fatalf("CreateSubscription on %s: %v", topic, err)
	}
	return id
}

// receive reads from a subscription with a real subscriber until it has
// seen n distinct txid attributes, and returns the messages by txid.
func receive(t *testing.T, c *ps.Client, subID string, n int, timeout time.Duration) map[string]*ps.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var mu sync.Mutex
	got := map[string]*ps.Message{}
	err := c.Subscriber(subID).Receive(ctx, func(_ context.Context, m *ps.Message) {
		m.Ack()
		mu.Lock()
		defer mu.Unlock()
		got[m.Attributes["txid"]] = m
		if len(got) >= n {
			cancel()
		}
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Receive %s: %v", subID, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) < n {
		t.Fatalf("subscription %s: %d of %d messages within %v", subID, len(got), n, timeout)
	}
	return got
}

// startSink is newSink with a start timeout of 10 s; it fails the test
// when New fails.
func startSink(t *testing.T) *Sink {
	t.Helper()
	s, err := newSink(t, 10*time.Second)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func newSink(t *testing.T, startTimeout time.Duration) (*Sink, error) {
	t.Helper()
	s, err := New(context.Background(), Options{
		ProjectID: project, RecordTypes: allTopics, Encoder: forwarder.Encoder{Namespace: namespace},
		Logger: quiet, StartTimeout: startTimeout,
	})
	if err == nil {
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	return s, err
}

// Every acked reference vector, spooled and forwarded to Pub/Sub, arrives
// on "<namespace>_<type>" with the reference's attributes and a payload
// equal to the reference's dispatched protobuf.
func TestReferenceVectorsArriveByteCompatible(t *testing.T) {
	fake(t)
	admin := adminClient(t)
	sink := startSink(t)
	subs := map[string]string{}
	for _, topic := range allTopics {
		subs[topic] = subscribe(t, admin, namespace+"_"+topic)
	}
	const clientVersion = "2024.44.25"
	receivedAt := time.Now().UnixMilli()
	acked := sinktest.Acked(t, sinktest.Vectors(t))
	recs := sinktest.Records(t, acked, receivedAt, clientVersion)
	sp := sinktest.OpenSpool(t, "pubsub", quiet)
	sinktest.Append(t, sp, recs)
	before := published.Get()
	sinktest.Drain(t, sp, sink, drainOptions, 30*time.Second)
	if d := published.Get() - before; d != uint64(len(recs)) {
		t.Errorf("fleet_pubsub_published_total grew by %d, want %d", d, len(recs))
	}

	perTopic := map[string]int{}
	for _, v := range acked {
		perTopic[v.Topic]++
	}
	got := map[string]*ps.Message{}
	for topic, n := range perTopic {
		for tx, m := range receive(t, admin, subs[topic], n, 10*time.Second) {
			got[topic+"/"+tx] = m
		}
	}
	for _, v := range acked {
		m := got[v.Topic+"/"+v.TxID]
		if m == nil {
			t.Errorf("%s: txid %s never arrived on %s_%s", v.Name, v.TxID, namespace, v.Topic)
			continue
		}
		for k, want := range v.HeadersStatic {
			if m.Attributes[k] != want {
				t.Errorf("%s: attribute %s = %q, want %q", v.Name, k, m.Attributes[k], want)
			}
		}
		if m.Attributes["receivedat"] != strconv.FormatInt(receivedAt, 10) {
			t.Errorf("%s: receivedat = %q, want %d", v.Name, m.Attributes["receivedat"], receivedAt)
		}
		if ts, err := strconv.ParseInt(m.Attributes["timestamp"], 10, 64); err != nil || ts <= 0 {
			t.Errorf("%s: timestamp = %q, want epoch ms", v.Name, m.Attributes["timestamp"])
		}
		if m.Attributes["device_client_version"] != clientVersion {
			t.Errorf("%s: device_client_version = %q, want %q", v.Name, m.Attributes["device_client_version"], clientVersion)
		}
		if len(m.Attributes) != 7 {
			t.Errorf("%s: attributes %v, want exactly vin, receivedat, timestamp, txid, txtype, version, device_client_version", v.Name, m.Attributes)
		}
		wantBytes, err := base64.StdEncoding.DecodeString(v.DispatchedProtoB64)
		if err != nil {
			t.Fatalf("%s: dispatched_proto_b64: %v", v.Name, err)
		}
		want, gotMsg := sinktest.NewMessage(t, v.Topic), sinktest.NewMessage(t, v.Topic)
		if err := proto.Unmarshal(wantBytes, want); err != nil {
			t.Fatalf("%s: reference payload: %v", v.Name, err)
		}
		if err := proto.Unmarshal(m.Data, gotMsg); err != nil {
			t.Errorf("%s: published data is not a %T: %v", v.Name, gotMsg, err)
			continue
		}
		if !proto.Equal(want, gotMsg) {
			t.Errorf("%s: published payload differs from the reference's:\n got  %v\n want %v", v.Name, gotMsg, want)
		}
	}
}

// New creates the topics that are missing and accepts those that exist.
func TestNewCreatesMissingTopics(t *testing.T) {
	fake(t)
	admin := adminClient(t)
	existing := namespace + "_" + record.TopicV
	if _, err := admin.TopicAdminClient.CreateTopic(context.Background(), &pubsubpb.Topic{Name: topicPath(existing)}); err != nil {
		t.Fatalf("CreateTopic: %v", err)
	}
	for _, topic := range allTopics[1:] {
		if topicExists(t, admin, namespace+"_"+topic) {
			t.Fatalf("topic %s_%s exists before New", namespace, topic)
		}
	}
	startSink(t)
	for _, topic := range allTopics {
		if !topicExists(t, admin, namespace+"_"+topic) {
			t.Errorf("topic %s_%s missing after New", namespace, topic)
		}
	}
}

// With Pub/Sub unreachable, New fails within its start timeout and names
// the topic.
func TestNewFailsWhenUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	t.Setenv("PUBSUB_EMULATOR_HOST", addr)
	start := time.Now()
	_, err = newSink(t, 2*time.Second)
	took := time.Since(start)
	if err == nil {
		t.Fatal("New succeeded with Pub/Sub unreachable")
	}
	t.Logf("New after %v: %v", took, err)
	if want := namespace + "_" + record.TopicV; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name topic %s", err, want)
	}
	if took > 10*time.Second {
		t.Errorf("New took %v with a 2s start timeout", took)
	}
}

// Without the right to create a missing topic, New fails naming it.
func TestNewFailsWhenTopicCannotBeCreated(t *testing.T) {
	fake(t, pstest.WithErrorInjection("CreateTopic", codes.PermissionDenied, "caller lacks pubsub.topics.create"))
	_, err := newSink(t, 5*time.Second)
	if err == nil {
		t.Fatal("New succeeded although the topic cannot be created")
	}
	t.Logf("New: %v", err)
	if want := namespace + "_" + record.TopicV; !strings.Contains(err.Error(), want) || status.Code(err) != codes.PermissionDenied {
		t.Errorf("error %q does not name topic %s and the permission error", err, want)
	}
}

// failFirst fails the first n Publish calls with a non-retryable code.
type failFirst struct{ n atomic.Int32 }

func (f *failFirst) React(any) (bool, any, error) {
	if f.n.Add(-1) >= 0 {
		return true, nil, status.Error(codes.PermissionDenied, "injected publish failure")
	}
	return false, nil, nil
}

// A failed publish makes Send fail (never a silent loss); the forwarder
// sends the batch again and every record arrives.
func TestPublishFailureIsRetriedNotLost(t *testing.T) {
	ff := &failFirst{}
	ff.n.Store(2)
	fake(t, pstest.ServerReactorOption{FuncName: "Publish", Reactor: ff})
	admin := adminClient(t)
	sink := startSink(t)
	sub := subscribe(t, admin, namespace+"_"+record.TopicV)
	acked := sinktest.Acked(t, sinktest.Vectors(t))
	recs := sinktest.Records(t, acked, time.Now().UnixMilli(), "")
	var vRecs []spool.Record
	for i, r := range recs {
		if acked[i].Topic == record.TopicV {
			vRecs = append(vRecs, r)
		}
	}

	// Send alone reports the failure.
	errsBefore := publishErrors.Get()
	if err := sink.Send(context.Background(), vRecs); err == nil {
		t.Fatal("Send returned nil although Pub/Sub refused the publish")
	} else {
		t.Logf("Send: %v", err)
	}
	if publishErrors.Get() == errsBefore {
		t.Error("fleet_pubsub_publish_errors_total did not grow")
	}

	// Through the forwarder: retried until confirmed.
	sp := sinktest.OpenSpool(t, "pubsub", quiet)
	sinktest.Append(t, sp, vRecs)
	sinktest.Drain(t, sp, sink, drainOptions, 30*time.Second)
	got := receive(t, admin, sub, len(vRecs), 10*time.Second)
	for _, r := range vRecs {
		if m := got[string(r.TxID)]; m == nil || m.Attributes["vin"] != r.VIN {
			t.Errorf("txid %s: got %v", r.TxID, m)
		}
	}
}

// A topic deleted after start makes Send fail instead of dropping records.
func TestSendFailsWhenTopicVanished(t *testing.T) {
	fake(t)
	admin := adminClient(t)
	sink := startSink(t)
	deleteTopic(t, admin, "V")
	recs := sinktest.Records(t, sinktest.Acked(t, sinktest.Vectors(t)), time.Now().UnixMilli(), "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := sink.Send(ctx, recs)
	if err == nil {
		t.Fatal("Send returned nil although topic tesla_telemetry_V is gone")
	}
	if !strings.Contains(err.Error(), namespace+"_V") {
		t.Errorf("error %q does not name the topic", err)
	}
}

// failEvery fails every k-th Publish request (a request may carry several
// messages): some messages of a batch are taken, others not.
type failEvery struct {
	k     int32
	calls atomic.Int32
}

func (f *failEvery) React(any) (bool, any, error) {
	if f.calls.Add(1)%f.k == 0 {
		return true, nil, status.Error(codes.Unavailable, "injected publish failure")
	}
	return false, nil, nil
}

// vRecords are n V records of vins VINs taking turns, txids tx-0..
func vRecords(n, vins int) []spool.Record {
	now := time.Now()
	recs := make([]spool.Record, n)
	for i := range recs {
		vin := fmt.Sprintf("5YJ3E1EA1KF%06d", i%vins)
		recs[i] = spool.Record{Seq: uint64(i + 1), VIN: vin, Topic: []byte(record.TopicV), TxID: []byte(fmt.Sprintf("tx-%d", i)),
			ReceivedAtMs: now.UnixMilli(), CreatedAtSec: uint32(now.Unix()),
			Payload: vehicle.PayloadWithString(vin, fmt.Sprintf("record-%d", i))}
	}
	return recs
}

// Publishes that fail at random never put a VIN's messages out of order:
// the forwarder sends again only what Pub/Sub did not confirm, and the
// topic holds each VIN's records in spool order, each once.
func TestPartialPublishFailuresKeepEachVINInOrder(t *testing.T) {
	srv := fake(t, pstest.ServerReactorOption{FuncName: "Publish", Reactor: &failEvery{k: 3}})
	sink := startSink(t)
	// Batches of 300: without waves the client would publish a batch in
	// requests of 100 messages, of which some fail and later ones do not.
	recs := vRecords(600, 4)
	sp := sinktest.OpenSpool(t, "pubsub", quiet)
	sinktest.Append(t, sp, recs)
	o := drainOptions
	o.BatchRecords = 300
	sinktest.Drain(t, sp, sink, o, 60*time.Second)
	msgs := srv.Messages()
	// pstest numbers messages m1, m2, ... in the order it stored them.
	id := func(m *pstest.Message) int { n, _ := strconv.Atoi(strings.TrimPrefix(m.ID, "m")); return n }
	slices.SortFunc(msgs, func(a, b *pstest.Message) int { return cmp.Compare(id(a), id(b)) })
	last := map[string]int{}
	seen := map[string]bool{}
	for _, m := range msgs {
		tx := m.Attributes["txid"]
		var i int
		if _, err := fmt.Sscanf(tx, "tx-%d", &i); err != nil {
			t.Fatalf("message with txid %q", tx)
		}
		if seen[tx] {
			t.Fatalf("%s published twice", tx)
		}
		seen[tx] = true
		vin := m.Attributes["vin"]
		if prev, ok := last[vin]; ok && prev >= i {
			t.Fatalf("VIN %s: record %d published after record %d", vin, i, prev)
		}
		last[vin] = i
	}
	if len(seen) != len(recs) {
		t.Fatalf("%d of %d records published", len(seen), len(recs))
	}
}

// A topic deleted after start holds back only its own record type: V keeps
// flowing while the alerts lane waits, and once the topic exists again the
// alerts arrive.
func TestDeletedTopicHoldsOnlyItsLane(t *testing.T) {
	srv := fake(t)
	admin := adminClient(t)
	sink := startSink(t)
	deleteTopic(t, admin, "alerts")
	recs := vRecords(10, 2)
	now := time.Now()
	for i := range 5 {
		recs = append(recs, spool.Record{VIN: "5YJ3E1EA1KF000001", Topic: []byte(record.TopicAlerts), TxID: []byte(fmt.Sprintf("alert-%d", i)),
			ReceivedAtMs: now.UnixMilli(), Payload: vehicle.PayloadAlerts("5YJ3E1EA1KF000001", now)})
	}
	sp := sinktest.OpenSpool(t, "pubsub", quiet)
	sinktest.Append(t, sp, recs)
	f, err := forwarder.New(sp, sink, forwarder.Options{Name: "pubsub", Topics: []string{"V", "alerts"},
		MinBackoff: time.Millisecond, MaxBackoff: 50 * time.Millisecond, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	count := func(prefix string) int {
		n := 0
		for _, m := range srv.Messages() {
			if strings.HasPrefix(m.Attributes["txid"], prefix) {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(20 * time.Second)
	for count("tx-") < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 10 V records published while the alerts topic is gone", count("tx-"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, l := range f.Lanes() {
		if l.RecordType == "alerts" && (l.Lag == 0 || l.LastError == "") {
			t.Fatalf("alerts lane while its topic is gone: %+v", l)
		}
	}
	if _, err := admin.TopicAdminClient.CreateTopic(context.Background(), &pubsubpb.Topic{Name: topicPath(namespace + "_alerts")}); err != nil {
		t.Fatalf("CreateTopic: %v", err)
	}
	for count("alert-") < 5 {
		if time.Now().After(deadline.Add(20 * time.Second)) {
			t.Fatalf("%d of 5 alerts published after the topic came back", count("alert-"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := count("tx-"); n != 10 {
		t.Fatalf("%d V messages, want 10 (none twice)", n)
	}
}

// A message over the client's size limit is refused for good (it cannot
// come from a vehicle through the spool, whose records are smaller: this
// is Send's own verdict), and the records around it are published.
func TestOversizeMessageRefusedForGood(t *testing.T) {
	srv := fake(t)
	sink := startSink(t)
	recs := vRecords(5, 5)
	recs[2].Payload = vehicle.PayloadWithString(recs[2].VIN, strings.Repeat("x", 11<<20))
	sinktest.RefusedAlone(t, sink.Send(context.Background(), recs), 2, "message_too_large")
	if n := len(srv.Messages()); n != 4 {
		t.Fatalf("%d messages published, want the 4 others", n)
	}
}

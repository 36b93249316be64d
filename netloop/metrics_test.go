package netloop

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/gobwas/ws"

	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
)

// scrape reads every series of the default registry as /metrics shows it.
func scrape(t *testing.T) map[string]float64 {
	t.Helper()
	var b bytes.Buffer
	metrics.WritePrometheus(&b, false)
	out := map[string]float64{}
	sc := bufio.NewScanner(&b)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("scrape line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// moved is how much each series changed between two scrapes.
func moved(before, after map[string]float64, series string) float64 {
	return after[series] - before[series]
}

func expectMoved(t *testing.T, before, after map[string]float64, want map[string]float64) {
	t.Helper()
	for s, w := range want {
		if got := moved(before, after, s); got != w {
			t.Errorf("%s moved by %v, want %v", s, got, w)
		}
	}
}

func TestReferenceMetricsMoveWithTheirLabels(t *testing.T) {
	e := newTestEnv(t, []string{"V", "alerts"}, func(o *Options) {
		o.MaxMessageSize = 64 << 10
		o.RateLimit = RateLimit{Limit: 6, Interval: time.Hour}
		o.SignalTrackingVINs = []string{vinA}
	})
	before := scrape(t)
	c := e.dial(t, vinA)
	// A valid V record with 5 signals, and an alerts record with 1.
	v := newRecord(vinA, "V", "ok-v")
	v.Payload = vehicle.PayloadV(rng, vinA, 5, time.Now())
	c.Send(v)
	expectAck(t, c, "ok-v", "V")
	al := newRecord(vinA, "alerts", "ok-alert")
	c.Send(al)
	expectAck(t, c, "ok-alert", "alerts")
	// A bad payload: error reply.
	bad := newRecord(vinA, "V", "bad")
	bad.Payload = []byte{0xff, 0xff, 0xff}
	c.Send(bad)
	if r := mustReply(t, c); r.Ack {
		t.Fatal("bad payload acked")
	}
	// A sender mismatch: acked and kept under the certificate's VIN.
	spoof := newRecord(vinA, "V", "spoof")
	spoof.SenderID = []byte("vehicle_device." + vinB)
	spoof.Payload = vehicle.PayloadV(rng, vinA, 2, time.Now())
	c.Send(spoof)
	expectAck(t, c, "spoof", "V")
	// Too big: error reply.
	c.WriteFrame(ws.OpBinary, true, bigRecord(t, vinA, "big", 70_000))
	if r := mustReply(t, c); r.Ack {
		t.Fatal("too-big record acked")
	}
	// An unrouted type: acked, counted, not kept.
	c.Send(newRecord(vinA, "errors", "unrouted"))
	expectAck(t, c, "unrouted", "errors")
	// A client-sent ack (envelope message type 5).
	c.WriteFrame(ws.OpBinary, true, envelope.AppendAck(nil, []byte("client-ack"), []byte("V"), nil))
	expectAck(t, c, "client-ack", "")
	// The 6-record budget (too-big frames are not records) is spent: the next two are dropped.
	c.SendMany([]*envelope.StreamMessage{newRecord(vinA, "V", "rl-1"), newRecord(vinA, "alerts", "rl-2")})
	waitFor(t, func() bool {
		s := scrape(t)
		return moved(before, s, `rate_limit_exceeded_total{device_id="`+vinA+`",txtype="alerts"}`) == 1
	})
	after := scrape(t)
	expectMoved(t, before, after, map[string]float64{
		`record_total{record_type="V"}`:                                       2,
		`record_total{record_type="alerts"}`:                                  1,
		`record_total{record_type="errors"}`:                                  1,
		`record_size_bytes_total{record_type="V"}`:                            float64(len(v.Payload) + len(spoof.Payload)),
		`record_size_bytes_total{record_type="alerts"}`:                       float64(len(al.Payload)),
		`dispatch_total{record_type="V"}`:                                     2,
		`dispatch_total{record_type="alerts"}`:                                1,
		`signal_count{record_type="V"}`:                                       7,
		`signal_count{record_type="alerts"}`:                                  1,
		`vin_signal_count{record_type="V",vin="` + vinA + `"}`:                7,
		`vin_signal_count{record_type="alerts",vin="` + vinA + `"}`:           1,
		`unauthorized_sender_id_total`:                                        1,
		`record_too_big_total`:                                                1,
		`unexpected_record_err_total`:                                         2, // bad payload, too big
		`unknown_message_type_error_total{msg_type="5"}`:                      1,
		`rate_limit_exceeded_total{device_id="` + vinA + `",txtype="V"}`:      1,
		`rate_limit_exceeded_total{device_id="` + vinA + `",txtype="alerts"}`: 1,
		`num_connections`:                                                     1,
		// Ours move with them.
		`fleet_records_sender_id_mismatch_total`:                   1,
		`fleet_records_refused_total{reason="sender_id_mismatch"}`: 0,
		`fleet_records_refused_total{reason="record_too_big"}`:     1,
		`fleet_records_refused_total{reason="rate_limited"}`:       2,
		`fleet_error_replies_total`:                                2,
	})
	if _, ok := after[`vin_signal_count{record_type="V",vin="`+vinB+`"}`]; ok {
		t.Error("an untracked VIN has vin_signal_count series")
	}
	// Untracked VINs count in signal_count only.
	b := e.dial(t, vinB)
	vb := newRecord(vinB, "V", "b")
	vb.Payload = vehicle.PayloadV(rng, vinB, 3, time.Now())
	b.Send(vb)
	expectAck(t, b, "b", "V")
	later := scrape(t)
	expectMoved(t, after, later, map[string]float64{
		`signal_count{record_type="V"}`:                        3,
		`vin_signal_count{record_type="V",vin="` + vinA + `"}`: 0,
	})
	c.Close()
	b.Close()
	waitFor(t, func() bool { return moved(before, scrape(t), "num_connections") == 0 })
}

func TestReliableAckMetrics(t *testing.T) {
	e := newTestEnv(t, allTopics, func(o *Options) {
		o.ReliableTopics = []string{"V"}
		o.ReliableAckDispatchers = map[string]string{"V": "kafka"}
	})
	const ack = `reliable_ack_total{record_type="V",dispatcher="kafka"}`
	const miss = `reliable_ack_miss_total{record_type="V",dispatcher="kafka"}`
	before := scrape(t)
	c := e.dial(t, vinA)
	c.Send(newRecord(vinA, "V", "r1"))
	waitFor(t, func() bool { return len(spooled(t, e.sp)) == 1 })
	e.srv.Delivered(spooled(t, e.sp)[0].Seq)
	expectAck(t, c, "r1", "V")
	mid := scrape(t)
	expectMoved(t, before, mid, map[string]float64{ack: 1, miss: 0,
		`reliable_ack{record_type="V",dispatcher="kafka"}`: 1})
	// The vehicle leaves before its record is confirmed: a miss.
	c.Send(newRecord(vinA, "V", "r2"))
	waitFor(t, func() bool { return len(spooled(t, e.sp)) == 2 })
	c.Close()
	waitFor(t, func() bool { return e.srv.Connections() == 0 })
	e.srv.Delivered(spooled(t, e.sp)[1].Seq)
	expectMoved(t, mid, scrape(t), map[string]float64{ack: 0, miss: 1,
		`reliable_ack_miss{record_type="V",dispatcher="kafka"}`: 1})
}

func TestTopicSeriesAreBounded(t *testing.T) {
	for i := range maxTopicSeries + 10 {
		metricsForTopic([]byte(fmt.Sprintf("bound-test-%d", i)))
	}
	if n := len(*topicTable.Load()); n > maxTopicSeries+1 {
		t.Fatalf("%d topic series, want at most %d", n, maxTopicSeries+1)
	}
	if tm := metricsForTopic([]byte("yet-another")); tm != (*topicTable.Load())[otherTopic] {
		t.Fatal("a topic past the bound did not share the other series")
	}
}

func TestEscapeLabel(t *testing.T) {
	if got := escapeLabel("a\"b\\c\nd"); got != `a\"b\\c\nd` {
		t.Fatalf("escapeLabel: %q", got)
	}
}

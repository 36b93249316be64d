package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/fleet-telemetry/fleet-telemetry/internal/brokertest"
	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

// mqttReader collects what a subscriber read: topic → payloads in order.
type mqttReader struct {
	mu  sync.Mutex
	msg map[string][]string
	txs *txSet
}

func newMQTTReader() *mqttReader { return &mqttReader{msg: map[string][]string{}, txs: newTxSet()} }

func (r *mqttReader) add(topic, payload string) {
	r.mu.Lock()
	r.msg[topic] = append(r.msg[topic], payload)
	r.mu.Unlock()
	if strings.HasSuffix(topic, "/v/VehicleName") {
		var tx string
		if json.Unmarshal([]byte(payload), &tx) == nil {
			r.txs.add(tx)
		}
	}
}

// last is the last payload read on topic ("" if none).
func (r *mqttReader) last(topic string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ps := r.msg[topic]; len(ps) > 0 {
		return ps[len(ps)-1]
	}
	return ""
}

// mosquittoSub runs Debian's mosquitto_sub on topic (QoS 1), printing
// "<topic> <payload>" per message, and returns once a probe published on
// the same broker came through (the subscription is in place).
func mosquittoSub(t *testing.T, b *brokertest.Broker, topic string) *mqttReader {
	t.Helper()
	bin := brokertest.Require(t, "mosquitto_sub", "mosquitto-clients")
	cmd := exec.Command(bin, "-h", "127.0.0.1", "-p", strconv.Itoa(b.Port), "-q", "1", "-v", "-t", topic, "-t", "probe/#")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	r := newMQTTReader()
	probed := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		once := sync.OnceFunc(func() { close(probed) })
		for sc.Scan() {
			topic, payload, _ := strings.Cut(sc.Text(), " ")
			if strings.HasPrefix(topic, "probe/") {
				once()
				continue
			}
			r.add(topic, payload)
		}
	}()
	pub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr).SetClientID("probe-" + t.Name()))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("probe connect: %v", tok.Error())
	}
	defer pub.Disconnect(50)
	for deadline := time.Now().Add(10 * time.Second); ; {
		pub.Publish("probe/x", 1, false, "p").WaitTimeout(time.Second)
		select {
		case <-probed:
			return r
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("mosquitto_sub did not receive a probe within 10s")
		}
	}
}

// The real daemon with a reference-style "mqtt" section (QoS 1, the
// integration config's keys) publishes what the reference's consumers
// read: per-datum V topics with the Field names and JSON values, alerts
// current/history, errors and connectivity, all under
// <topic_base>/<VIN>/...; V acks wait for the broker's PUBACKs
// (reliable_ack_sources V: mqtt). Read back with mosquitto_sub.
func TestMQTTEndToEnd(t *testing.T) {
	b := brokertest.Mosquitto(t)
	reader := mosquittoSub(t, b, "telemetry/#")
	setup := sinkConfig(t, map[string][]string{
		"V": {"mqtt", "logger"}, "alerts": {"mqtt"}, "errors": {"mqtt"}, "connectivity": {"mqtt"},
	}, func(c *config.Config) {
		c.MQTT = &config.MQTT{
			Broker: b.Addr, ClientID: "client-1", TopicBase: "telemetry", QoS: 1,
			Retained: false, ConnectTimeoutMs: 30000, PublishTimeoutMs: 1000,
		}
		c.ReliableAckSources = map[string]string{"V": "mqtt"}
	})
	d := startDaemon(t, setup.ConfigPath)

	want := map[string]bool{}
	lastV := map[string]*pb.Payload{}
	for _, vin := range vins {
		c := e2e.Dial(t, d.addr, setup.Certs, vin)
		var ms []*envelope.StreamMessage
		for i := range 10 {
			tx := fmt.Sprintf("%s-V-%d", vin, i)
			m := taggedRecord(vin, tx)
			ms = append(ms, m)
			want[tx] = true
			var p pb.Payload
			if err := protoUnmarshal(m.Payload, &p); err != nil {
				t.Fatal(err)
			}
			lastV[vin] = &p
		}
		ms = append(ms, newRecord(vin, "alerts", vin+"-alerts"), newRecord(vin, "errors", vin+"-errors"))
		e2e.SendAndAck(t, c, ms)
	}
	if missing, _ := reader.txs.wait(want, 30*time.Second); missing > 0 {
		t.Fatalf("%d of %d acked V records never reached the MQTT subscriber\n%s", missing, len(want), d.logText())
	}
	for _, vin := range vins {
		base := "telemetry/" + vin + "/"
		// Every datum of the vehicle's last record, by Field name.
		for _, dm := range lastV[vin].GetData() {
			topic := base + "v/" + dm.GetKey().String()
			if err := checkMQTTValue(dm.GetValue(), reader.last(topic)); err != nil {
				t.Errorf("%s: %v", topic, err)
			}
		}
		for topic, want := range map[string]string{
			base + "alerts/BMS_a066_w_fault/current": `{"Audiences":["Customer"],"StartedAt":"`,
			base + "alerts/BMS_a066_w_fault/history": `[{"Audiences":["Customer"],"StartedAt":"`,
			base + "errors/config_error":             `{"Body":"field not supported","CreatedAt":"`,
			base + "connectivity":                    `{"ConnectionId":"`,
		} {
			deadline := time.Now().Add(10 * time.Second)
			for reader.last(topic) == "" && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if got := reader.last(topic); !strings.HasPrefix(got, want) {
				t.Errorf("%s: got %q, want it to start with %q", topic, got, want)
			}
		}
		if got := reader.last(base + "errors/config_error"); !strings.HasSuffix(got, `"Tags":{"field":"Foo"}}`) {
			t.Errorf("errors payload %q", got)
		}
		if got := reader.last(base + "connectivity"); !strings.Contains(got, `"Status":"CONNECTED"`) {
			t.Errorf("connectivity payload %q", got)
		}
	}
	m := setup.metrics(t)
	if m[`mqtt_publish_total{record_type="V"}`] < float64(len(want)*9) || m[`mqtt_publish_total_bytes{record_type="V"}`] == 0 {
		t.Errorf("mqtt_publish_total{V} = %v, _bytes = %v for %d records of 9 datums", m[`mqtt_publish_total{record_type="V"}`],
			m[`mqtt_publish_total_bytes{record_type="V"}`], len(want))
	}
	if m[`reliable_ack_total{record_type="V",dispatcher="mqtt"}`] < float64(len(want)) {
		t.Errorf("reliable_ack_total{V,mqtt} = %v, want >= %d", m[`reliable_ack_total{record_type="V",dispatcher="mqtt"}`], len(want))
	}
	d.stop(t)
}

// checkMQTTValue checks a datum's published JSON against the value the
// vehicle sent (the kinds vehicle.NewPayloadV makes, and strings).
func checkMQTTValue(v *pb.Value, got string) error {
	var j any
	if err := json.Unmarshal([]byte(got), &j); err != nil {
		return fmt.Errorf("payload %q is not JSON: %v", got, err)
	}
	var ok bool
	switch x := v.GetValue().(type) {
	case *pb.Value_StringValue:
		ok = j == x.StringValue
	case *pb.Value_IntValue:
		ok = j == float64(x.IntValue)
	case *pb.Value_LongValue:
		ok = got == strconv.FormatInt(x.LongValue, 10)
	case *pb.Value_FloatValue:
		f, isNum := j.(float64)
		ok = isNum && float32(f) == x.FloatValue
	case *pb.Value_DoubleValue:
		ok = j == x.DoubleValue
	case *pb.Value_BooleanValue:
		ok = j == x.BooleanValue
	case *pb.Value_LocationValue:
		m, _ := j.(map[string]any)
		ok = len(m) == 2 && m["latitude"] == x.LocationValue.Latitude && m["longitude"] == x.LocationValue.Longitude
	case *pb.Value_ShiftStateValue:
		ok = j == x.ShiftStateValue.String()
	default:
		return fmt.Errorf("no check for %T", x)
	}
	if !ok {
		return fmt.Errorf("published %s for %v", got, v)
	}
	return nil
}

// TestMQTTBrokerOutage keeps three vehicles sending while mosquitto is
// stopped (SIGTERM: it saves its persistence) for 4 s and started again on
// the same port. The sink publishes with QoS 1 and passes a record only
// once every publish of it has its PUBACK, so every record acked to a
// vehicle — before, during and after the outage — reaches a subscriber
// with a persistent session (QoS 1, clean session off), which mosquitto
// keeps across its restart.
func TestMQTTBrokerOutage(t *testing.T) {
	b := brokertest.Mosquitto(t)
	reader := newMQTTReader()
	sub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + b.Addr).SetClientID("outage-sub").
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(200 * time.Millisecond).SetMaxReconnectInterval(500 * time.Millisecond).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { reader.add(m.Topic(), string(m.Payload())) }))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber: %v", tok.Error())
	}
	defer sub.Disconnect(50)
	if tok := sub.Subscribe("telemetry/+/v/VehicleName", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	setup := sinkConfig(t, map[string][]string{"V": {"mqtt"}}, func(c *config.Config) {
		c.MQTT = &config.MQTT{Broker: b.Addr, ClientID: "daemon", TopicBase: "telemetry", QoS: 1,
			PublishTimeoutMs: 1000, ConnectRetryIntervalMs: 500}
	})
	d, out := outageUnderLoad(t, setup, b, "mqtt")
	acked := out.acked
	missing, dup := reader.txs.wait(acked, 60*time.Second)
	m := setup.metrics(t)
	t.Logf("mosquitto stopped for %s: %d records acked meanwhile, %d in all; max lag %.0f; %d missing, %d duplicates at the subscriber; mqtt_err{V}=%.0f fleet_forwarder_retries_total{mqtt}=%.0f",
		out.took, out.during, len(acked), out.lagMax, missing, dup,
		m[`mqtt_err{record_type="V"}`], m[`fleet_forwarder_retries_total{forwarder="mqtt"}`])
	if missing > 0 {
		t.Fatalf("%d of %d acked records never reached the subscriber (mqtt_publish_total{V} %.0f, subscriber connected %v)\n%s\nbroker:\n%s", missing, len(acked),
			m[`mqtt_publish_total{record_type="V"}`], sub.IsConnectionOpen(), d.logText(), b.Log())
	}
	if out.lagMax < float64(out.during)/2 {
		t.Errorf("forwarder lag peaked at %.0f while %d records were acked during the outage", out.lagMax, out.during)
	}
	d.stop(t)
}

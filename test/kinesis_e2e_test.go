package test

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"google.golang.org/protobuf/proto"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder/kinesis/kinesistest"
	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
	"github.com/fleet-telemetry/fleet-telemetry/proto/record"
)

// writeKinesisConfig writes a reference-format config routing V and
// connectivity to kinesis (at endpoint) and the logger, with the reference
// integration config's "kinesis" section.
func writeKinesisConfig(t *testing.T, dir, endpoint string) (configPath, certs string) {
	t.Helper()
	certs = filepath.Join(dir, "certs")
	if _, err := devca.WriteDir(certs, vins); err != nil {
		t.Fatal(err)
	}
	c := baseConfig(certs, filepath.Join(dir, "spool"))
	c.Records = map[string][]string{"V": {"kinesis", "logger"}, "connectivity": {"kinesis", "logger"}}
	retries := 3
	c.Kinesis = &config.Kinesis{OverrideHost: endpoint, MaxRetries: &retries, Streams: map[string]string{"V": "test_V"}}
	configPath = filepath.Join(dir, "config.json")
	writeConfigFile(t, configPath, c)
	return configPath, certs
}

// canonical is a message's deterministic protobuf encoding: equal messages
// give equal strings, whatever encoder produced the bytes first.
func canonical(t *testing.T, m proto.Message) string {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// kinesisExpect is a record the daemon acked and must put.
type kinesisExpect struct {
	txid, vin string
}

// The real daemon with the reference's kinesis section puts every acked V
// record into the stream the config names (test_V) and connectivity
// records, the vehicles' and its own connect events, into
// tesla_telemetry_connectivity, with the certificate's VIN as partition key
// and as the payload's vin.
func TestKinesisEndToEnd(t *testing.T) {
	srv := kinesistest.Start(t)
	srv.CreateStream(t, "test_V", 2)
	srv.CreateStream(t, "tesla_telemetry_connectivity", 1)
	kinesistest.SetEnv(t) // inherited by the daemon process
	t.Setenv("KINESIS_STREAM_V", "")
	t.Setenv("KINESIS_STREAM_CONNECTIVITY", "")

	dir := t.TempDir()
	configPath, certs := writeKinesisConfig(t, dir, srv.Endpoint)
	d := startDaemon(t, configPath)

	rnd := rand.New(rand.NewPCG(11, 12))
	wantV := map[string]kinesisExpect{}    // canonical dispatched payload → record
	wantConn := map[string]kinesisExpect{} // the same for vehicle-sent connectivity
	var clients []*vehicle.Client
	for _, vin := range vins {
		c := e2e.Dial(t, d.addr, certs, vin)
		clients = append(clients, c)
		var ms []*envelope.StreamMessage
		for i := range 20 {
			topic, want := record.TopicV, wantV
			var payload []byte
			now := time.Now()
			if i%10 == 9 {
				topic, want = record.TopicConnectivity, wantConn
				payload = vehicle.PayloadConnectivity("SPOOFED0000000000", fmt.Sprintf("conn-%s-%d", vin, i), now)
			} else {
				payload = vehicle.PayloadV(rnd, "SPOOFED0000000000", 20, now)
			}
			tx := fmt.Sprintf("kinesis-%s-%d", vin, i)
			ms = append(ms, &envelope.StreamMessage{
				TxID: []byte(tx), Topic: []byte(topic), MessageID: []byte(tx),
				CreatedAt: uint32(now.Unix()), SenderID: []byte("vehicle_device." + vin), Payload: payload,
			})
			// What the daemon must dispatch: the VIN stamped from the
			// certificate, the reference's transforms applied.
			m, err := record.Transform(topic, vin, payload)
			if err != nil {
				t.Fatal(err)
			}
			want[canonical(t, m)] = kinesisExpect{txid: tx, vin: vin}
		}
		e2e.SendAndAck(t, c, ms)
	}

	deadline := time.Now().Add(30 * time.Second)
	for {
		missingV, missingConn, missingEvents := 0, 0, 0
		gotV := map[string]bool{}
		for _, r := range srv.ReadAll(t, "test_V") {
			var p pb.Payload
			if err := proto.Unmarshal(r.Data, &p); err != nil {
				t.Fatalf("test_V record is not a V payload: %v", err)
			}
			key := canonical(t, &p)
			w, ok := wantV[key]
			if !ok {
				t.Fatalf("test_V holds a record that was not sent (vin %q)", p.GetVin())
			}
			if pk := aws.ToString(r.PartitionKey); pk != w.vin || p.GetVin() != w.vin {
				t.Fatalf("%s: partition key %q, payload vin %q, want the certificate's %s", w.txid, pk, p.GetVin(), w.vin)
			}
			gotV[key] = true
		}
		missingV = len(wantV) - len(gotV)
		gotConn := map[string]bool{}
		connected := map[string]bool{}
		for _, r := range srv.ReadAll(t, "tesla_telemetry_connectivity") {
			var p pb.VehicleConnectivity
			if err := proto.Unmarshal(r.Data, &p); err != nil {
				t.Fatalf("connectivity record is not a VehicleConnectivity: %v", err)
			}
			if pk := aws.ToString(r.PartitionKey); pk != p.GetVin() {
				t.Fatalf("connectivity record for %q has partition key %q", p.GetVin(), pk)
			}
			key := canonical(t, &p)
			if w, ok := wantConn[key]; ok {
				if p.GetVin() != w.vin {
					t.Fatalf("%s: vin %q, want %s", w.txid, p.GetVin(), w.vin)
				}
				gotConn[key] = true
				continue
			}
			// The daemon's own connect events.
			if p.GetStatus() == pb.ConnectivityEvent_CONNECTED && p.GetConnectionId() != "" {
				connected[p.GetVin()] = true
			}
		}
		missingConn = len(wantConn) - len(gotConn)
		for _, vin := range vins {
			if !connected[vin] {
				missingEvents++
			}
		}
		if missingV == 0 && missingConn == 0 && missingEvents == 0 {
			t.Logf("all %d V and %d connectivity records and %d connect events read back from kinesalite",
				len(wantV), len(wantConn), len(vins))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30s still missing: %d of %d V records, %d of %d vehicle connectivity records, connect events of %d vehicles\n%s",
				missingV, len(wantV), missingConn, len(wantConn), missingEvents, d.logText())
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The logger got the same records.
	want := map[string]bool{}
	for _, w := range wantV {
		want[w.txid] = true
	}
	for _, w := range wantConn {
		want[w.txid] = true
	}
	d.waitPrinted(t, want, 10*time.Second)
	for _, c := range clients {
		c.Close()
	}
	d.stop(t)
}

package test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ps "cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

const pubsubProject = "test-project-id"

// startPstestServer builds test/pstestserver and runs it as a process of
// its own; it returns the address it listens on. The process gets SIGTERM
// at cleanup and must exit 0.
func startPstestServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pstestserver")
	build := exec.Command("go", "build", "-o", bin, "./pstestserver")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build pstestserver: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	addrCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "listening "); ok {
				addrCh <- addr
			}
		}
		exited <- cmd.Wait()
	}()
	var addr string
	select {
	case addr = <-addrCh:
	case err := <-exited:
		t.Fatalf("pstestserver exited before listening: %v\n%s", err, stderr.String())
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("pstestserver did not listen within 20s")
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("pstestserver after SIGTERM: %v\n%s", err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Error("pstestserver did not exit within 10s of SIGTERM")
		}
	})
	return addr
}

// writePubsubConfig writes a reference-format config routing V and errors
// to Pub/Sub and the logger, alerts and connectivity to the logger only.
func writePubsubConfig(t *testing.T, dir string) (configPath, certs string) {
	t.Helper()
	certs = filepath.Join(dir, "certs")
	if _, err := devca.WriteDir(certs, vins); err != nil {
		t.Fatal(err)
	}
	c := baseConfig(certs, filepath.Join(dir, "spool"))
	c.Records = map[string][]string{
		"V": {"pubsub", "logger"}, "errors": {"pubsub", "logger"},
		"alerts": {"logger"}, "connectivity": {"logger"},
	}
	c.Pubsub = &config.Pubsub{ProjectID: pubsubProject}
	configPath = filepath.Join(dir, "config.json")
	writeConfigFile(t, configPath, c)
	return configPath, certs
}

// The daemon, pointed at a Pub/Sub emulator process, creates the topics of
// the record types routed to Pub/Sub and publishes every acked record there
// with the certificate's VIN, while the logger also prints them.
func TestPubsubEndToEnd(t *testing.T) {
	addr := startPstestServer(t)
	// Inherited by the daemon process and used by this test's client.
	t.Setenv("PUBSUB_EMULATOR_HOST", addr)
	dir := t.TempDir()
	configPath, certs := writePubsubConfig(t, dir)
	d := startDaemon(t, configPath)

	ctx := context.Background()
	client, err := ps.NewClient(ctx, pubsubProject)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	topicName := func(rt string) string { return "projects/" + pubsubProject + "/topics/tesla_telemetry_" + rt }
	// The daemon created the topics of V and errors before it listened,
	// and none for the types it does not route to Pub/Sub.
	for rt, want := range map[string]codes.Code{"V": codes.OK, "errors": codes.OK, "alerts": codes.NotFound, "connectivity": codes.NotFound} {
		_, err := client.TopicAdminClient.GetTopic(ctx, &pubsubpb.GetTopicRequest{Topic: topicName(rt)})
		if status.Code(err) != want {
			t.Fatalf("topic %s: %v, want %v", topicName(rt), err, want)
		}
	}
	subs := map[string]string{}
	for _, rt := range []string{"V", "errors"} {
		id := "e2e-" + rt
		if _, err := client.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
			Name: "projects/" + pubsubProject + "/subscriptions/" + id, Topic: topicName(rt),
		}); err != nil {
			t.Fatalf("CreateSubscription on %s: %v", rt, err)
		}
		subs[rt] = id
	}

	// Records from every vehicle; the payloads carry a spoofed VIN.
	wantVIN := map[string]map[string]string{"V": {}, "errors": {}} // type → txid → vin
	printed := map[string]bool{}
	for _, vin := range vins {
		c := e2e.Dial(t, d.addr, certs, vin)
		var ms []*envelope.StreamMessage
		for i := range 20 {
			for _, rt := range []string{"V", "errors", "alerts"} {
				tx := fmt.Sprintf("ps-%s-%s-%d", vin, rt, i)
				ms = append(ms, newRecord(vin, rt, tx))
				if _, ok := wantVIN[rt]; ok {
					wantVIN[rt][tx] = vin
				}
				printed[tx] = true
			}
		}
		e2e.SendAndAck(t, c, ms)
	}

	for rt, want := range wantVIN {
		got := receiveAll(t, client, subs[rt], want, 30*time.Second)
		for tx, vin := range want {
			m := got[tx]
			if m.Attributes["vin"] != vin || m.Attributes["txtype"] != rt || m.Attributes["version"] != "0" ||
				m.Attributes["device_client_version"] != "e2e" || m.Attributes["receivedat"] == "" || m.Attributes["timestamp"] == "" {
				t.Errorf("%s %s: attributes %v, want vin=%s txtype=%s", rt, tx, m.Attributes, vin, rt)
			}
			var rec interface{ GetVin() string }
			switch rt {
			case "V":
				rec = &pb.Payload{}
			case "errors":
				rec = &pb.VehicleErrors{}
			}
			if err := proto.Unmarshal(m.Data, rec.(proto.Message)); err != nil {
				t.Errorf("%s %s: data is not a %T: %v", rt, tx, rec, err)
			} else if rec.GetVin() != vin {
				t.Errorf("%s %s: payload vin %q, want the certificate's %s", rt, tx, rec.GetVin(), vin)
			}
		}
	}
	d.waitPrinted(t, printed, 20*time.Second)
	d.stop(t)
}

// receiveAll reads a subscription with a real subscriber until every txid
// in want arrived (duplicates are allowed) and returns the messages by
// txid.
func receiveAll(t *testing.T, c *ps.Client, subID string, want map[string]string, timeout time.Duration) map[string]*ps.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var mu sync.Mutex
	got := map[string]*ps.Message{}
	missing := len(want)
	err := c.Subscriber(subID).Receive(ctx, func(_ context.Context, m *ps.Message) {
		m.Ack()
		mu.Lock()
		defer mu.Unlock()
		tx := m.Attributes["txid"]
		if _, ok := want[tx]; !ok {
			t.Errorf("subscription %s: unexpected txid %q", subID, tx)
			return
		}
		if _, dup := got[tx]; !dup {
			missing--
		}
		got[tx] = m
		if missing == 0 {
			cancel()
		}
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Receive %s: %v", subID, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if missing > 0 {
		t.Fatalf("subscription %s: %d of %d acked records never arrived within %v", subID, missing, len(want), timeout)
	}
	return got
}

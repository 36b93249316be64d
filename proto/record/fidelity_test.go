package record

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

// refCase is one golden case produced by the reference server.
type refCase struct {
	Name               string `json:"name"`
	Note               string `json:"note"`
	CertVIN            string `json:"cert_vin"`
	SenderID           string `json:"sender_id"`
	FrameB64           string `json:"frame_b64"`
	Topic              string `json:"topic"`
	TxID               string `json:"txid"`
	Outcome            string `json:"outcome"`
	DispatchedProtoB64 string `json:"dispatched_proto_b64"`
	DispatchedJSON     any    `json:"dispatched_json"`
}

func loadCases(t testing.TB) []refCase {
	t.Helper()
	raw, err := os.ReadFile("../testdata/reference-vectors.json")
	if err != nil {
		t.Fatalf("read vectors: %v", err)
	}
	var cs []refCase
	if err := json.Unmarshal(raw, &cs); err != nil {
		t.Fatalf("parse vectors: %v", err)
	}
	if len(cs) == 0 {
		t.Fatal("no vectors")
	}
	return cs
}

// replyText is what the reference sends for a payload it cannot decode.
const replyText = "incorrect message format"

// TestReferenceFidelity runs every golden case through the same steps the
// daemon does — envelope decode, sender check, Validate, reply, Transform,
// both marshals — and compares with what the reference produced.
func TestReferenceFidelity(t *testing.T) {
	for _, c := range loadCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			frame, err := base64.StdEncoding.DecodeString(c.FrameB64)
			if err != nil {
				t.Fatalf("frame base64: %v", err)
			}
			var env envelope.Envelope
			if err := envelope.Decode(frame, &env); err != nil {
				t.Fatalf("envelope.Decode: %v", err)
			}
			if string(env.TxID) != c.TxID || string(env.Topic) != c.Topic || string(env.Stream.SenderID) != c.SenderID {
				t.Fatalf("envelope txid/topic/sender = %q/%q/%q, want %q/%q/%q",
					env.TxID, env.Topic, env.Stream.SenderID, c.TxID, c.Topic, c.SenderID)
			}
			if !SenderIDMatches(env.Stream.SenderID, "vehicle_device", c.CertVIN) {
				t.Fatalf("sender_id %q does not match certificate VIN %q", env.Stream.SenderID, c.CertVIN)
			}

			_, verr := Validate(env.Topic, env.Stream.Payload)
			outcome := "ack"
			var reply []byte
			if verr != nil {
				outcome = "error"
				reply = envelope.AppendError(nil, env.TxID, nil, replyText)
			} else {
				reply = envelope.AppendAck(nil, env.TxID, env.Topic, env.MessageID)
			}
			if outcome != c.Outcome {
				t.Fatalf("outcome = %s (Validate: %v), reference says %s", outcome, verr, c.Outcome)
			}
			checkReply(t, reply, outcome, c)
			if outcome == "error" {
				return
			}

			msg, err := Transform(c.Topic, c.CertVIN, env.Stream.Payload)
			if err != nil {
				t.Fatalf("Transform: %v", err)
			}
			gotProto, err := MarshalProto(msg)
			if err != nil {
				t.Fatalf("MarshalProto: %v", err)
			}
			compareProto(t, c, gotProto)

			gotJSON, err := MarshalJSON(msg)
			if err != nil {
				t.Fatalf("MarshalJSON: %v", err)
			}
			compareJSON(t, c, gotJSON)
			if c.Topic == TopicV {
				// The JSON fast path, where it applies, gives the same.
				if fast, _, ok := AppendDispatchedJSON(nil, c.CertVIN, env.Stream.Payload); ok {
					compareJSON(t, c, fast)
				} else {
					t.Logf("%s: not on the JSON fast path", c.Name)
				}
			}
		})
	}
}

// checkReply checks that the reply the daemon's encoders build for c decodes
// to what the reference sent. (test/TestReferenceVectorsEndToEnd checks the
// replies the running daemon sends for the same frames.)
func checkReply(t *testing.T, reply []byte, outcome string, c refCase) {
	t.Helper()
	var env envelope.Envelope
	if err := envelope.Decode(reply, &env); err != nil {
		t.Fatalf("our %s reply does not decode: %v", outcome, err)
	}
	if string(env.TxID) != c.TxID {
		t.Errorf("%s reply txid = %q, want %q", outcome, env.TxID, c.TxID)
	}
	switch outcome {
	case "ack":
		if env.Type != envelope.TypeStreamAck || !env.HasMessage || string(env.Topic) != c.Topic {
			t.Errorf("ack reply = %+v", env)
		}
	case "error":
		if env.Type != envelope.TypeStream || string(env.Stream.Payload) != replyText {
			t.Errorf("error reply type %d payload %q", env.Type, env.Stream.Payload)
		}
	}
}

func compareProto(t *testing.T, c refCase, got []byte) {
	t.Helper()
	wantBytes, err := base64.StdEncoding.DecodeString(c.DispatchedProtoB64)
	if err != nil {
		t.Fatalf("dispatched_proto_b64: %v", err)
	}
	want, gotMsg := newMessage(c.Topic), newMessage(c.Topic)
	if err := proto.Unmarshal(wantBytes, want); err != nil {
		t.Fatalf("reference dispatched bytes do not decode: %v", err)
	}
	if err := proto.Unmarshal(got, gotMsg); err != nil {
		t.Fatalf("our dispatched bytes do not decode: %v", err)
	}
	if !proto.Equal(gotMsg, want) {
		t.Errorf("dispatched protobuf differs from the reference (%s)\n--- reference\n%s\n+++ ours\n%s\n%s",
			c.Note, prototext.Format(want), prototext.Format(gotMsg), lineDiff(prototext.Format(want), prototext.Format(gotMsg)))
	}
}

func compareJSON(t *testing.T, c refCase, got []byte) {
	t.Helper()
	var gotTree any
	if err := json.Unmarshal(got, &gotTree); err != nil {
		t.Fatalf("our JSON does not parse: %v\n%s", err, got)
	}
	if !reflect.DeepEqual(gotTree, c.DispatchedJSON) {
		var diffs []string
		jsonDiff("$", c.DispatchedJSON, gotTree, &diffs)
		t.Errorf("dispatched JSON differs from the reference (%s):\n%s\nours: %s", c.Note, strings.Join(diffs, "\n"), got)
	}
}

// jsonDiff lists the paths at which two parsed JSON trees differ.
func jsonDiff(path string, want, got any, out *[]string) {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			break
		}
		keys := map[string]bool{}
		for k := range w {
			keys[k] = true
		}
		for k := range g {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			jsonDiff(path+"."+k, w[k], g[k], out)
		}
		return
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			break
		}
		for i := range w {
			jsonDiff(fmt.Sprintf("%s[%d]", path, i), w[i], g[i], out)
		}
		return
	}
	if !reflect.DeepEqual(want, got) {
		*out = append(*out, fmt.Sprintf("  %s: reference %#v, ours %#v", path, want, got))
	}
}

// lineDiff marks lines present in only one of two texts.
func lineDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	count := map[string]int{}
	for _, l := range gl {
		count[l]++
	}
	var b strings.Builder
	for _, l := range wl {
		if count[l] > 0 {
			count[l]--
			continue
		}
		b.WriteString("- " + l + "\n")
	}
	wcount := map[string]int{}
	for _, l := range wl {
		wcount[l]++
	}
	for _, l := range gl {
		if wcount[l] > 0 {
			wcount[l]--
			continue
		}
		b.WriteString("+ " + l + "\n")
	}
	return b.String()
}

// TestNewConnectivityMatchesReference rebuilds the reference's server-made
// connectivity record from its parts.
func TestNewConnectivityMatchesReference(t *testing.T) {
	for _, c := range loadCases(t) {
		if c.Topic != TopicConnectivity {
			continue
		}
		want, err := base64.StdEncoding.DecodeString(c.DispatchedProtoB64)
		if err != nil {
			t.Fatal(err)
		}
		created := time.Unix(1700000000, 123000000)
		got, err := NewConnectivity(c.CertVIN, "7c3b9a0e-1111-4a2b-9c3d-000000000001", pb.ConnectivityEvent_CONNECTED, created, "wifi")
		if err != nil {
			t.Fatalf("NewConnectivity: %v", err)
		}
		wm, gm := &pb.VehicleConnectivity{}, &pb.VehicleConnectivity{}
		if err := proto.Unmarshal(want, wm); err != nil {
			t.Fatal(err)
		}
		if err := proto.Unmarshal(got, gm); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(wm, gm) {
			t.Fatalf("NewConnectivity = %v, reference %v", prototext.Format(gm), prototext.Format(wm))
		}
		return
	}
	t.Fatal("no connectivity vector")
}

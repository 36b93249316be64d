package pb_test

import (
	"os"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

// TestSchemaMatchesReference checks that the compiled .proto files describe
// exactly the reference schema (names, numbers, types, json names, oneofs),
// ignoring only go_package, which must point at this module.
func TestSchemaMatchesReference(t *testing.T) {
	raw, err := os.ReadFile("../testdata/telemetry-schema.json")
	if err != nil {
		t.Fatalf("read schema: %v", err)
	}
	var want descriptorpb.FileDescriptorSet
	if err := protojson.Unmarshal(raw, &want); err != nil {
		t.Fatalf("parse schema: %v", err)
	}
	ours := map[string]protoreflect.FileDescriptor{
		"vehicle_alert.proto":        pb.File_vehicle_alert_proto,
		"vehicle_connectivity.proto": pb.File_vehicle_connectivity_proto,
		"vehicle_data.proto":         pb.File_vehicle_data_proto,
		"vehicle_error.proto":        pb.File_vehicle_error_proto,
		"vehicle_metric.proto":       pb.File_vehicle_metric_proto,
	}
	if len(want.File) != len(ours) {
		t.Fatalf("schema has %d files, we have %d", len(want.File), len(ours))
	}
	for _, wf := range want.File {
		fd, ok := ours[wf.GetName()]
		if !ok {
			t.Errorf("schema file %s has no generated counterpart", wf.GetName())
			continue
		}
		got := protodesc.ToFileDescriptorProto(fd)
		if got.GetOptions().GetGoPackage() != "github.com/fleet-telemetry/fleet-telemetry/proto/pb;pb" {
			t.Errorf("%s: go_package = %q", wf.GetName(), got.GetOptions().GetGoPackage())
		}
		got.Options, wf.Options = nil, nil
		if !proto.Equal(got, wf) {
			t.Errorf("%s differs from the reference schema\n--- reference\n%s\n+++ ours\n%s",
				wf.GetName(), prototext.Format(wf), prototext.Format(got))
		}
	}
}

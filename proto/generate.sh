#!/usr/bin/env bash
# Regenerates the Go code in proto/pb from proto/telemetry/*.proto.
# Generators are pinned and installed into ./bin so every run (and every
# machine) produces byte-identical output; protoc is Debian's 3.21.12 because
# its version is stamped into the generated headers.
set -euo pipefail

readonly PROTOC_WANT="libprotoc 3.21.12"
readonly PROTOC_GEN_GO="google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12"
readonly PROTOC_GEN_VT="github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto@v0.6.0"
readonly PB_IMPORT="github.com/fleet-telemetry/fleet-telemetry/proto/pb"
# Only messages that are decoded per record on the hot path are pooled; the
# nested Datum/Value chain is pooled so a recycled Payload keeps its children.
readonly POOLED=(Payload Datum Value LocationValue Doors TireLocation Time
	VehicleAlerts VehicleAlert VehicleErrors VehicleError VehicleConnectivity)

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

protoc_bin="${PROTOC:-/usr/bin/protoc}"
if ! command -v "$protoc_bin" >/dev/null 2>&1; then
	echo "generate.sh: protoc not found at $protoc_bin (install Debian's protobuf-compiler 3.21.12)" >&2
	exit 1
fi
protoc_have="$("$protoc_bin" --version)"
if [[ "$protoc_have" != "$PROTOC_WANT" ]]; then
	echo "generate.sh: need protoc '$PROTOC_WANT', found '$protoc_have' at $protoc_bin" >&2
	exit 1
fi

# Separate installs: "go install pkg@version" takes one module per call.
GOBIN="$repo/bin" go install "$PROTOC_GEN_GO"
GOBIN="$repo/bin" go install "$PROTOC_GEN_VT"

vt_opts="paths=source_relative,features=marshal+unmarshal+size+pool+unmarshal_unsafe"
for m in "${POOLED[@]}"; do
	vt_opts+=",pool=${PB_IMPORT}.${m}"
done

# Remove only generated files so hand-written tests in proto/pb survive.
rm -f proto/pb/*.pb.go

# One protoc run over all files: they share one Go package.
"$protoc_bin" \
	--plugin=protoc-gen-go="$repo/bin/protoc-gen-go" \
	--plugin=protoc-gen-go-vtproto="$repo/bin/protoc-gen-go-vtproto" \
	-I proto/telemetry \
	--go_out=proto/pb --go_opt=paths=source_relative \
	--go-vtproto_out=proto/pb --go-vtproto_opt="$vt_opts" \
	proto/telemetry/*.proto

echo "generate.sh: regenerated $(ls proto/pb/*.pb.go | wc -l) files in proto/pb"

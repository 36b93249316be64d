package testkit

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// CheckCPUProfile fails the test unless path holds a whole gzipped pprof
// profile of CPU samples: one whose string table (field 6 of
// perftools.profiles.Profile) names "cpu" and "nanoseconds".
func CheckCPUProfile(t testing.TB, path string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("%s is not gzip: %v", path, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s is cut short: %v", path, err)
	}
	strs := map[string]bool{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("%s: not a protobuf", path)
		}
		b = b[n:]
		if num == 6 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				t.Fatalf("%s: bad string", path)
			}
			strs[string(v)] = true
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			t.Fatalf("%s: bad field %d", path, num)
		}
		b = b[n:]
	}
	if !strs["cpu"] || !strs["nanoseconds"] {
		t.Fatalf("%s is not a CPU profile (strings %v)", path, strs)
	}
}

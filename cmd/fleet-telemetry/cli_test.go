package main

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metrics"
)

func TestBuildInfoAndMetric(t *testing.T) {
	b := readBuildInfo()
	if b.GoVersion != runtime.Version() || b.Version == "" {
		t.Fatalf("build info %+v", b)
	}
	if b.Revision == "unknown" {
		// No VCS stamp in this build: make build's -X values are used.
		vcsRevision, vcsModified = "0123abcd", "true"
		defer func() { vcsRevision, vcsModified = "", "" }()
		if b = readBuildInfo(); b.RevisionString() != "0123abcd-modified" {
			t.Fatalf("revision from -ldflags: %q", b.RevisionString())
		}
	}
	registerBuildInfoMetric(b)
	var buf bytes.Buffer
	metrics.WritePrometheus(&buf, false)
	want := `fleet_build_info{version="` + b.Version + `",revision="` + b.RevisionString() + `",goversion="` + b.GoVersion + `"} 1`
	if !strings.Contains(buf.String(), want+"\n") {
		t.Fatalf("no %s in:\n%s", want, buf.String())
	}
	if metricHelp("fleet_build_info") == "" {
		t.Fatal("fleet_build_info has no HELP text")
	}
}

func TestCheckSpoolDir(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	for _, tc := range []struct {
		dir, want string
	}{
		{dir, ""}, // exists, writable
		{filepath.Join(dir, "a", "b", "spool"), ""},       // created with its parents
		{file, "is not a directory"},                      // a file
		{filepath.Join(file, "spool"), "not a directory"}, // under a file
	} {
		err := checkSpoolDir(tc.dir)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("checkSpoolDir(%s) = %v, want %q", tc.dir, err, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "a")); err == nil {
		t.Error("checkSpoolDir created a directory")
	}
	if os.Geteuid() != 0 {
		ro := filepath.Join(dir, "ro")
		os.Mkdir(ro, 0o555)
		if err := checkSpoolDir(filepath.Join(ro, "spool")); err == nil || !strings.Contains(err.Error(), "not writable") {
			t.Errorf("spool under a read-only directory: %v", err)
		}
		if err := checkSpoolDir(ro); err == nil || !strings.Contains(err.Error(), "not writable") {
			t.Errorf("read-only spool directory: %v", err)
		}
	}
}

package main

import (
	"bytes"
	"flag"
	"strings"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

func TestSpoolFlagsAnywhere(t *testing.T) {
	o := &spoolOpts{}
	top := flag.NewFlagSet("spool", flag.ContinueOnError)
	o.register(top)
	if err := top.Parse([]string{"-dir", "/x", "cat", "42", "--json", "-admin", "/s"}); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("cat", flag.ContinueOnError)
	o.register(fs)
	pos, err := parseInterspersed(fs, top.Args()[1:])
	if err != nil {
		t.Fatal(err)
	}
	if len(pos) != 1 || pos[0] != "42" || !o.json || o.dir != "/x" || o.admin != "/s" {
		t.Fatalf("pos %v opts %+v", pos, o)
	}
	if err := o.resolve(); err != nil || o.admin != "/s" {
		t.Fatalf("resolve: %v %s", err, o.admin)
	}
	o2 := &spoolOpts{dir: "/var/spool"}
	if err := o2.resolve(); err != nil || o2.admin != "/var/spool/admin.sock" {
		t.Fatalf("default socket: %s", o2.admin)
	}
}

func TestSpoolUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"-dir", t.TempDir(), "cat"},
		{"-dir", t.TempDir(), "cat", "x"},
		{"-dir", t.TempDir(), "export", "-format", "xml"},
		{"-dir", t.TempDir(), "replay", "-sink", "logger"}, // no -config
		{"-dir", t.TempDir(), "stats", "extra"},
	} {
		var out, errb bytes.Buffer
		if code := runSpool(args, &out, &errb); code != 2 {
			t.Errorf("spool %v: exit %d, want 2\n%s", args, code, errb.String())
		}
	}
}

func TestProgressLine(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	p := newProgress(&buf, true, "verify", 1000)
	p.now = func() time.Time { return now }
	p.start, p.last = now, now
	now = now.Add(2 * time.Second)
	p.add(100)
	if l := p.line(now, false); !strings.Contains(l, "100/1,000 records  10%") || !strings.Contains(l, "50 rec/s") || !strings.Contains(l, "ETA 18s") {
		t.Fatalf("line %q", l)
	}
	if !strings.Contains(buf.String(), "ETA 18s") {
		t.Fatalf("not drawn: %q", buf.String())
	}
	p.add(900)
	p.finish()
	if !strings.HasSuffix(buf.String(), "\n") || !strings.Contains(buf.String(), "done in") {
		t.Fatalf("finish: %q", buf.String())
	}
	var quiet bytes.Buffer
	q := newProgress(&quiet, false, "x", 10)
	q.add(5)
	q.finish()
	if quiet.Len() != 0 {
		t.Fatalf("disabled progress drew %q", quiet.String())
	}
}

func TestEstimateAndFormat(t *testing.T) {
	in := spool.Info{Records: 90, FirstSeq: 11, NewestSeq: 100}
	for _, c := range []struct {
		from, to uint64
		want     int64
	}{{0, 0, 90}, {50, 0, 51}, {0, 20, 10}, {101, 0, 0}, {30, 20, 0}} {
		if got := estimate(in, c.from, c.to); got != c.want {
			t.Errorf("estimate(%d, %d) = %d, want %d", c.from, c.to, got, c.want)
		}
	}
	if lagAfter(in, 0) != 90 || lagAfter(in, 95) != 5 || lagAfter(in, 100) != 0 {
		t.Error("lagAfter")
	}
	if fmtCount(1234567) != "1,234,567" || fmtCount(12) != "12" || fmtCount(-1000) != "-1,000" {
		t.Error("fmtCount")
	}
	if fmtBytes(1536) != "1.5 KiB" || fmtBytes(10) != "10 B" {
		t.Error("fmtBytes", fmtBytes(1536))
	}
}

package metricsexport

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/fleet-telemetry/fleet-telemetry/internal/testkit"
)

// listen opens a StatsD stand-in on 127.0.0.1 and returns a function that
// collects every line received until want appears (or the deadline).
func listen(t *testing.T) (string, func(want ...string) []string) {
	t.Helper()
	l := testkit.ListenUDP(t)
	var lines []string
	hasAll := func(want []string) bool {
		for _, w := range want {
			if !slices.Contains(lines, w) {
				return false
			}
		}
		return true
	}
	return l.Addr(), func(want ...string) []string {
		t.Helper()
		if hasAll(want) {
			return lines
		}
		if !l.ReadUntil(time.Now().Add(5*time.Second), func(datagram []byte) bool {
			if len(datagram) > maxPacket {
				t.Errorf("datagram of %d bytes", len(datagram))
			}
			lines = append(lines, strings.Split(string(datagram), "\n")...)
			return hasAll(want)
		}) {
			t.Fatalf("statsd lines %q lack some of %q", lines, want)
		}
		return lines
	}
}

func TestStatsdPusherSendsCountersAsIncreasesAndGauges(t *testing.T) {
	addr, read := listen(t)
	c := metrics.GetOrCreateCounter(`statsdpush_records_total{record_type="V"}`)
	g := metrics.GetOrCreateGauge(`statsdpush_open`, nil)
	h := metrics.GetOrCreateHistogram(`statsdpush_latency_seconds`)
	c.Add(5)
	g.Set(7)
	h.Update(0.25)
	p, err := StartStatsd(StatsdOptions{Addr: addr, Prefix: "ft.", FlushPeriod: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	read("ft.statsdpush_records_total.V:5|c", "ft.statsdpush_open:7|g",
		"ft.statsdpush_latency_seconds_count:1|c", "ft.statsdpush_latency_seconds_sum:0.25|c")
	// Later pushes carry only the increase.
	c.Add(3)
	g.Set(2)
	read("ft.statsdpush_records_total.V:3|c", "ft.statsdpush_open:2|g")
}

func TestFlushSkipsUnchangedAndSplitsPackets(t *testing.T) {
	addr, read := listen(t)
	var fams []Family
	f := Family{Name: "many_total", Type: "counter"}
	for i := range 200 {
		f.Samples = append(f.Samples, Sample{Name: "many_total", Labels: `{i="` + strconv.Itoa(i) + `",pad="` + strings.Repeat("x", 20) + `"}`, Value: 1})
	}
	fams = append(fams, f, Family{Name: "neg", Type: "gauge", Samples: []Sample{{Name: "neg", Value: -4}}})
	p, err := StartStatsd(StatsdOptions{Addr: addr, FlushPeriod: time.Hour, gather: func() []Family { return fams }})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	lines := read("many_total.0.xxxxxxxxxxxxxxxxxxxx:1|c", "many_total.199.xxxxxxxxxxxxxxxxxxxx:1|c", "neg:0|g", "neg:-4|g")
	n := len(lines)
	if err := p.Flush(); err != nil { // nothing changed: nothing sent
		t.Fatal(err)
	}
	fams[1].Samples[0].Value = 1
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	lines = read("neg:1|g")
	if len(lines) != n+1 {
		t.Fatalf("second and third flush sent %q, want only neg:1|g", lines[n:])
	}
}

func TestStartRefusesBadHost(t *testing.T) {
	for _, h := range []string{"", "no-port"} {
		if _, err := StartStatsd(StatsdOptions{Addr: h}); err == nil {
			t.Errorf("StartStatsd(%q) succeeded", h)
		}
	}
}

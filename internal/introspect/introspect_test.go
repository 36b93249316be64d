package introspect

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/netloop"
)

func TestRateOverTheLastWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	r := newRing(10)
	if got := r.rate(t0, 10, 10*time.Second); got != 0 {
		t.Fatalf("no samples: %v", got)
	}
	r.add(sample{at: t0, records: 100})
	// One sample 4 s old: the window starts there.
	if got := r.rate(t0.Add(4*time.Second), 140, 10*time.Second); got != 10 {
		t.Fatalf("from the only sample: %v, want 10", got)
	}
	for i := 1; i <= 20; i++ { // one per 2 s; the ring keeps the last 10 (t0+22 s to t0+40 s)
		r.add(sample{at: t0.Add(time.Duration(2*i) * time.Second), records: uint64(100 + 10*i)})
	}
	// At t0+41 s the newest sample at least 10 s old is the one at t0+30 s
	// (records 250); 300 records at t0+41 s is 50 in 11 s.
	if got := r.rate(t0.Add(41*time.Second), 300, 10*time.Second); math.Abs(got-50.0/11) > 1e-9 {
		t.Fatalf("rate %v, want %v", got, 50.0/11)
	}
	if got := r.rate(t0.Add(41*time.Second), 300, 5*time.Second); math.Abs(got-(300-280)/5.0) > 1e-9 {
		t.Fatalf("short window: %v", got)
	}
	// Every sample is newer than the window's start: from the oldest kept
	// (t0+22 s, 210).
	if got := r.rate(t0.Add(41*time.Second), 300, 30*time.Second); math.Abs(got-90.0/19) > 1e-9 {
		t.Fatalf("long window: %v", got)
	}
	// A counter that went backwards (another process's figures) is no rate.
	if got := r.rate(t0.Add(41*time.Second), 1, 10*time.Second); got != 0 {
		t.Fatalf("backwards: %v", got)
	}
}

func TestHistoryPointsAreRatesBetweenSamples(t *testing.T) {
	t0 := time.Unix(1000, 0)
	r := newRing(4)
	for i, recs := range []uint64{0, 10, 30, 30, 70} { // the first falls out
		r.add(sample{at: t0.Add(time.Duration(i) * time.Second), records: recs, lag: uint64(i)})
	}
	h := r.history(time.Second)
	wantRate := []float64{20, 0, 40}
	if len(h.AtMs) != 3 || len(h.RecordsPerSecond) != 3 || len(h.LagRecords) != 3 {
		t.Fatalf("history %+v", h)
	}
	for i := range wantRate {
		if h.RecordsPerSecond[i] != wantRate[i] || h.LagRecords[i] != uint64(i+2) || h.AtMs[i] != t0.Add(time.Duration(i+2)*time.Second).UnixMilli() {
			t.Fatalf("point %d: %v/s lag %d at %d", i, h.RecordsPerSecond[i], h.LagRecords[i], h.AtMs[i])
		}
	}
	if h := newRing(3).history(time.Second); h.AtMs == nil || len(h.AtMs) != 0 {
		t.Fatalf("empty history %+v: want empty lists, not null", h)
	}
}

func TestParseConnQuery(t *testing.T) {
	q, err := ParseConnQuery(url.Values{"vin": {"kf0001"}, "sort": {"records"}, "reverse": {"1"}, "limit": {"5"}, "offset": {"10"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := (netloop.ConnQuery{VIN: "kf0001", Sort: netloop.SortRecords, Reverse: true, Limit: 5, Offset: 10}); q != want {
		t.Fatalf("%+v, want %+v", q, want)
	}
	for _, bad := range []url.Values{{"sort": {"speed"}}, {"limit": {"-1"}}, {"offset": {"x"}}, {"reverse": {"maybe"}}} {
		if _, err := ParseConnQuery(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestBeforeAttach: the routes exist from the start; /connz and /varz say
// the daemon is starting, and a bad query is refused before that.
func TestBeforeAttach(t *testing.T) {
	h := New(Options{})
	defer h.Close()
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for path, want := range map[string]int{"/connz": 503, "/varz": 503, "/connz?sort=nope": 400, "/": 200, "/nothing": 404} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d %q, want %d", path, resp.StatusCode, body, want)
		}
		if path == "/" && (!bytes.Equal(body, statusPage) || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'sha256-")) {
			t.Errorf("GET /: the page or its CSP is wrong: %q", resp.Header.Get("Content-Security-Policy"))
		}
	}
}

// TestPageCSPHashesThePagesOwnScriptAndStyle: the hashes in the policy
// are those of the page's inline <script> and <style>; a browser runs
// nothing else (the browser test in test/ shows it runs these).
func TestPageCSPHashesThePagesOwnScriptAndStyle(t *testing.T) {
	page := string(statusPage)
	for _, tag := range []string{"script", "style"} {
		if strings.Count(page, "<"+tag+">") != 1 || strings.Count(page, "<"+tag) != 1 {
			t.Fatalf("the page must have exactly one <%s> element, without attributes", tag)
		}
		body := page[strings.Index(page, "<"+tag+">")+len(tag)+2 : strings.Index(page, "</"+tag+">")]
		sum := sha256.Sum256([]byte(body))
		want := tag + "-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
		if !strings.Contains(pageCSP, want) {
			t.Errorf("CSP %q lacks %q", pageCSP, want)
		}
	}
	// The SVG namespace is a name, not a resource.
	own := strings.ReplaceAll(page, `"http://www.w3.org/2000/svg"`, "")
	for _, ext := range []string{"http:", "https:", " src=", "@import", "url("} {
		if strings.Contains(own, ext) {
			t.Errorf("the page has %q: it must load nothing from elsewhere", ext)
		}
	}
	if strings.Contains(page, "innerHTML") {
		t.Error("the page uses innerHTML: vehicle-chosen strings must go in as text")
	}
}

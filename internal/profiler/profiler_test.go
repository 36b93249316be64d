package profiler

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/testkit"
)

func serve(t *testing.T, o Options) (*Profiler, *httptest.Server) {
	t.Helper()
	p := New(o)
	mux := http.NewServeMux()
	p.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
	})
	return p, srv
}

func get(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestGCStats(t *testing.T) {
	_, srv := serve(t, Options{})
	runtime.GC()
	code, body := get(t, http.MethodGet, srv.URL+"/gc_stats")
	if code != 200 {
		t.Fatalf("GET /gc_stats: %d %s", code, body)
	}
	var s struct {
		LastGC         time.Time
		NumGC          int64
		PauseTotal     time.Duration
		Pause          []time.Duration
		PauseQuantiles []time.Duration
	}
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, body)
	}
	if s.NumGC < 1 || s.LastGC.IsZero() || len(s.Pause) == 0 || len(s.PauseQuantiles) != 5 {
		t.Fatalf("GC statistics after a GC: %+v", s)
	}
	if code, _ := get(t, http.MethodPost, srv.URL+"/gc_stats"); code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /gc_stats: %d, want 405", code)
	}
}

func TestLiveProfilerWithoutPathIs405(t *testing.T) {
	_, srv := serve(t, Options{})
	for _, q := range []string{"?mode=on", "?mode=off", ""} {
		if code, body := get(t, http.MethodGet, srv.URL+"/live_profiler"+q); code != http.StatusMethodNotAllowed {
			t.Fatalf("/live_profiler%s without a path: %d %s, want 405", q, code, body)
		}
	}
}

func TestLiveProfiler(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	_, srv := serve(t, Options{Path: path})
	url := srv.URL + "/live_profiler"
	for _, tc := range []struct {
		query string
		want  int
	}{
		{"", http.StatusBadRequest},
		{"?mode=maybe", http.StatusBadRequest},
		{"?mode=off", http.StatusNotModified}, // already off
		{"?mode=on", http.StatusOK},
		{"?mode=on", http.StatusNotModified}, // already on
	} {
		if code, body := get(t, http.MethodGet, url+tc.query); code != tc.want {
			t.Fatalf("GET /live_profiler%s: %d %s, want %d", tc.query, code, body, tc.want)
		}
	}
	// Something for the profile to sample.
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		_ = bytes.Repeat([]byte("x"), 1<<10)
	}
	if code, body := get(t, http.MethodGet, url+"?mode=off"); code != http.StatusOK {
		t.Fatalf("mode=off: %d %s", code, body)
	}
	testkit.CheckCPUProfile(t, path)
	if code, _ := get(t, http.MethodGet, url+"?mode=off"); code != http.StatusNotModified {
		t.Fatalf("mode=off twice: %d, want 304", code)
	}
	// On again: a new profile replaces the file.
	if code, _ := get(t, http.MethodGet, url+"?mode=on"); code != http.StatusOK {
		t.Fatalf("mode=on again: %d", code)
	}
}

package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fleet-telemetry/fleet-telemetry/internal/e2e"
)

// newBrowser starts Debian's chromium (headless, a fresh profile, no
// network of its own: no QUIC, no background fetches, no component
// updates) and returns a context whose tab it drives. Nothing downloads a
// browser: without /usr/bin/chromium the test is skipped (failed under
// CI=true).
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	chromium := e2e.NeedTool(t, "chromium", "chromium")
	dir := t.TempDir()
	logFile, err := os.Create(filepath.Join(dir, "chromium.log"))
	if err != nil {
		t.Fatal(err)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.WindowSize(1400, 1000),
		chromedp.CombinedOutput(logFile),
	)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser to exit, before its profile is removed
		logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logFile.Name()); err == nil && len(b) > 0 {
				t.Logf("chromium's output:\n%s", b)
			}
		}
	})
	// The first Run starts the browser (on a context without a timeout:
	// it would stop the browser).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// browserDo runs actions on the tab within d.
func browserDo(t *testing.T, ctx context.Context, d time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := chromedp.Do(c, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// browserEval evaluates a JavaScript expression on the tab.
func browserEval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitPage polls a JavaScript predicate on the page until it holds.
func waitPage(t *testing.T, ctx context.Context, what, predicate string) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Run(c, chromedp.Poll[bool](predicate, chromedp.WithPollingInterval(100*time.Millisecond),
		chromedp.WithPollingTimeout(25*time.Second))); err != nil {
		t.Fatalf("the page never showed %s (%s): %v", what, predicate, err)
	}
}

// The page's connection table, read by the tests.
const (
	jsRowVINs    = `Array.from(document.querySelectorAll('#conns tbody tr[data-vin]')).map(function (r) { return r.dataset.vin; }).sort().join(',')`
	jsRecordsFmt = `(function () { var c = document.querySelector('#conns tbody tr[data-vin="%s"] td.records'); return c ? parseInt(c.textContent.replace(/,/g, ''), 10) : -1; })()`
)

// TestStatusPageInARealBrowser opens the status page in chromium against
// the real daemon with two vehicles connected: the page lists both, the
// sender's records counter moves while it sends (the other's stays 0),
// the records/s chart gets drawn, the VIN filter keeps the matching
// vehicle, and a vehicle that disconnects leaves the table. The page runs
// under its Content-Security-Policy without a console error. A screenshot
// of the page is kept in the test's temp dir (its path is logged), and
// also written to $FT_STATUS_SCREENSHOT when that is set (how
// docs/status-page.png was made).
func TestStatusPageInARealBrowser(t *testing.T) {
	ctx := newBrowser(t)
	var consoleMu sync.Mutex
	var consoleErrs []string
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleException || m.Type == "error" || m.Type == "warning" {
				consoleMu.Lock()
				consoleErrs = append(consoleErrs, fmt.Sprintf("%s: %s (%s:%d)", m.Type, m.Text, m.URL, m.Line))
				consoleMu.Unlock()
			}
		}
	}()

	dir := t.TempDir()
	configPath, certs := writeConfig(t, dir)
	d := startDaemon(t, configPath)
	defer d.stop(t)
	page := "http://" + metricsAddr(t, d.logText()) + "/?refresh=500"

	a := e2e.Dial(t, d.addr, certs, vins[0])
	b := e2e.Dial(t, d.addr, certs, vins[1])

	browserDo(t, ctx, 30*time.Second, "open "+page, chromedp.Navigate(page))
	both := strings.Join([]string{vins[0], vins[1]}, ",")
	waitPage(t, ctx, "both vehicles", jsRowVINs+` === "`+both+`"`)
	if title := browserEval[string](t, ctx, `document.title`); title != "fleet-telemetry status" {
		t.Errorf("title %q", title)
	}

	// A sends, one record every 50 ms, each acked before the next.
	stop := make(chan struct{})
	sent := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				sent <- nil
				return
			case <-time.After(50 * time.Millisecond):
			}
			m := newRecord(vins[0], "V", fmt.Sprintf("page-%d", i))
			if err := a.Send(m); err != nil {
				sent <- err
				return
			}
			if r, err := a.ReadReply(10 * time.Second); err != nil || !r.Ack {
				sent <- fmt.Errorf("record %d: %+v %v", i, r, err)
				return
			}
		}
	}()
	recordsA := fmt.Sprintf(jsRecordsFmt, vins[0])
	recordsB := fmt.Sprintf(jsRecordsFmt, vins[1])
	waitPage(t, ctx, "records from the sender", recordsA+` > 0`)
	first := browserEval[int](t, ctx, recordsA)
	waitPage(t, ctx, "the sender's records counter moving", fmt.Sprintf(`%s > %d`, recordsA, first))
	if n := browserEval[int](t, ctx, recordsB); n != 0 {
		t.Errorf("the silent vehicle shows %d records", n)
	}
	waitPage(t, ctx, "a records/s figure", `parseFloat(document.getElementById('rps').textContent.replace(/,/g, '')) > 0`)
	waitPage(t, ctx, "the records/s chart", `(function () {
		var p = document.querySelector('#chart-rps path.series');
		return !!p && p.getAttribute('d').split('L').length >= 3;
	})()`)
	waitPage(t, ctx, "the lanes", `document.querySelectorAll('#lanes tbody tr[data-lane]').length === 4`)

	// The VIN filter, with part of B's VIN in lower case.
	browserDo(t, ctx, 10*time.Second, "type a filter", chromedp.SendKeys(chromedp.CSS("#vin-filter"), strings.ToLower(vins[1][11:])))
	waitPage(t, ctx, "only the filtered vehicle", jsRowVINs+` === "`+vins[1]+`"`)
	browserEval[bool](t, ctx, `(function () { var f = document.getElementById('vin-filter'); f.value = ''; f.dispatchEvent(new Event('input')); return true; })()`)
	waitPage(t, ctx, "both vehicles again", jsRowVINs+` === "`+both+`"`)

	// The screenshot: both vehicles listed, one sending, the chart drawn
	// (for the README's, over a longer stretch).
	if os.Getenv("FT_STATUS_SCREENSHOT") != "" {
		time.Sleep(20 * time.Second)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	shot := filepath.Join(t.TempDir(), "status-page.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the status page: %s (%d bytes)", shot, len(png))
	if out := os.Getenv("FT_STATUS_SCREENSHOT"); out != "" {
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot copied to %s", out)
	}

	close(stop)
	if err := <-sent; err != nil {
		t.Fatalf("sending: %v", err)
	}
	// B disconnects: it leaves the table, A stays.
	b.Close()
	waitPage(t, ctx, "the vehicle that left gone", jsRowVINs+` === "`+vins[0]+`"`)
	waitPage(t, ctx, "one vehicle connected", `document.getElementById('vehicles').textContent === "1"`)
	if msg := browserEval[string](t, ctx, `document.getElementById('error').textContent`); msg != "" {
		t.Errorf("the page shows an error: %q", msg)
	}
	consoleMu.Lock()
	defer consoleMu.Unlock()
	for _, m := range consoleErrs {
		t.Errorf("browser console: %s", m)
	}
}

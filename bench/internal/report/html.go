package report

import (
	"fmt"
	"html"
	"math"
	"os"
	"strings"
)

// series is one line of a chart.
type series struct {
	name  string
	color string
	ys    []float64
}

const (
	chartW, chartH = 640.0, 240.0
	padL, padR     = 70.0, 20.0
	padT, padB     = 30.0, 40.0
)

// niceMax rounds v up to 1, 2 or 5 times a power of ten.
func niceMax(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func fmtNum(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.3gk", v/1e3)
	}
	return fmt.Sprintf("%.4g", v)
}

// lineChart draws series over xs (seconds) as an inline SVG.
func lineChart(title, yLabel string, xs []float64, ss []series) string {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`, chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<text x="%.0f" y="18" font-size="14" font-weight="bold">%s</text>`, padL, html.EscapeString(title))
	xMax, yMax := 1.0, 0.0
	for _, x := range xs {
		xMax = math.Max(xMax, x)
	}
	for _, s := range ss {
		for _, y := range s.ys {
			yMax = math.Max(yMax, y)
		}
	}
	yMax = niceMax(yMax)
	pw, ph := chartW-padL-padR, chartH-padT-padB
	px := func(x float64) float64 { return padL + x/xMax*pw }
	py := func(y float64) float64 { return padT + ph - y/yMax*ph }
	for i := 0; i <= 4; i++ {
		y := yMax * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`, padL, py(y), padL+pw, py(y))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="end">%s</text>`, padL-4, py(y)+4, fmtNum(y))
	}
	for i := 0; i <= 5; i++ {
		x := xMax * float64(i) / 5
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%.0fs</text>`, px(x), padT+ph+16, x)
	}
	fmt.Fprintf(&b, `<text x="14" y="%.1f" font-size="11" transform="rotate(-90 14 %.1f)" text-anchor="middle">%s</text>`, padT+ph/2, padT+ph/2, html.EscapeString(yLabel))
	fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#888"/>`, padL, padT, pw, ph)
	for k, s := range ss {
		var pts []string
		for i, y := range s.ys {
			if i < len(xs) {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(xs[i]), py(y)))
			}
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, s.color, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" fill="%s">%s</text>`, padL+pw-150, padT+14+float64(k)*14, s.color, html.EscapeString(s.name))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// histChart draws a latency histogram with a log-scaled x axis: the
// buckets are merged into bins of a quarter octave.
func histChart(title string, l *Latency) string {
	if l == nil || len(l.Buckets) == 0 {
		return ""
	}
	lo := math.Max(l.Buckets[0].LoUs, 1)
	hi := math.Max(l.Buckets[len(l.Buckets)-1].HiUs, lo*2)
	lmin, lmax := math.Floor(math.Log2(lo)*4)/4, math.Ceil(math.Log2(hi)*4)/4
	nbins := int(math.Round((lmax-lmin)*4)) + 1
	bins := make([]float64, nbins)
	for _, bk := range l.Buckets {
		mid := math.Max((bk.LoUs+bk.HiUs)/2, 1)
		i := int((math.Log2(mid) - lmin) * 4)
		i = max(0, min(nbins-1, i))
		bins[i] += float64(bk.Count)
	}
	maxC := 0.0
	for _, c := range bins {
		maxC = math.Max(maxC, c)
	}
	maxC = niceMax(maxC)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f">`, chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<text x="%.0f" y="18" font-size="14" font-weight="bold">%s</text>`, padL, html.EscapeString(title))
	pw, ph := chartW-padL-padR, chartH-padT-padB
	bw := pw / float64(nbins)
	for i := 0; i <= 4; i++ {
		c := maxC * float64(i) / 4
		y := padT + ph - c/maxC*ph
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`, padL, y, padL+pw, y)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="end">%s</text>`, padL-4, y+4, fmtNum(c))
	}
	for i, c := range bins {
		h := c / maxC * ph
		from := math.Pow(2, lmin+float64(i)/4)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#4a7fb5"><title>%s–%s µs: %.0f</title></rect>`,
			padL+float64(i)*bw, padT+ph-h, math.Max(bw-1, 1), h, fmtNum(from), fmtNum(from*math.Pow(2, 0.25)), c)
		if i%4 == 0 {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%s</text>`, padL+float64(i)*bw, padT+ph+16, fmtNum(from))
		}
	}
	for _, q := range []struct {
		name string
		v    float64
	}{{"p50", l.P50Us}, {"p99", l.P99Us}, {"p99.9", l.P999Us}} {
		if q.v <= 0 {
			continue
		}
		x := padL + (math.Log2(q.v)-lmin)*4*bw
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#c33" stroke-dasharray="3,3"/><text x="%.1f" y="%.1f" font-size="10" fill="#c33">%s</text>`,
			x, padT, x, padT+ph, x+2, padT+10, q.name)
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="11" text-anchor="middle">ack latency µs (log scale)</text>`, padL+pw/2, chartH-6)
	fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#888"/>`, padL, padT, pw, ph)
	b.WriteString(`</svg>`)
	return b.String()
}

// WriteHTML writes a self-contained page: no scripts, no external assets.
func WriteHTML(path string, r *Run) error {
	var b strings.Builder
	b.WriteString(`<!DOCTYPE html><html><head><meta charset="utf-8"><title>fleet-telemetry bench</title><style>
body{font-family:sans-serif;margin:2em;color:#222} table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} th{background:#eee} pre{background:#f6f6f6;padding:8px;white-space:pre-wrap}
.bad{color:#b00;font-weight:bold} .ok{color:#070;font-weight:bold} svg{margin:4px;border:1px solid #eee}
</style></head><body><h1>fleet-telemetry load test</h1>`)
	fmt.Fprintf(&b, "<p>%s on %s</p><pre>%s</pre>", r.Started.Format("2006-01-02 15:04:05 MST"), html.EscapeString(r.Host), html.EscapeString(r.Command))
	if r.Note != "" {
		fmt.Fprintf(&b, "<p>%s</p>", html.EscapeString(r.Note))
	}
	var tb strings.Builder
	Table(&tb, r)
	fmt.Fprintf(&b, "<h2>Summary</h2><pre>%s</pre>", html.EscapeString(tb.String()))
	for _, x := range r.Results {
		status := `<span class="ok">OK</span>`
		if !x.OK {
			status = `<span class="bad">FAILED</span>`
		}
		fmt.Fprintf(&b, "<h2>%s %s</h2><p>%s</p>", html.EscapeString(x.Scenario), status, html.EscapeString(params(x.Params)))
		b.WriteString("<table><tr><th>figure</th><th>value</th></tr>")
		row := func(k, v string) { fmt.Fprintf(&b, "<tr><td style='text-align:left'>%s</td><td>%s</td></tr>", k, v) }
		row("measured seconds", f1(x.MeasuredSeconds))
		row("connections", fmt.Sprint(x.Conns))
		row("records acked", fmt.Sprint(x.Acked))
		row("acked / s", f1(x.AckedPerSec))
		if l := x.Latency; l != nil && l.Count > 0 {
			row("ack latency p50 / p90 / p99 / p99.9 / max µs", fmt.Sprintf("%s / %s / %s / %s / %s", f1(l.P50Us), f1(l.P90Us), f1(l.P99Us), f1(l.P999Us), f1(l.MaxUs)))
		}
		if f := x.DiskFloor; f != nil && f.Count > 0 {
			row("disk floor: write + fdatasync p50 / p99 / p99.9 µs (spool file system, before and after the window)", fmt.Sprintf("%s / %s / %s", f1(f.P50Us), f1(f.P99Us), f1(f.P999Us)))
			if l := x.Latency; l != nil && l.Count > 0 && f.P99Us > 0 && f.P999Us > 0 {
				row("ack latency p99 / p99.9 as multiples of the floor's", fmt.Sprintf("%.2f× / %.2f×", l.P99Us/f.P99Us, l.P999Us/f.P999Us))
			}
		}
		if x.HandshakesPerSec > 0 {
			row("handshakes / s", f1(x.HandshakesPerSec))
			row("server CPU µs per connection", f1(x.ServerCPUUsPerHandshake))
		}
		row("server CPU µs per record", f1(x.ServerCPUUsPerRecord))
		row("server CPU %", f1(x.ServerCPUPct))
		row("server threads waiting for a CPU, % of the window", f1(x.ServerWaitPct))
		row("server RSS KiB (before → end)", fmt.Sprintf("%d → %d", x.ServerRSSBaseKiB, x.ServerRSSKiB))
		row("server RSS KiB per connection", f1(x.ServerRSSPerConnKiB))
		row("bench RSS KiB per connection", f1(x.BenchRSSPerConnKiB))
		row("bench CPU %", f1(x.BenchCPUPct))
		row("bench threads waiting for a CPU, % of the window", f1(x.BenchWaitPct))
		row("error replies / mismatches / unexpected / missing / conn errors", fmt.Sprintf("%d / %d / %d / %d / %d", x.ErrorReplies, x.Mismatches, x.Unexpected, x.Missing, x.ConnErrors))
		b.WriteString("</table>")
		for _, f := range x.Failures {
			fmt.Fprintf(&b, `<div class="bad">%s</div>`, html.EscapeString(f))
		}
		b.WriteString("<div>")
		b.WriteString(histChart("ack latency histogram", x.Latency))
		if len(x.Samples) > 0 {
			var ts, acked, p99, srss, brss, conns, scpu, bcpu []float64
			for _, s := range x.Samples {
				ts = append(ts, s.T)
				acked = append(acked, s.AckedPerSec)
				p99 = append(p99, s.P99Us)
				srss = append(srss, float64(s.ServerRSSKiB)/1024)
				brss = append(brss, float64(s.BenchRSSKiB)/1024)
				conns = append(conns, float64(s.Conns))
				scpu = append(scpu, s.ServerCPUPct)
				bcpu = append(bcpu, s.BenchCPUPct)
			}
			b.WriteString(lineChart("throughput", "records acked / s", ts, []series{{"acked/s", "#2a6", acked}}))
			b.WriteString(lineChart("memory", "RSS MiB", ts, []series{{"server RSS", "#c33", srss}, {"bench RSS", "#36c", brss}}))
			b.WriteString(lineChart("connections", "open connections", ts, []series{{"connections", "#555", conns}}))
			b.WriteString(lineChart("CPU", "% of one core", ts, []series{{"server", "#c33", scpu}, {"bench", "#36c", bcpu}}))
			b.WriteString(lineChart("p99 ack latency per second", "µs", ts, []series{{"p99", "#a5a", p99}}))
		}
		b.WriteString("</div>")
	}
	b.WriteString("</body></html>\n")
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

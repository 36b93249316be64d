// Package statsd reads the process's VictoriaMetrics/metrics registry as
// typed families and (a) pushes them to a StatsD server every flush period,
// (b) writes them in a Prometheus text exposition that `promtool check
// metrics` accepts: every family gets HELP text and a TYPE its name agrees
// with, and VictoriaMetrics' vmrange histograms become cumulative `le`
// buckets.
package statsd

import (
	"bufio"
	"bytes"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/VictoriaMetrics/metrics"
)

// Family is one metric family of the registry.
type Family struct {
	// Name is the family name (for histograms and summaries, without the
	// _bucket/_sum/_count suffixes).
	Name string
	// Type is what the registry says: counter, gauge, histogram, summary
	// or untyped.
	Type    string
	Samples []Sample
}

// Sample is one series.
type Sample struct {
	// Name is the series name: the family name plus any suffix.
	Name string
	// Labels are the series' labels as written, braces included ("" if
	// none).
	Labels string
	Value  float64
}

// Gather reads the default registry (and the Go runtime and process
// metrics when process is set).
func Gather(process bool) []Family {
	metrics.ExposeMetadata(true)
	var b bytes.Buffer
	metrics.WritePrometheus(&b, process)
	return Parse(b.Bytes())
}

// Parse reads Prometheus text as VictoriaMetrics/metrics writes it.
func Parse(text []byte) []Family {
	var fams []Family
	var cur *Family
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			f := strings.Fields(line)
			if len(f) >= 4 && f[1] == "TYPE" {
				fams = append(fams, Family{Name: f[2], Type: f[3]})
				cur = &fams[len(fams)-1]
			}
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		series := strings.TrimSpace(line[:sp])
		name, labels := series, ""
		if i := strings.IndexByte(series, '{'); i >= 0 {
			name, labels = series[:i], series[i:]
		}
		if cur == nil || !belongs(name, cur) {
			fams = append(fams, Family{Name: name, Type: "untyped"})
			cur = &fams[len(fams)-1]
		}
		cur.Samples = append(cur.Samples, Sample{Name: name, Labels: labels, Value: v})
	}
	for i := range fams {
		if isVMHistogram(fams[i]) {
			fams[i].Type = "histogram" // VictoriaMetrics declares them untyped
		}
	}
	return fams
}

func belongs(name string, f *Family) bool {
	if name == f.Name {
		return true
	}
	rest, ok := strings.CutPrefix(name, f.Name)
	return ok && (rest == "_bucket" || rest == "_sum" || rest == "_count")
}

// WriteExposition writes the default registry (with the Go runtime and
// process metrics) for a Prometheus scrape. help gives a family's HELP
// text; an empty answer gets a generic one.
func WriteExposition(w io.Writer, help func(name string) string) error {
	return WriteFamilies(w, Gather(true), help)
}

// WriteFamilies writes families in the text format, lint-clean.
func WriteFamilies(w io.Writer, fams []Family, help func(name string) string) error {
	bw := bufio.NewWriter(w)
	seen := map[string]bool{}
	for _, f := range fams {
		if len(f.Samples) == 0 || seen[f.Name] {
			continue
		}
		seen[f.Name] = true
		typ, samples := f.Type, f.Samples
		if isVMHistogram(f) {
			typ, samples = "histogram", leBuckets(f)
		}
		typ = lintType(f.Name, typ)
		h := ""
		if help != nil {
			h = help(f.Name)
		}
		if h == "" {
			h = genericHelp(f.Name, typ)
		}
		bw.WriteString("# HELP " + f.Name + " " + escapeHelp(h) + "\n")
		bw.WriteString("# TYPE " + f.Name + " " + typ + "\n")
		for _, s := range samples {
			bw.WriteString(s.Name)
			bw.WriteString(s.Labels)
			bw.WriteByte(' ')
			bw.WriteString(formatValue(s.Value))
			bw.WriteByte('\n')
		}
	}
	return bw.Flush()
}

// lintType is the TYPE to declare so that the name and the type agree the
// way promtool's linter wants: a counter must end in _total, only
// histograms and summaries may end in _count/_sum/_bucket, and only
// counters in _total. Families whose name (kept for compatibility) breaks
// one of these are declared untyped, which Prometheus stores the same way.
func lintType(name, typ string) string {
	total := strings.HasSuffix(name, "_total")
	reserved := strings.HasSuffix(name, "_count") || strings.HasSuffix(name, "_sum") || strings.HasSuffix(name, "_bucket")
	switch typ {
	case "counter":
		if !total || reserved {
			return "untyped"
		}
	case "gauge":
		if total || reserved {
			return "untyped"
		}
	case "histogram", "summary":
		if total || reserved {
			return "untyped"
		}
	default:
		return "untyped"
	}
	return typ
}

func genericHelp(name, typ string) string {
	switch {
	case strings.HasPrefix(name, "go_"):
		return "Go runtime metric " + name + "."
	case strings.HasPrefix(name, "process_"):
		return "Process metric " + name + "."
	}
	return "fleet-telemetry " + typ + " " + name + "."
}

func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

func formatValue(v float64) string {
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// isVMHistogram tells a VictoriaMetrics histogram: buckets by vmrange.
func isVMHistogram(f Family) bool {
	for _, s := range f.Samples {
		if s.Name == f.Name+"_bucket" && strings.Contains(s.Labels, `vmrange="`) {
			return true
		}
	}
	return false
}

// leBuckets turns vmrange buckets (per-range counts) into cumulative le
// buckets, one set per label set, each closed by le="+Inf" = _count.
func leBuckets(f Family) []Sample {
	type bucket struct {
		upper string
		ub    float64
		n     float64
	}
	type group struct {
		buckets    []bucket
		sum, count *Sample
	}
	groups := map[string]*group{}
	var order []string
	get := func(rest string) *group {
		g := groups[rest]
		if g == nil {
			g = &group{}
			groups[rest] = g
			order = append(order, rest)
		}
		return g
	}
	for i := range f.Samples {
		s := &f.Samples[i]
		switch s.Name {
		case f.Name + "_bucket":
			pairs := parseLabels(s.Labels)
			var vr string
			var rest []labelPair
			for _, p := range pairs {
				if p.name == "vmrange" {
					vr = p.value
				} else {
					rest = append(rest, p)
				}
			}
			_, upper, ok := strings.Cut(vr, "...")
			if !ok {
				continue
			}
			ub, err := strconv.ParseFloat(upper, 64)
			if err != nil {
				continue
			}
			g := get(formatLabels(rest))
			g.buckets = append(g.buckets, bucket{upper: upper, ub: ub, n: s.Value})
		case f.Name + "_sum":
			get(s.Labels).sum = s
		case f.Name + "_count":
			get(s.Labels).count = s
		}
	}
	var out []Sample
	for _, rest := range order {
		g := groups[rest]
		sort.Slice(g.buckets, func(i, j int) bool { return g.buckets[i].ub < g.buckets[j].ub })
		cum := 0.0
		for _, b := range g.buckets {
			cum += b.n
			if strings.HasPrefix(b.upper, "+Inf") || strings.EqualFold(b.upper, "inf") {
				continue
			}
			out = append(out, Sample{Name: f.Name + "_bucket", Labels: withLabel(rest, "le", b.upper), Value: cum})
		}
		total := cum
		if g.count != nil {
			total = g.count.Value
		}
		out = append(out, Sample{Name: f.Name + "_bucket", Labels: withLabel(rest, "le", "+Inf"), Value: total})
		if g.sum != nil {
			out = append(out, *g.sum)
		}
		if g.count != nil {
			out = append(out, *g.count)
		}
	}
	return out
}

type labelPair struct{ name, value string }

// parseLabels reads `{a="x",b="y\"z"}`; values stay escaped.
func parseLabels(s string) []labelPair {
	s = strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
	var out []labelPair
	for len(s) > 0 {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return out
		}
		name := strings.TrimSpace(s[:eq])
		i := eq + 2
		for i < len(s) && s[i] != '"' {
			if s[i] == '\\' {
				i++
			}
			i++
		}
		if i > len(s) {
			i = len(s)
		}
		out = append(out, labelPair{name, s[eq+2 : i]})
		s = strings.TrimPrefix(strings.TrimLeft(s[min(i+1, len(s)):], " "), ",")
	}
	return out
}

func formatLabels(ps []labelPair) string {
	if len(ps) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.name + `="` + p.value + `"`)
	}
	b.WriteByte('}')
	return b.String()
}

func withLabel(labels, name, value string) string {
	return formatLabels(append(parseLabels(labels), labelPair{name, value}))
}

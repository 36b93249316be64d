// Package metricsexport exports the process's VictoriaMetrics/metrics
// registry: it reads it as typed families (Gather) and writes them as the
// Prometheus text page of /metrics (WriteExposition: lint-clean for
// `promtool check metrics`, every family with HELP text and a TYPE its name
// agrees with, VictoriaMetrics' vmrange histograms as cumulative le
// buckets) and pushes them to a StatsD server (StartStatsd).
package metricsexport

import (
	"bufio"
	"bytes"
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

// isVMHistogram tells a VictoriaMetrics histogram: buckets by vmrange.
func isVMHistogram(f Family) bool {
	for _, s := range f.Samples {
		if s.Name == f.Name+"_bucket" && strings.Contains(s.Labels, `vmrange="`) {
			return true
		}
	}
	return false
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

// unescape undoes a label value's escapes.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	return strings.NewReplacer(`\\`, `\`, `\"`, `"`, `\n`, "\n").Replace(s)
}

package metricsexport

import (
	"bufio"
	"io"
	"sort"
	"strconv"
	"strings"
)

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

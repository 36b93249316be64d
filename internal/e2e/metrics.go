package e2e

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// Samples are the series of a Prometheus text page by name as the page
// writes them: `name{label="value",...}` with the labels in the page's
// order (`name` alone without labels). A histogram gives name_bucket{...,
// le="<bound>"}, name_sum and name_count, a summary name{...,
// quantile="<q>"}, name_sum and name_count; bounds and quantiles are
// written as strconv's shortest 'g' form, +Inf as "+Inf".
type Samples map[string]float64

// Sum adds the values of every series of the metric name, whatever their
// labels.
func (s Samples) Sum(name string) float64 {
	var sum float64
	for k, v := range s {
		if k == name || strings.HasPrefix(k, name+"{") {
			sum += v
		}
	}
	return sum
}

// ParseMetrics reads a page in the Prometheus text format with
// prometheus/common's parser: a page it refuses is an error.
func ParseMetrics(r io.Reader) (Samples, error) {
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("metrics page: %w", err)
	}
	out := Samples{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			labels := m.GetLabel()
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[series(name, labels)] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[series(name, labels)] = m.GetGauge().GetValue()
			case dto.MetricType_UNTYPED:
				out[series(name, labels)] = m.GetUntyped().GetValue()
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				for _, q := range s.GetQuantile() {
					out[series(name, labels, "quantile", formatBound(q.GetQuantile()))] = q.GetValue()
				}
				out[series(name+"_sum", labels)] = s.GetSampleSum()
				out[series(name+"_count", labels)] = float64(s.GetSampleCount())
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					out[series(name+"_bucket", labels, "le", formatBound(b.GetUpperBound()))] = float64(b.GetCumulativeCount())
				}
				if inf := series(name+"_bucket", labels, "le", "+Inf"); !has(out, inf) {
					out[inf] = float64(h.GetSampleCount())
				}
				out[series(name+"_sum", labels)] = h.GetSampleSum()
				out[series(name+"_count", labels)] = float64(h.GetSampleCount())
			}
		}
	}
	return out, nil
}

// Scrape fetches url (a /metrics page) and parses it.
func Scrape(url string) (Samples, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	s, err := ParseMetrics(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	return s, nil
}

// MustScrape is Scrape that fails the test on an error or an empty page
// (an empty map would read 0 for every metric and pass checks such as
// skipped_total == 0).
func MustScrape(t TB, url string) Samples {
	t.Helper()
	s, err := Scrape(url)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if len(s) == 0 {
		t.Fatalf("scrape %s: no samples in the page", url)
	}
	return s
}

func has(s Samples, k string) bool { _, ok := s[k]; return ok }

// series writes a series' name and labels (extra are name, value pairs
// put last).
func series(name string, labels []*dto.LabelPair, extra ...string) string {
	if len(labels) == 0 && len(extra) == 0 {
		return name
	}
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	sep := ""
	for _, l := range labels {
		b.WriteString(sep + l.GetName() + `="` + escapeLabel(l.GetValue()) + `"`)
		sep = ","
	}
	for i := 0; i+1 < len(extra); i += 2 {
		b.WriteString(sep + extra[i] + `="` + escapeLabel(extra[i+1]) + `"`)
		sep = ","
	}
	b.WriteByte('}')
	return b.String()
}

// escapeLabel escapes a label value as the text format does.
func escapeLabel(v string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v)
}

func formatBound(v float64) string {
	if math.IsInf(v, +1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

package vehicleconfig

import (
	"sort"
	"strings"
	"sync"

	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

var (
	namesOnce sync.Once
	names     []string // the streamable field names, sorted
)

// FieldNames returns the names a vehicle configuration may stream: the
// Field enum of proto/telemetry/vehicle_data.proto without Unknown and the
// Deprecated_* placeholders, sorted.
func FieldNames() []string {
	namesOnce.Do(func() {
		for name := range pb.Field_value {
			if streamable(name) {
				names = append(names, name)
			}
		}
		sort.Strings(names)
	})
	return names
}

// IsField reports whether name is a field a vehicle can stream (the exact
// spelling: names are case-sensitive).
func IsField(name string) bool {
	_, ok := pb.Field_value[name]
	return ok && streamable(name)
}

// isPlaceholder reports whether name is in the Field enum but not a field
// a vehicle streams (Unknown, Deprecated_*).
func isPlaceholder(name string) bool {
	_, ok := pb.Field_value[name]
	return ok && !streamable(name)
}

func streamable(name string) bool {
	return name != pb.Field_Unknown.String() && !strings.HasPrefix(name, "Deprecated_")
}

// Suggest returns up to n field names close to name, closest first: the
// same name in other letter case, then names within a few edits (the
// allowance grows with the name's length), then, when none is that close,
// names that contain name.
func Suggest(name string, n int) []string {
	lower := strings.ToLower(name)
	limit := max(2, len([]rune(name))/3)
	type scored struct {
		name string
		d    int
	}
	var close []scored
	for _, f := range FieldNames() {
		if d := distance(lower, strings.ToLower(f)); d <= limit {
			close = append(close, scored{f, d})
		}
	}
	sort.SliceStable(close, func(i, j int) bool { return close[i].d < close[j].d })
	var out []string
	for _, s := range close {
		if len(out) == n {
			return out
		}
		out = append(out, s.name)
	}
	if len(out) > 0 || len(lower) < 3 {
		return out
	}
	for _, f := range FieldNames() {
		if len(out) == n {
			break
		}
		if strings.Contains(strings.ToLower(f), lower) {
			out = append(out, f)
		}
	}
	return out
}

// distance is the Levenshtein distance between a and b, in runes.
func distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

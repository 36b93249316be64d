package record

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

// transformLocation turns the first Location datum, when it carries a string
// such as "(37.412374 S, 122.145867 E)", into a location_value with south
// and west negative. Like the reference it stops at the first Location datum
// and leaves a string it cannot parse as it is.
func transformLocation(m *pb.Payload) {
	for _, d := range m.Data {
		if d.GetKey() != pb.Field_Location {
			continue
		}
		if s := d.GetValue().GetStringValue(); s != "" {
			if loc, ok := parseLocation(s); ok {
				d.Value = &pb.Value{Value: &pb.Value_LocationValue{LocationValue: loc}}
			}
		}
		return
	}
}

// parseLocation reads "(<lat> <N|S>, <lon> <E|W>)". fmt.Sscanf with this
// exact format is used because it is what defines the accepted strings (its
// float syntax, its space handling, and ignoring trailing text).
func parseLocation(s string) (*pb.LocationValue, bool) {
	var lat, lon float64
	var latQ, lonQ string
	n, err := fmt.Sscanf(s, "(%f %1s, %f %1s)", &lat, &latQ, &lon, &lonQ)
	if err != nil || n != 4 || !strings.Contains("NS", latQ) || !strings.Contains("EW", lonQ) {
		return nil, false
	}
	if latQ == "S" {
		lat = -lat
	}
	if lonQ == "W" {
		lon = -lon
	}
	return &pb.LocationValue{Latitude: lat, Longitude: lon}, true
}

// transformScientificNotation rewrites string values written in scientific
// notation with a decimal point ("-2.5E+2") as fixed decimals with five
// places ("-250.00000"), parsed at float32 precision as the reference does.
// Strings without a decimal point ("1e-3") or out of float32 range stay.
func transformScientificNotation(m *pb.Payload) {
	for _, d := range m.Data {
		s := d.GetValue().GetStringValue()
		if s == "" || !isScientific(s) {
			continue
		}
		f, err := strconv.ParseFloat(s, 32)
		if err != nil {
			continue
		}
		d.Value = &pb.Value{Value: &pb.Value_StringValue{StringValue: strconv.FormatFloat(f, 'f', 5, 64)}}
	}
}

// isScientific matches ^[+-]?(\d*\.\d+|\d+\.\d*)[eE][+-]?\d+$ (ASCII digits):
// a mantissa with a decimal point and at least one digit, then an exponent.
func isScientific[T string | []byte](s T) bool {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	intDigits := digits(s[i:])
	i += intDigits
	if i >= len(s) || s[i] != '.' {
		return false
	}
	i++
	fracDigits := digits(s[i:])
	i += fracDigits
	if intDigits+fracDigits == 0 || i >= len(s) || (s[i] != 'e' && s[i] != 'E') {
		return false
	}
	i++
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	expDigits := digits(s[i:])
	return expDigits > 0 && i+expDigits == len(s)
}

// digits counts the leading ASCII digits of s.
func digits[T string | []byte](s T) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}

// maxDurationSeconds is the largest seconds value a protobuf Duration may
// hold (10,000 years). Alert timestamps with at least this many "seconds"
// are really epoch milliseconds sent in the seconds field; the reference
// uses this bound to tell them apart.
const maxDurationSeconds = 315_576_000_000

// normaliseAlertTime reinterprets a seconds field holding epoch milliseconds
// (any nanos are dropped, as the reference does); other values are kept.
func normaliseAlertTime(ts *timestamppb.Timestamp) *timestamppb.Timestamp {
	if ts == nil || ts.GetSeconds() < maxDurationSeconds {
		return ts
	}
	return timestamppb.New(time.UnixMilli(ts.GetSeconds()))
}

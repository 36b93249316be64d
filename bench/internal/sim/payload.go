package sim

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/pb"
)

// PayloadSpec shapes V records.
type PayloadSpec struct {
	// MinDatums and MaxDatums bound the datums per record (each record
	// picks uniformly in between).
	MinDatums, MaxDatums int
	// Bytes, when > 0, pads (or trims string datums of) each V payload to
	// about this many bytes.
	Bytes int
	// AlertsPct and ErrorsPct are the percentages of records sent as
	// alerts and errors records instead of V.
	AlertsPct, ErrorsPct float64
}

// Record is one pre-built payload and its topic.
type Record struct {
	Topic   string
	Payload []byte
}

// Corpus is a set of pre-built payloads that connections cycle through, so
// building records costs the bench almost nothing per send.
type Corpus struct {
	V, Alerts, Errors []Record
	spec              PayloadSpec
	// MeanVBytes is the average V payload size.
	MeanVBytes int
}

// NewCorpus builds n V payloads plus a few alerts and errors payloads.
func NewCorpus(spec PayloadSpec, n int, seed uint64) *Corpus {
	rng := rand.New(rand.NewPCG(seed, 7))
	if spec.MinDatums <= 0 {
		spec.MinDatums = 20
	}
	if spec.MaxDatums < spec.MinDatums {
		spec.MaxDatums = spec.MinDatums
	}
	c := &Corpus{spec: spec}
	now := time.Now()
	total := 0
	for range n {
		d := spec.MinDatums + rng.IntN(spec.MaxDatums-spec.MinDatums+1)
		p := payloadV(rng, "5YJBENCH000000000", d, now, spec.Bytes)
		total += len(p)
		c.V = append(c.V, Record{Topic: "V", Payload: p})
	}
	c.MeanVBytes = total / n
	for range 8 {
		c.Alerts = append(c.Alerts, Record{Topic: "alerts", Payload: vehicle.PayloadAlerts("5YJBENCH000000000", now)})
		c.Errors = append(c.Errors, Record{Topic: "errors", Payload: vehicle.PayloadErrors("5YJBENCH000000000", now)})
	}
	return c
}

// Pick chooses the next record for a connection.
func (c *Corpus) Pick(rng *rand.Rand) Record {
	if c.spec.AlertsPct > 0 || c.spec.ErrorsPct > 0 {
		x := rng.Float64() * 100
		switch {
		case x < c.spec.AlertsPct:
			return c.Alerts[rng.IntN(len(c.Alerts))]
		case x < c.spec.AlertsPct+c.spec.ErrorsPct:
			return c.Errors[rng.IntN(len(c.Errors))]
		}
	}
	return c.V[rng.IntN(len(c.V))]
}

// payloadV is vehicle.NewPayloadV (datums cycling through string, int,
// long, float, double, bool, location and enum values) with, for size > 0,
// the string datums padded so the encoding is about size bytes.
func payloadV(rng *rand.Rand, vin string, datums int, createdAt time.Time, size int) []byte {
	p := vehicle.NewPayloadV(rng, vin, datums, createdAt)
	var strs []*pb.Value_StringValue
	for _, d := range p.Data {
		if sv, ok := d.GetValue().GetValue().(*pb.Value_StringValue); ok {
			strs = append(strs, sv)
		}
	}
	if size > 0 && len(strs) > 0 {
		// Grow the string datums evenly until the size is reached; a
		// length prefix may grow by a byte, so iterate a few times.
		for range 4 {
			short := size - p.SizeVT()
			if short <= 0 {
				break
			}
			per := (short + len(strs) - 1) / len(strs)
			for _, sv := range strs {
				sv.StringValue += strings.Repeat("x", per)
			}
			if p.SizeVT() > size {
				// Trim the last string back to the target.
				over := p.SizeVT() - size
				last := strs[len(strs)-1]
				if over < len(last.StringValue) {
					last.StringValue = last.StringValue[:len(last.StringValue)-over]
				}
			}
		}
	}
	b, err := p.MarshalVT()
	if err != nil {
		panic(fmt.Sprintf("sim: marshal a payload we built: %v", err))
	}
	return b
}

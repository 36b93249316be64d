package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicleconfig"
)

const vehicleConfigUsage = `usage: fleet-telemetry vehicle-config -hostname H [-port 443] -ca FILE -fields Field:seconds,... [-alert-types service] [-exp UNIX]
       fleet-telemetry vehicle-config -check FILE
       fleet-telemetry vehicle-config -list-fields

Prints a vehicle configuration: the JSON that tells a vehicle (through the
Fleet API's fleet_telemetry_config) where to stream and what. It holds the
hostname and port vehicles connect to, ca (the PEM text of the CA
certificates of -ca, which must include the one the server's certificate
chain ends at), the fields to stream with an interval in seconds each, the
alert audiences to push (the reference server recommends "service" only)
and, with -exp, when the configuration expires (Unix seconds).

Field names are the Field enum's in proto/telemetry/vehicle_data.proto
(-list-fields prints them, one a line); a name that is not one is an error
naming the closest ones. Nothing is printed on stdout unless the whole
configuration is valid; problems go to stderr (exit 1), warnings too
(they do not fail).

-check reads an existing configuration file and names every problem:
unknown field names, intervals that are not whole seconds of 1 or more, a
missing or malformed hostname, a port out of range, a ca that is not PEM
certificates or holds one that expired, an exp in the past. It prints
"vehicle configuration ok" and exits 0, or lists the problems on stderr
and exits 1 (2: a usage error).

Then check the server as a vehicle would:
  fleet-telemetry check-server -config FILE
`

// vehicleConfig implements `fleet-telemetry vehicle-config`.
func vehicleConfig(args []string) int {
	c := newCLI("vehicle-config", vehicleConfigUsage)
	hostname := c.String("hostname", "", "the name vehicles connect to (the server certificate must carry it)")
	port := c.Int("port", vehicleconfig.DefaultPort, "the port vehicles connect to")
	caFile := c.String("ca", "", "PEM file of the CA certificate(s) vehicles trust for the server")
	fields := c.String("fields", "", "fields to stream, comma-separated Name:seconds (VehicleSpeed:10,Location:30)")
	alertTypes := c.String("alert-types", "", "comma-separated alert audiences to push (service)")
	exp := c.Int64("exp", 0, "when the configuration expires, Unix seconds (default: not set)")
	check := c.String("check", "", "check this vehicle configuration file instead of making one")
	listFields := c.Bool("list-fields", false, "print the field names a configuration may stream")
	if code, done := c.parseFlags(args, true); done {
		return code
	}
	var building []string
	c.Visit(func(f *flag.Flag) {
		if f.Name != "check" && f.Name != "list-fields" {
			building = append(building, "-"+f.Name)
		}
	})
	switch {
	case *listFields && (*check != "" || len(building) > 0):
		return c.usageError("-list-fields takes no other flag")
	case *listFields:
		for _, n := range vehicleconfig.FieldNames() {
			fmt.Println(n)
		}
		return 0
	case *check != "" && len(building) > 0:
		return c.usageError(fmt.Sprintf("-check takes no other flag, got %s", strings.Join(building, " ")))
	case *check != "":
		data, err := os.ReadFile(*check)
		if err != nil {
			fmt.Fprintf(os.Stderr, "fleet-telemetry vehicle-config: %v\n", err)
			return 1
		}
		return printVehicleReport(*check, vehicleconfig.Check(data, time.Time{}), func() { fmt.Println("vehicle configuration ok") })
	case len(building) == 0:
		return c.usageError("give -hostname, -ca and -fields to make a configuration, or -check FILE to check one")
	}
	o := vehicleconfig.Options{Hostname: *hostname, Port: *port, Fields: *fields, Exp: *exp}
	if *alertTypes != "" {
		o.AlertTypes = splitList(*alertTypes)
	}
	if *caFile != "" {
		b, err := os.ReadFile(*caFile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "fleet-telemetry vehicle-config: -ca: %v\n", err)
			return 1
		}
		o.CAPEM = b
	}
	out, report := vehicleconfig.Build(o)
	return printVehicleReport("the vehicle configuration", report, func() { os.Stdout.Write(out) })
}

// printVehicleReport prints a check's warnings and problems on stderr, or
// calls ok when there is no problem; it returns the exit code.
func printVehicleReport(name string, r vehicleconfig.Report, ok func()) int {
	for _, w := range r.Warnings {
		fmt.Fprintf(os.Stderr, "warning: %s\n", w)
	}
	if !r.OK() {
		fmt.Fprintf(os.Stderr, "fleet-telemetry vehicle-config: %s: %d problem(s):\n", name, len(r.Problems))
		for _, p := range r.Problems {
			fmt.Fprintf(os.Stderr, "  %s\n", p)
		}
		return 1
	}
	ok()
	return 0
}

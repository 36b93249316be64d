package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
)

const certsUsage = `usage: fleet-telemetry certs dev DIR [-vins A,B]

Writes a development CA, a server certificate for 127.0.0.1 and localhost,
and a client certificate per VIN into DIR. Files already there are kept, so
running it again only adds what is missing.
`

// certs implements `fleet-telemetry certs dev DIR [-vins A,B]`.
func certs(args []string) int {
	c := newCLI("certs dev", certsUsage)
	vins := c.String("vins", strings.Join(devca.DefaultVINs, ","), "comma-separated VINs to issue client certificates for")
	switch {
	case len(args) > 0 && isHelp(args[0]):
		c.printUsage(os.Stdout)
		return 0
	case len(args) == 0:
		return c.usageError("no certs command: the one there is is dev")
	case args[0] != "dev":
		return c.usageError(fmt.Sprintf("unknown certs command %q", args[0]))
	}
	pos, code, done := c.parse(args[1:], true)
	if done {
		return code
	}
	if len(pos) != 1 {
		return c.usageError("give one directory")
	}
	dir := pos[0]
	list := splitList(*vins)
	if _, err := devca.WriteDir(dir, list); err != nil {
		fmt.Fprintf(os.Stderr, "fleet-telemetry: %v\n", err)
		return 1
	}
	fmt.Printf("dev certificates in %s: CA %s, server %s, vehicles %s\n", dir, devca.CACertFile, devca.ServerCertFile, strings.Join(list, ", "))
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

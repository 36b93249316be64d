package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
)

// certs implements `fleet-telemetry certs dev DIR [-vins A,B]`.
func certs(args []string) int {
	if len(args) < 2 || args[0] != "dev" {
		fmt.Fprint(os.Stderr, "usage: fleet-telemetry certs dev DIR [-vins A,B]\n")
		return 2
	}
	dir := args[1]
	fs := flag.NewFlagSet("certs dev", flag.ContinueOnError)
	vins := fs.String("vins", strings.Join(devca.DefaultVINs, ","), "comma-separated VINs to issue client certificates for")
	if err := fs.Parse(args[2:]); err != nil {
		return 2
	}
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

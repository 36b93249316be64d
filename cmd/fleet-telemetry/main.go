// Command fleet-telemetry is the vehicle telemetry ingest daemon and its
// tools.
//
//	fleet-telemetry [serve] -config FILE   run the daemon
//	fleet-telemetry [serve] -dev           run on the embedded dev config
//	fleet-telemetry check-config FILE      check what a start would
//	fleet-telemetry certs dev DIR [-vins A,B]
//	fleet-telemetry send [-addr HOST:PORT] [-certs DIR] [-vin VIN] [-topic V] [-n N]
//	fleet-telemetry spool [-config FILE | -dir DIR | -dev] stats|ls|cat|tail|verify|export|replay ...
//	fleet-telemetry vehicle-config -hostname H -ca FILE -fields F:s,... | -check FILE
//	fleet-telemetry check-server -config VEHICLE-CONFIG | -hostname H -ca FILE
//	fleet-telemetry conns [-vin V] [-json] [-config FILE | -dev | -addr HOST:PORT]
//	fleet-telemetry status [-json] [-config FILE | -dev | -addr HOST:PORT]
//	fleet-telemetry version
//
// Every command and subcommand prints its usage with -h or --help.
package main

import (
	"fmt"
	"os"
)

const usage = `usage:
  fleet-telemetry [serve] -config FILE     run the daemon with a reference-format config
  fleet-telemetry [serve] -dev             run on the embedded dev config (creates ./var/dev-certs)
  fleet-telemetry check-config FILE        check what a start would: settings, TLS files, allowlist, spool directory
  fleet-telemetry certs dev DIR [-vins A,B]
  fleet-telemetry send [-addr 127.0.0.1:4443] [-certs var/dev-certs] [-vin VIN] [-topic V] [-n 1]
  fleet-telemetry spool [-config FILE | -dir DIR | -dev] COMMAND   inspect the spool (stats, ls, cat, tail, verify, export,
                                                                  replay; "spool help" for more)
  fleet-telemetry vehicle-config -hostname H [-port 443] -ca FILE -fields Field:seconds,... [-alert-types service] [-exp UNIX]
                                           print a vehicle configuration (-check FILE checks one)
  fleet-telemetry check-server -config VEHICLE-CONFIG   check the server as a vehicle would (its certificate chain)
  fleet-telemetry conns [-vin V] [-json] [-config FILE | -dev | -addr HOST:PORT]
                                           the vehicles connected to a running daemon (its /connz)
  fleet-telemetry status [-json] [-config FILE | -dev | -addr HOST:PORT]
                                           a running daemon's state: connections, records/s, spool, lanes (its /varz)
  fleet-telemetry version                  the module version, VCS revision and Go version (also -version)

"fleet-telemetry COMMAND -h" prints a command's usage and flags.
`

func main() {
	os.Exit(run(os.Args[1:]))
}

// commands are the subcommands by name; each takes the arguments after
// its name and returns the exit code.
var commands = map[string]func(args []string) int{
	"serve":          serve,
	"check-config":   checkConfig,
	"certs":          certs,
	"send":           send,
	"spool":          spoolCmd,
	"vehicle-config": vehicleConfig,
	"check-server":   checkServer,
	"conns":          conns,
	"status":         status,
	"version":        version,
}

func run(args []string) int {
	if len(args) == 0 {
		return serve(args)
	}
	if cmd, ok := commands[args[0]]; ok {
		return cmd(args[1:])
	}
	if args[0] == "help" || isHelp(args[0]) {
		fmt.Print(usage)
		return 0
	}
	if len(args[0]) > 0 && args[0][0] == '-' {
		return serve(args)
	}
	fmt.Fprintf(os.Stderr, "fleet-telemetry: unknown command %q\n%s", args[0], usage)
	return 2
}

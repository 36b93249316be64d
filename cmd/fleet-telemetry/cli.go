package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/VictoriaMetrics/metrics"
)

// Set by `make build` (-ldflags -X) from git, for builds whose build info
// carries no VCS stamp (a git worktree, or GOFLAGS=-buildvcs=false).
var (
	vcsRevision string
	vcsModified string // "true" when the tree had uncommitted changes
)

// buildInfo is what `version` prints and the daemon logs and exports.
type buildInfo struct {
	Version   string // the module version ("(devel)" for a local build)
	Revision  string // the VCS revision, "unknown" when the build has none
	Modified  bool   // built from a tree with uncommitted changes
	GoVersion string
}

// readBuildInfo reads the binary's build information.
func readBuildInfo() buildInfo {
	b := buildInfo{Version: "unknown", Revision: "unknown", GoVersion: "unknown"}
	if bi, ok := debug.ReadBuildInfo(); ok {
		b.GoVersion = bi.GoVersion
		if bi.Main.Version != "" {
			b.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Revision = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if b.Revision == "unknown" && vcsRevision != "" {
		b.Revision, b.Modified = vcsRevision, vcsModified == "true"
	}
	return b
}

// RevisionString is the revision with "-modified" when the tree had
// uncommitted changes.
func (b buildInfo) RevisionString() string {
	if b.Modified {
		return b.Revision + "-modified"
	}
	return b.Revision
}

func (b buildInfo) String() string {
	return fmt.Sprintf("fleet-telemetry %s (revision %s, %s)", b.Version, b.RevisionString(), b.GoVersion)
}

// registerBuildInfoMetric exports fleet_build_info{version, revision,
// goversion} 1.
func registerBuildInfoMetric(b buildInfo) {
	name := fmt.Sprintf(`fleet_build_info{version="%s",revision="%s",goversion="%s"}`,
		escapeLabel(b.Version), escapeLabel(b.RevisionString()), escapeLabel(b.GoVersion))
	metrics.GetOrCreateGauge(name, func() float64 { return 1 })
}

// escapeLabel escapes a Prometheus label value.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

const versionUsage = `usage: fleet-telemetry version

Prints the module version, the VCS revision the binary was built from and
the Go version that built it (also: fleet-telemetry -version).
`

// version implements `fleet-telemetry version`.
func version(args []string) int {
	c := newCLI("version", versionUsage)
	if code, done := c.parseFlags(args, false); done {
		return code
	}
	fmt.Println(readBuildInfo())
	return 0
}

// cli is a command's flags and usage text. It prints nothing by itself
// while parsing: parse prints the usage to stdout for -h and --help, and
// an error with the usage to stderr.
type cli struct {
	*flag.FlagSet
	usage string // the synopsis and notes; the flags are listed after it
}

func newCLI(name, usage string) *cli {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return &cli{FlagSet: fs, usage: usage}
}

// printUsage writes the usage text and the flags to w.
func (c *cli) printUsage(w io.Writer) {
	fmt.Fprint(w, c.usage)
	n := 0
	c.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		return
	}
	fmt.Fprintln(w, "\nflags:")
	c.SetOutput(w)
	c.PrintDefaults()
	c.SetOutput(io.Discard)
}

// parse parses args. With interspersed, flags may also follow positional
// arguments. It returns the positional arguments; done is true when the
// command must end with code: -h or --help (the usage on stdout, 0) or a
// bad flag (the error and the usage on stderr, 2).
func (c *cli) parse(args []string, interspersed bool) (pos []string, code int, done bool) {
	for {
		err := c.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			c.printUsage(os.Stdout)
			return nil, 0, true
		}
		if err != nil {
			return nil, c.usageError(err.Error()), true
		}
		if !interspersed {
			return c.Args(), 0, false
		}
		args = c.Args()
		if len(args) == 0 {
			return pos, 0, false
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// parseFlags is parse for a command that takes flags only: a positional
// argument is a usage error.
func (c *cli) parseFlags(args []string, interspersed bool) (code int, done bool) {
	pos, code, done := c.parse(args, interspersed)
	if done {
		return code, true
	}
	if len(pos) > 0 {
		return c.usageError(fmt.Sprintf("unexpected argument %q", pos[0])), true
	}
	return 0, false
}

// usageError prints msg and the usage to stderr and returns exit code 2.
func (c *cli) usageError(msg string) int {
	fmt.Fprintf(os.Stderr, "fleet-telemetry %s: %s\n\n", c.Name(), msg)
	c.printUsage(os.Stderr)
	return 2
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}

package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/fleet-telemetry/fleet-telemetry/internal/config"
	"github.com/fleet-telemetry/fleet-telemetry/netloop"
)

const checkConfigUsage = `usage: fleet-telemetry check-config [-syntax-only] FILE
       fleet-telemetry check-config [-syntax-only] -config FILE
       fleet-telemetry check-config -dev

Checks what a start would, without starting anything: the file parses and
every setting is valid; the TLS certificate, key and CA files load; the
vin_allowlist file reads; the spool directory is writable, or can be
created; the directory of monitoring.profiling_path exists. Every problem
is named, not just the first. Prints "configuration ok" and exits 0, or
lists the problems on stderr and exits 1 (2: a usage error).

Files and directories are checked as the user running the command: run it
as the service's user (sudo -u fleet-telemetry fleet-telemetry
check-config ...) to check what the daemon may read and write.
`

// checkConfig implements `fleet-telemetry check-config`.
func checkConfig(args []string) int {
	c := newCLI("check-config", checkConfigUsage)
	configPath := c.String("config", "", "the config file (or give it as the argument)")
	dev := c.Bool("dev", false, "check the embedded dev config (what make run uses), from the directory make run runs in")
	syntaxOnly := c.Bool("syntax-only", false, "check the file and its settings only, not the files and directories it names")
	pos, code, done := c.parse(args, true)
	if done {
		return code
	}
	switch {
	case len(pos) > 1:
		return c.usageError(fmt.Sprintf("one config file, got %q", pos))
	case len(pos) == 1 && *configPath != "" && *configPath != pos[0]:
		return c.usageError(fmt.Sprintf("two config files: -config %s and %s", *configPath, pos[0]))
	case len(pos) == 1:
		*configPath = pos[0]
	}
	if *configPath == "" && !*dev {
		return c.usageError("no config file given")
	}
	name := *configPath
	if *dev {
		name = "the dev config"
	}
	cfg, warnings, err := loadConfig(*configPath, *dev)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fleet-telemetry check-config: %v\n", err)
		return 1
	}
	for _, w := range warnings {
		fmt.Fprintf(os.Stderr, "warning: %s\n", w)
	}
	var problems []error
	if *syntaxOnly {
		problems = append(problems, joined(cfg.ValidateSyntax())...)
	} else {
		problems = append(problems, joined(cfg.Validate())...)
		problems = append(problems, checkFiles(cfg, *dev)...)
	}
	if len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "fleet-telemetry check-config: %s: %d problem(s):\n", name, len(problems))
		for _, p := range problems {
			fmt.Fprintf(os.Stderr, "  %s\n", strings.ReplaceAll(p.Error(), "\n", "\n    "))
		}
		return 1
	}
	fmt.Println("configuration ok")
	return 0
}

// joined splits an errors.Join result into its errors.
func joined(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// checkFiles reports what a start would find wrong with the files and
// directories the configuration names (the vin_allowlist file is
// Validate's): the TLS files, the spool directory, and where
// monitoring.profiling_path goes. With dev, TLS files that do not exist
// yet are not problems: a dev start creates them.
func checkFiles(c *config.Config, dev bool) []error {
	var errs []error
	errs = append(errs, checkTLSFiles(c, dev)...)
	if err := checkSpoolDir(c.Spool.Dir); err != nil {
		errs = append(errs, err)
	}
	if m := c.Monitoring; m != nil && m.ProfilerPort > 0 && m.ProfilingPath != "" {
		if err := checkWritableDir(filepath.Dir(m.ProfilingPath), false); err != nil {
			errs = append(errs, fmt.Errorf("monitoring.profiling_path %s: %w", m.ProfilingPath, err))
		}
	}
	return errs
}

// checkTLSFiles reads each TLS file and loads what it holds, naming every
// file that fails; then builds the server configuration as a start does.
func checkTLSFiles(c *config.Config, dev bool) []error {
	var errs []error
	read := func(key, path string) []byte {
		if path == "" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			if !(dev && errors.Is(err, fs.ErrNotExist)) {
				errs = append(errs, fmt.Errorf("tls.%s: %w", key, err))
			}
			return nil
		}
		return b
	}
	certPEM := read("server_cert", c.TLS.ServerCert)
	keyPEM := read("server_key", c.TLS.ServerKey)
	caPEM := read("ca_file", c.TLS.CAFile)
	if certPEM != nil && keyPEM != nil {
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			errs = append(errs, fmt.Errorf("tls.server_cert %s and tls.server_key %s: %w", c.TLS.ServerCert, c.TLS.ServerKey, err))
		}
	}
	if caPEM != nil && !x509.NewCertPool().AppendCertsFromPEM(caPEM) {
		errs = append(errs, fmt.Errorf("tls.ca_file %s holds no PEM certificate", c.TLS.CAFile))
	}
	if len(errs) == 0 && certPEM != nil && keyPEM != nil {
		if _, err := netloop.NewTLSConfig(netloop.TLSOptions{CertFile: c.TLS.ServerCert, KeyFile: c.TLS.ServerKey,
			CAFile: c.TLS.CAFile, UseEngCA: c.UseDefaultEngCA}); err != nil {
			errs = append(errs, fmt.Errorf("tls: %w", err))
		}
	}
	return errs
}

// checkSpoolDir checks that the daemon can use dir: an existing directory
// it may read and write, or one it can create (the nearest existing parent
// is a writable directory).
func checkSpoolDir(dir string) error {
	st, err := os.Stat(dir)
	switch {
	case err == nil:
		if !st.IsDir() {
			return fmt.Errorf("spool.dir %s is not a directory", dir)
		}
		if err := unix.Access(dir, unix.R_OK|unix.W_OK|unix.X_OK); err != nil {
			return fmt.Errorf("spool.dir %s is not writable: %w", dir, err)
		}
		return nil
	case errors.Is(err, fs.ErrNotExist):
		if err := checkWritableDir(filepath.Dir(dir), true); err != nil {
			return fmt.Errorf("spool.dir %s cannot be created: %w", dir, err)
		}
		return nil
	}
	return fmt.Errorf("spool.dir: %w", err)
}

// checkWritableDir checks that files can be created in dir. With
// mayCreate, dir may also be missing if it can be created with its
// parents (MkdirAll): its nearest existing parent is a writable directory.
func checkWritableDir(dir string, mayCreate bool) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for p := abs; ; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if mayCreate && errors.Is(err, fs.ErrNotExist) && p != filepath.Dir(p) {
			continue
		}
		if err != nil {
			return err
		}
		if !st.IsDir() {
			return fmt.Errorf("%s is not a directory", p)
		}
		if err := unix.Access(p, unix.W_OK|unix.X_OK); err != nil {
			return fmt.Errorf("%s is not writable: %w", p, err)
		}
		return nil
	}
}

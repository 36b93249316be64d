// Package procstat reads a process's CPU time, run-queue wait and resident
// memory from /proc (Linux only).
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clkTck is sysconf(_SC_CLK_TCK): 100 on every Linux architecture Go runs on.
const clkTck = 100

// Sample is one reading.
type Sample struct {
	At time.Time
	// CPU is user+system time consumed so far.
	CPU time.Duration
	// RSSKiB is VmRSS.
	RSSKiB int64
	// Threads is the number of threads.
	Threads int64
	// RunDelay is the time the threads alive now have spent runnable but
	// not running, waiting for a CPU (/proc/PID/task/*/schedstat), summed
	// over them. Zero where the kernel keeps no schedstats.
	RunDelay time.Duration
}

// Read samples pid (0: this process).
func Read(pid int) (Sample, error) {
	p := "self"
	if pid > 0 {
		p = strconv.Itoa(pid)
	}
	s := Sample{At: time.Now()}
	stat, err := os.ReadFile("/proc/" + p + "/stat")
	if err != nil {
		return s, err
	}
	// The command name is in parentheses and may hold spaces: fields
	// count from after the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("procstat: malformed /proc/%s/stat", p)
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime 15.
	if len(f) < 13 {
		return s, fmt.Errorf("procstat: short /proc/%s/stat", p)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	s.CPU = time.Duration(ut+st) * time.Second / clkTck
	status, err := os.ReadFile("/proc/" + p + "/status")
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch k {
		case "VmRSS":
			s.RSSKiB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		case "Threads":
			s.Threads, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	s.RunDelay = runDelay("/proc/" + p + "/task")
	return s, nil
}

// runDelay sums the second field (ns waiting on a run queue) of every
// thread's schedstat. Threads that exit between the listing and the read
// are skipped.
func runDelay(taskDir string) time.Duration {
	ents, err := os.ReadDir(taskDir)
	if err != nil {
		return 0
	}
	var sum int64
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(taskDir, e.Name(), "schedstat"))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			ns, _ := strconv.ParseInt(f[1], 10, 64)
			sum += ns
		}
	}
	return time.Duration(sum)
}

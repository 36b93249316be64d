// Package testseed picks the seeds of randomized model tests: the time now
// and a few fixed ones on an ordinary run, or the one seed a rerun names by
// flag or environment variable. It is imported only from _test.go files.
package testseed

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// Seeds returns the seeds a model test runs with: flagSeed alone when it is
// not zero, else the value of the environment variable env alone when that
// is set, else the time now followed by fixed. A value of env that is not a
// decimal uint64 fails t.
func Seeds(t testing.TB, flagSeed uint64, env string, fixed ...uint64) []uint64 {
	t.Helper()
	seeds := append([]uint64{uint64(time.Now().UnixNano())}, fixed...)
	if v := os.Getenv(env); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", env, v, err)
		}
		seeds = []uint64{s}
	}
	if flagSeed != 0 {
		seeds = []uint64{flagSeed}
	}
	return seeds
}

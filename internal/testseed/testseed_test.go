package testseed

import (
	"slices"
	"testing"
)

func TestSeeds(t *testing.T) {
	const env = "TESTSEED_TEST_SEED"
	t.Setenv(env, "")
	if got := Seeds(t, 0, env, 1, 2); len(got) != 3 || got[0] == 0 || !slices.Equal(got[1:], []uint64{1, 2}) {
		t.Errorf("ordinary run: %v, want [now 1 2]", got)
	}
	t.Setenv(env, "42")
	if got := Seeds(t, 0, env, 1, 2); !slices.Equal(got, []uint64{42}) {
		t.Errorf("with %s=42: %v, want [42]", env, got)
	}
	if got := Seeds(t, 7, env, 1, 2); !slices.Equal(got, []uint64{7}) {
		t.Errorf("with the flag 7 and %s=42: %v, want [7]", env, got)
	}
}

package spool

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// scanRange calls fn with each key and value of db in [lower, upper), in
// key order, until fn returns false or an error, which scanRange returns
// as it is. The slices are valid only during the call. Pebble's errors are
// wrapped with what ("read passed records").
func scanRange(db *pebble.DB, lower, upper []byte, what string, fn func(k, v []byte) (bool, error)) error {
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			_ = it.Close()
			return fmt.Errorf("%s at key %q: %w", what, it.Key(), err)
		}
		more, err := fn(it.Key(), v)
		if err != nil {
			_ = it.Close()
			return err
		}
		if !more {
			break
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

package brokertest

import (
	"testing"

	goredis "github.com/redis/go-redis/v9"
)

// RedisClient is a test's own client of the plain-TCP Redis at addr (see
// Redis), closed when the test ends.
func RedisClient(t testing.TB, addr string) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	return c
}

package introspect

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/fleet-telemetry/fleet-telemetry/netloop"
)

// Client reads /connz and /varz of a daemon's monitoring port.
type Client struct {
	// Addr is the monitoring port, host:port.
	Addr string
	// HTTP is the client to use (default http.DefaultClient).
	HTTP *http.Client
}

// Connz fetches one page of connected vehicles.
func (c *Client) Connz(ctx context.Context, q netloop.ConnQuery) (netloop.ConnPage, error) {
	v := url.Values{}
	if q.VIN != "" {
		v.Set("vin", q.VIN)
	}
	if q.Sort != "" {
		v.Set("sort", string(q.Sort))
	}
	if q.Reverse {
		v.Set("reverse", "1")
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Offset > 0 {
		v.Set("offset", strconv.Itoa(q.Offset))
	}
	var p netloop.ConnPage
	err := c.get(ctx, "/connz", v, &p)
	return p, err
}

// Varz fetches the daemon's state, with the history when asked.
func (c *Client) Varz(ctx context.Context, history bool) (Varz, error) {
	v := url.Values{}
	if history {
		v.Set("history", "1")
	}
	var z Varz
	err := c.get(ctx, "/varz", v, &z)
	return z, err
}

func (c *Client) get(ctx context.Context, path string, q url.Values, dst any) error {
	u := url.URL{Scheme: "http", Host: c.Addr, Path: path, RawQuery: q.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fmt.Errorf("introspect: %w", err)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("introspect: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("introspect: GET %s: %s: the daemon does not serve it (monitoring.introspection is false?)", u.String(), resp.Status)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return fmt.Errorf("introspect: GET %s: %s: %s", u.String(), resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(dst); err != nil {
		return fmt.Errorf("introspect: GET %s: decode: %w", u.String(), err)
	}
	return nil
}

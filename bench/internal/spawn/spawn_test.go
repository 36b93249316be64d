package spawn

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestScrapeForwardingSumsForwarders(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `# HELP fleet_forwarder_sent_total Records sent.
# TYPE fleet_forwarder_sent_total counter
fleet_forwarder_sent_total{forwarder="kafka"} 1200
fleet_forwarder_sent_total{forwarder="logger"} 34
fleet_forwarder_sent_totalx 999
fleet_forwarder_lag_records{forwarder="kafka"} 7
fleet_forwarder_lag_records{forwarder="logger"} 1.2e+03
`)
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	sent, lag, err := ScrapeForwarding(port)
	if err != nil {
		t.Fatal(err)
	}
	if sent != 1234 || lag != 1207 {
		t.Fatalf("sent %d lag %d, want 1234 and 1207", sent, lag)
	}
}

package spawn

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestScrapeSumsForwardersAndRefusals(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `# HELP fleet_forwarder_sent_total Records sent.
# TYPE fleet_forwarder_sent_total counter
fleet_forwarder_sent_total{forwarder="kafka"} 1200
fleet_forwarder_sent_total{forwarder="logger"} 34
fleet_forwarder_sent_totalx 999
fleet_forwarder_lag_records{forwarder="kafka"} 7
fleet_forwarder_lag_records{forwarder="logger"} 1.2e+03
fleet_records_refused_total{reason="bad_payload"} 0
fleet_records_refused_total{reason="sender_id_mismatch"} 17447
fleet_records_refused_total{reason="rate_limited"} 3
fleet_records_received_total 20000
fleet_records_sender_id_mismatch_total 5
`)
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	c, err := Scrape(port)
	if err != nil {
		t.Fatal(err)
	}
	if want := (DaemonCounters{ForwarderSent: 1234, ForwarderLag: 1207, RecordsRefused: 17450, SenderMismatches: 5}); c != want {
		t.Fatalf("got %+v, want %+v", c, want)
	}
}

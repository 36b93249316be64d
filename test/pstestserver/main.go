// Command pstestserver runs the Pub/Sub fake from
// cloud.google.com/go/pubsub/v2/pstest as a process of its own, for
// end-to-end tests: it listens on 127.0.0.1 (port from -port, default any
// free one), prints "listening 127.0.0.1:PORT" on stdout once it accepts
// connections, and exits on SIGTERM or SIGINT. Point clients at it with
// PUBSUB_EMULATOR_HOST=127.0.0.1:PORT.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
	port := flag.Int("port", 0, "TCP port on 127.0.0.1 (0: any free port)")
	flag.Parse()
	// Registered before the server starts, so that a SIGTERM right after
	// the "listening" line is not lost.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	srv := pstest.NewServerWithAddress(net.JoinHostPort("127.0.0.1", strconv.Itoa(*port)))
	fmt.Printf("listening %s\n", srv.Addr)
	<-sigs
	if err := srv.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "pstestserver: close:", err)
		os.Exit(1)
	}
}

// Command kfakebroker runs a one-broker fake Kafka cluster (franz-go's kfake)
// as its own process, so that tests can stop and restart "Kafka" the way an
// outage does: SIGTERM or SIGINT closes it (persisting its state), and a
// restart with the same -data-dir and -port serves the same data again.
//
// When ready it prints one line, "listening 127.0.0.1:PORT", on stdout.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	port := flag.Int("port", 0, "TCP port on 127.0.0.1 (0 picks a free one)")
	dataDir := flag.String("data-dir", "", "directory persisting the cluster's state with synced writes (empty: in memory only)")
	partitions := flag.Int("partitions", 1, "partitions of auto-created topics")
	verbose := flag.Bool("v", false, "log the cluster's warnings and errors on stderr")
	flag.Parse()
	if err := run(*port, *dataDir, *partitions, *verbose); err != nil {
		fmt.Fprintf(os.Stderr, "kfakebroker: %v\n", err)
		os.Exit(1)
	}
}

func run(port int, dataDir string, partitions int, verbose bool) error {
	if partitions < 1 {
		return fmt.Errorf("-partitions %d: need at least 1", partitions)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(partitions),
	}
	if dataDir != "" {
		opts = append(opts, kfake.DataDir(dataDir), kfake.SyncWrites())
	}
	if verbose {
		opts = append(opts, kfake.WithLogger(kfake.BasicLogger(os.Stderr, kfake.LogLevelWarn)))
	}
	// Signals are caught before the cluster starts so that a signal sent
	// right after the "listening" line still closes it cleanly.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	cluster, err := kfake.NewCluster(opts...)
	if err != nil {
		return fmt.Errorf("start cluster: %w", err)
	}
	addrs := cluster.ListenAddrs()
	if len(addrs) != 1 {
		cluster.Close()
		return fmt.Errorf("cluster listens on %d addresses, want 1", len(addrs))
	}
	fmt.Printf("listening %s\n", addrs[0])
	s := <-sigs
	fmt.Fprintf(os.Stderr, "kfakebroker: %s: closing\n", s)
	cluster.Close()
	return nil
}

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
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	port := flag.Int("port", 0, "TCP port on 127.0.0.1 (0 picks a free one)")
	dataDir := flag.String("data-dir", "", "directory persisting the cluster's state with synced writes (empty: in memory only)")
	partitions := flag.Int("partitions", 1, "partitions of auto-created topics")
	verbose := flag.Bool("v", false, "log the cluster's warnings and errors on stderr")
	noAutoCreate := flag.Bool("no-auto-create", false, "refuse to produce to topics that do not exist (auto.create.topics.enable=false)")
	seed := flag.String("topics", "", "comma-separated topics to create at start")
	brokerConfigs := flag.String("broker-config", "", "comma-separated broker configs, e.g. message.max.bytes=200000")
	flag.Parse()
	o := options{port: *port, dataDir: *dataDir, partitions: *partitions, verbose: *verbose, autoCreate: !*noAutoCreate}
	if *seed != "" {
		o.topics = strings.Split(*seed, ",")
	}
	if *brokerConfigs != "" {
		o.brokerConfigs = map[string]string{}
		for _, kv := range strings.Split(*brokerConfigs, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				fmt.Fprintf(os.Stderr, "kfakebroker: -broker-config %q: want key=value\n", kv)
				os.Exit(2)
			}
			o.brokerConfigs[k] = v
		}
	}
	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "kfakebroker: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	port          int
	dataDir       string
	partitions    int
	verbose       bool
	autoCreate    bool
	topics        []string
	brokerConfigs map[string]string
}

func run(o options) error {
	if o.partitions < 1 {
		return fmt.Errorf("-partitions %d: need at least 1", o.partitions)
	}
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(o.port),
		kfake.DefaultNumPartitions(o.partitions),
	}
	if o.autoCreate {
		opts = append(opts, kfake.AllowAutoTopicCreation())
	}
	if len(o.topics) > 0 {
		opts = append(opts, kfake.SeedTopics(int32(o.partitions), o.topics...))
	}
	if len(o.brokerConfigs) > 0 {
		opts = append(opts, kfake.BrokerConfigs(o.brokerConfigs))
	}
	dataDir, verbose := o.dataDir, o.verbose
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

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/internal/devca"
	"github.com/fleet-telemetry/fleet-telemetry/internal/vehicle"
	"github.com/fleet-telemetry/fleet-telemetry/proto/envelope"
)

const sendUsage = `usage: fleet-telemetry send [-addr 127.0.0.1:4443] [-certs var/dev-certs] [-vin VIN] [-topic V] [-n 1]

Connects to a daemon as a vehicle (the dev certificate of -vin), sends -n
sample records of -topic and prints each reply. For trying out make run.
`

// send implements `fleet-telemetry send`: a vehicle that sends a few sample
// records to a daemon and prints each reply. For trying out `make run`.
func send(args []string) int {
	cl := newCLI("send", sendUsage)
	addr := cl.String("addr", "127.0.0.1:4443", "daemon address")
	dir := cl.String("certs", devCertsDir, "dev certificate directory (from \"certs dev\")")
	vin := cl.String("vin", devca.DefaultVINs[0], "VIN whose certificate to use")
	topic := cl.String("topic", "V", "record type: V, alerts, errors or connectivity")
	n := cl.Int("n", 1, "records to send")
	if code, done := cl.parseFlags(args, false); done {
		return code
	}
	tlsCfg, err := vehicle.TLSFromDir(*dir, *vin)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fleet-telemetry send: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := http.Header{"Version": []string{"fleet-telemetry-send"}, "X-Network-Interface": []string{"wifi"}}
	c, err := vehicle.Dial(ctx, vehicle.Config{Addr: *addr, TLS: tlsCfg, Header: h})
	if err != nil {
		fmt.Fprintf(os.Stderr, "fleet-telemetry send: %v\n", err)
		return 1
	}
	defer c.Close()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for i := range *n {
		txid := fmt.Sprintf("send-%d-%d", time.Now().UnixNano(), i)
		m := &envelope.StreamMessage{
			TxID: []byte(txid), Topic: []byte(*topic), MessageID: []byte(txid),
			CreatedAt: uint32(time.Now().Unix()), SenderID: []byte("vehicle_device." + *vin),
			Payload: vehicle.Payload(rng, *topic, *vin, time.Now()), DeviceType: []byte("vehicle_device"), DeviceID: []byte(*vin),
		}
		start := time.Now()
		if err := c.Send(m); err != nil {
			fmt.Fprintf(os.Stderr, "fleet-telemetry send: %v\n", err)
			return 1
		}
		r, err := c.ReadReply(10 * time.Second)
		if err != nil {
			fmt.Fprintf(os.Stderr, "fleet-telemetry send: %v\n", err)
			return 1
		}
		if !r.Ack {
			fmt.Printf("error reply txid=%s topic=%s: %s\n", r.TxID, r.Topic, r.Text)
			return 1
		}
		fmt.Printf("acked txid=%s topic=%s in %v\n", r.TxID, r.Topic, time.Since(start).Round(time.Microsecond))
	}
	return 0
}

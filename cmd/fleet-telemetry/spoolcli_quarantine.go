package main

// `fleet-telemetry spool quarantine ls|cat|replay|drop`: the records a sink
// refused for good (spool.Quarantined).

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

const quarantineUsage = `quarantine ls [-lane L]      the quarantined records: lane, seq, received, VIN, txid, reason, error
quarantine cat LANE SEQ      one, decoded, as JSON with why it was quarantined
quarantine replay LANE SEQ   send it again through the lane's sink (the running daemon's, or on a
                             stopped daemon the sink built from -config); sent, it leaves the quarantine
quarantine drop -yes LANE SEQ
                             delete it for good`

// quarantineView is one quarantined record as ls and cat show it.
type quarantineView struct {
	Lane          string `json:"lane"`
	Sink          string `json:"sink"`
	Reason        string `json:"reason"`
	Error         string `json:"error"`
	QuarantinedMs int64  `json:"quarantined_at_ms"`
	recordView
}

func newQuarantineView(q *spool.Quarantined, full bool) (quarantineView, error) {
	raw := spool.RawRecord{Seq: q.Record.Seq, Value: spool.EncodeRecord(nil, &q.Record)}
	rv, err := viewRecord(raw, full)
	return quarantineView{Lane: q.Lane, Sink: q.Sink, Reason: q.Reason, Error: q.Error, QuarantinedMs: q.AtMs, recordView: rv}, err
}

// quarantined lists the quarantined records of lane ("": all) from the
// running daemon or the stopped daemon's spool.
func (o *spoolOpts) quarantined(ctx context.Context, lane string) ([]spool.Quarantined, error) {
	src, err := o.open(ctx)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	var out []spool.Quarantined
	switch s := src.(type) {
	case adminSource:
		entries, err := s.c.Quarantine(ctx, lane)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			q, err := e.Decode()
			if err != nil {
				return nil, err
			}
			out = append(out, q)
		}
	case directSource:
		err = s.v.Quarantine(lane, func(q *spool.Quarantined) bool {
			out = append(out, *q)
			return true
		})
	}
	return out, err
}

func laneSeqArgs(args []string) (string, uint64, error) {
	if len(args) != 2 {
		return "", 0, usageError{"want LANE SEQ (e.g. kafka/V 1234; see quarantine ls)"}
	}
	seq, err := strconv.ParseUint(args[1], 10, 64)
	if err != nil || seq == 0 || !strings.Contains(args[0], "/") {
		return "", 0, usageError{fmt.Sprintf("bad LANE SEQ %q %q", args[0], args[1])}
	}
	return args[0], seq, nil
}

func spoolQuarantine(ctx context.Context, o *spoolOpts, c *cmdFlags, args []string) error {
	if len(args) == 0 {
		return usageError{"quarantine needs ls, cat, replay or drop:\n" + quarantineUsage}
	}
	switch sub, rest := args[0], args[1:]; sub {
	case "ls":
		if err := noArgs(rest); err != nil {
			return err
		}
		return o.quarantineLs(ctx, c.lane)
	case "cat":
		lane, seq, err := laneSeqArgs(rest)
		if err != nil {
			return err
		}
		return o.quarantineCat(ctx, lane, seq)
	case "replay":
		lane, seq, err := laneSeqArgs(rest)
		if err != nil {
			return err
		}
		return o.quarantineReplay(ctx, lane, seq)
	case "drop":
		lane, seq, err := laneSeqArgs(rest)
		if err != nil {
			return err
		}
		if !c.yes {
			return usageError{"drop deletes the record for good: add -yes"}
		}
		return o.quarantineDrop(ctx, lane, seq)
	default:
		return usageError{fmt.Sprintf("unknown quarantine command %q:\n%s", sub, quarantineUsage)}
	}
}

func (o *spoolOpts) quarantineLs(ctx context.Context, lane string) error {
	qs, err := o.quarantined(ctx, lane)
	if err != nil {
		return err
	}
	views := make([]quarantineView, 0, len(qs))
	for i := range qs {
		v, _ := newQuarantineView(&qs[i], false)
		views = append(views, v)
	}
	if o.json {
		return o.writeJSON(views, false)
	}
	if len(views) == 0 {
		fmt.Fprintln(o.stdout, "no quarantined records")
		return nil
	}
	w := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "LANE\tSEQ\tRECEIVED\tVIN\tTXID\tSIZE\tREASON\tQUARANTINED\tERROR")
	for _, v := range views {
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Lane, v.Seq, fmtTime(v.ReceivedAtMs), v.VIN, v.TxID,
			fmtBytes(int64(v.Size)), v.Reason, fmtTime(v.QuarantinedMs), v.Error)
	}
	return w.Flush()
}

func (o *spoolOpts) quarantineCat(ctx context.Context, lane string, seq uint64) error {
	qs, err := o.quarantined(ctx, lane)
	if err != nil {
		return err
	}
	for i := range qs {
		if qs[i].Record.Seq != seq {
			continue
		}
		v, derr := newQuarantineView(&qs[i], true)
		if err := o.writeJSON(v, !o.json); err != nil {
			return err
		}
		if derr != nil {
			return errFound
		}
		return nil
	}
	return fmt.Errorf("%w: %s seq %d", spool.ErrNotQuarantined, lane, seq)
}

func (o *spoolOpts) quarantineReplay(ctx context.Context, lane string, seq uint64) error {
	if c, err := o.adminClient(ctx); err == nil {
		defer c.Close()
		if err := c.ReplayQuarantined(ctx, lane, seq); err != nil {
			return fmt.Errorf("replay %s seq %d: %w", lane, seq, err)
		}
		fmt.Fprintf(o.stdout, "replayed %s seq %d through the running daemon; it left the quarantine\n", lane, seq)
		return nil
	}
	if o.cfg == nil {
		return usageError{"no daemon answers on the admin socket: on a stopped daemon replay needs -config (the sink is built from it)"}
	}
	name, recordType, _ := strings.Cut(lane, "/")
	sp, err := o.openWritable()
	if err != nil {
		return err
	}
	defer sp.Close()
	q, err := sp.QuarantinedRecord(lane, seq)
	if err != nil {
		return err
	}
	enc := forwarder.Encoder{Namespace: o.cfg.Namespace, JSON: o.cfg.TransmitDecodedRecords}
	sink, err := newSink(name, o.cfg, enc, []string{recordType}, o.log)
	if err != nil {
		return err
	}
	if cl, ok := sink.(interface{ Close() error }); ok {
		defer cl.Close()
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := sink.Send(sctx, []spool.Record{q.Record}); err != nil {
		return fmt.Errorf("replay %s seq %d: the sink refused it again; it stays quarantined: %w", lane, seq, err)
	}
	if err := sp.DropQuarantined(lane, seq); err != nil {
		return fmt.Errorf("replay %s seq %d: sent, but not taken out of the quarantine: %w", lane, seq, err)
	}
	fmt.Fprintf(o.stdout, "replayed %s seq %d to %s; it left the quarantine\n", lane, seq, name)
	return nil
}

func (o *spoolOpts) quarantineDrop(ctx context.Context, lane string, seq uint64) error {
	if c, err := o.adminClient(ctx); err == nil {
		defer c.Close()
		if err := c.DropQuarantined(ctx, lane, seq); err != nil {
			return fmt.Errorf("drop %s seq %d: %w", lane, seq, err)
		}
	} else {
		sp, err := o.openWritable()
		if err != nil {
			return err
		}
		defer sp.Close()
		if err := sp.DropQuarantined(lane, seq); err != nil {
			return fmt.Errorf("drop %s seq %d: %w", lane, seq, err)
		}
	}
	fmt.Fprintf(o.stdout, "dropped %s seq %d for good\n", lane, seq)
	return nil
}

// openWritable opens a stopped daemon's spool for writing (the daemon cannot
// start meanwhile).
func (o *spoolOpts) openWritable() (*spool.Spool, error) {
	sp, err := spool.Open(spool.Options{Dir: o.dir, Logger: o.log})
	if err != nil {
		if strings.Contains(err.Error(), "lock") {
			return nil, fmt.Errorf("%w: the spool %s is open in another process and its admin socket %s does not answer", errDaemonRunning, o.dir, o.admin)
		}
		return nil, err
	}
	return sp, nil
}

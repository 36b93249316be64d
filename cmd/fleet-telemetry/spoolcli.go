package main

// `fleet-telemetry spool …`: look inside the spool, on a stopped daemon's
// directory (opened read-only) or a running daemon's (through its admin
// socket, internal/admin: Pebble lets one process open a store, so the CLI
// never opens it while the daemon has it).

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/forwarder"
	"github.com/fleet-telemetry/fleet-telemetry/internal/admin"
	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

const spoolUsage = `usage: fleet-telemetry spool [-config FILE | -dir DIR | -dev] [-admin SOCKET] [-json] [-progress] COMMAND ...

The spool is read through the running daemon's admin socket (default
<spool dir>/admin.sock) when it answers, and otherwise opened read-only
(a stopped daemon; the daemon cannot start while a command runs). Nothing
here moves a cursor or deletes a record, except quarantine replay and drop.
-dev is the spool of make run (the embedded dev config's ./var/spool): run
it from the same directory.

commands:
  stats                            records, bytes, oldest/newest seq and age, quarantined records, and per
                                   lane (forwarder and record type) its cursor, lag, oldest waiting record
                                   and last error
  ls [-n 20] [-from SEQ] [-vin V] [-topic T]
                                   the newest N records (or N from SEQ): seq, time, VIN, topic, txid, size
  cat SEQ                          one record, decoded, as JSON
  tail [-f] [-n 10] [-vin V] [-topic T]
                                   the newest N records; with -f, then every new record as it is committed
  verify                           read every record and check it decodes; reports each bad seq (exit 1)
  export -format jsonl|proto [-from SEQ] [-to SEQ] [-vin V] [-topic T] [-o FILE]
                                   jsonl: the logger sink's line with "seq" first, one per record;
                                   proto: per record, a uvarint length then the dispatched protobuf
                                   bytes (the record type is not in the stream: use -topic for one type)
  replay -sink NAME [-from SEQ] [-to SEQ] [-vin V] [-topic T] [-batch 500]
                                   send a range again to a sink of -config (logger, kafka, kinesis,
                                   pubsub), only the record types the config routes to it
  quarantine ls [-lane L]          the records a sink refused for good (too large, invalid), kept aside
  quarantine cat LANE SEQ          one of them, decoded, with the sink's reason and error
  quarantine replay LANE SEQ       send it again through the lane's sink (after the cause is fixed);
                                   sent, it leaves the quarantine
  quarantine drop -yes LANE SEQ    delete it for good

Common flags may also follow COMMAND. -json prints JSON (an object for
stats, verify and cat, an array for ls, one object per line for tail).
A progress bar with rate and ETA is drawn on stderr by verify, export and
replay when stderr is a terminal (or with -progress). "spool COMMAND -h"
lists a command's flags.
`

// spoolCmd runs `fleet-telemetry spool ARGS`.
func spoolCmd(args []string) int {
	return runSpool(args, os.Stdout, os.Stderr)
}

type spoolCommand struct {
	// synopsis is the command's usage line after "spool".
	synopsis string
	flags    func(fs *flag.FlagSet, c *cmdFlags)
	run      func(ctx context.Context, o *spoolOpts, c *cmdFlags, args []string) error
	// takesArgs: the command has positional arguments (others refuse any).
	takesArgs bool
}

// cmdFlags are the per-command flags (each command registers the ones it
// takes).
type cmdFlags struct {
	n        int
	from, to uint64
	vin      string
	topic    string
	follow   bool
	format   string
	out      string
	sink     string
	batch    int
	lane     string
	yes      bool
}

var spoolCommands = map[string]spoolCommand{
	"stats": {synopsis: "stats", run: spoolStats},
	"ls": {synopsis: "ls [-n 20] [-from SEQ] [-vin V] [-topic T]", flags: func(fs *flag.FlagSet, c *cmdFlags) {
		fs.IntVar(&c.n, "n", 20, "number of records")
		fs.Uint64Var(&c.from, "from", 0, "list from this seq on instead of the newest")
		filterFlags(fs, c)
	}, run: spoolLs},
	"cat": {synopsis: "cat SEQ", run: spoolCat, takesArgs: true},
	"tail": {synopsis: "tail [-f] [-n 10] [-vin V] [-topic T]", flags: func(fs *flag.FlagSet, c *cmdFlags) {
		fs.BoolVar(&c.follow, "f", false, "follow: print records as they are committed, until interrupted")
		fs.IntVar(&c.n, "n", 10, "number of stored records to print first")
		filterFlags(fs, c)
	}, run: spoolTail},
	"verify": {synopsis: "verify", run: spoolVerify},
	"export": {synopsis: "export -format jsonl|proto [-from SEQ] [-to SEQ] [-vin V] [-topic T] [-o FILE]", flags: func(fs *flag.FlagSet, c *cmdFlags) {
		fs.StringVar(&c.format, "format", "jsonl", "jsonl or proto")
		fs.StringVar(&c.out, "o", "-", "output file (- for stdout)")
		rangeFlags(fs, c)
		filterFlags(fs, c)
	}, run: spoolExport},
	"replay": {synopsis: "replay -sink NAME [-from SEQ] [-to SEQ] [-vin V] [-topic T] [-batch 500]", flags: func(fs *flag.FlagSet, c *cmdFlags) {
		fs.StringVar(&c.sink, "sink", "", "dispatcher to send to (logger, kafka, kinesis, pubsub), built from -config")
		fs.IntVar(&c.batch, "batch", 500, "records per Send")
		rangeFlags(fs, c)
		filterFlags(fs, c)
	}, run: spoolReplay},
	"quarantine": {synopsis: "quarantine ls [-lane L] | cat LANE SEQ | replay LANE SEQ | drop -yes LANE SEQ", flags: func(fs *flag.FlagSet, c *cmdFlags) {
		fs.StringVar(&c.lane, "lane", "", "ls: only this lane's records (e.g. kafka/V)")
		fs.BoolVar(&c.yes, "yes", false, "drop: yes, delete the record for good")
	}, run: spoolQuarantine, takesArgs: true},
}

func filterFlags(fs *flag.FlagSet, c *cmdFlags) {
	fs.StringVar(&c.vin, "vin", "", "only records of this VIN")
	fs.StringVar(&c.topic, "topic", "", "only records of this type (V, alerts, errors, connectivity)")
}

func rangeFlags(fs *flag.FlagSet, c *cmdFlags) {
	fs.Uint64Var(&c.from, "from", 0, "first seq (default: the oldest)")
	fs.Uint64Var(&c.to, "to", 0, "last seq (default: the newest when the command starts)")
}

// parseInterspersed parses flags anywhere in args and returns the
// positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func runSpool(args []string, stdout, stderr io.Writer) int {
	o := &spoolOpts{stdout: stdout, stderr: stderr}
	top := flag.NewFlagSet("spool", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	top.Usage = func() {}
	o.register(top)
	if err := top.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, spoolUsage)
			return 0
		}
		fmt.Fprintf(stderr, "fleet-telemetry spool: %v\n%s", err, spoolUsage)
		return 2
	}
	if top.NArg() == 0 {
		fmt.Fprint(stderr, spoolUsage)
		return 2
	}
	name := top.Arg(0)
	if name == "help" {
		fmt.Fprint(stdout, spoolUsage)
		return 0
	}
	cmd, ok := spoolCommands[name]
	if !ok {
		fmt.Fprintf(stderr, "fleet-telemetry spool: unknown command %q\n%s", name, spoolUsage)
		return 2
	}
	fs := flag.NewFlagSet("spool "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	o.register(fs)
	c := &cmdFlags{}
	if cmd.flags != nil {
		cmd.flags(fs, c)
	}
	commandUsage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: fleet-telemetry spool [-config FILE | -dir DIR | -dev] %s\n\nflags:\n", cmd.synopsis)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	pos, err := parseInterspersed(fs, top.Args()[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			commandUsage(stdout)
			return 0
		}
		fmt.Fprintf(stderr, "fleet-telemetry spool %s: %v\n", name, err)
		commandUsage(stderr)
		return 2
	}
	if err := o.resolve(); err != nil {
		fmt.Fprintf(stderr, "fleet-telemetry spool: %v\n", err)
		return 2
	}
	o.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = noArgs(pos)
	if cmd.takesArgs {
		err = nil
	}
	if err == nil {
		err = cmd.run(ctx, o, c, pos)
	}
	if err != nil {
		var ue usageError
		switch {
		case errors.As(err, &ue):
			fmt.Fprintf(stderr, "fleet-telemetry spool %s: %v\n", name, err)
			return 2
		case errors.Is(err, errFound):
			return 1 // the command already reported what it found
		}
		fmt.Fprintf(stderr, "fleet-telemetry spool %s: %v\n", name, err)
		return 1
	}
	return 0
}

type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

// errFound ends a command that reported problems itself (exit 1).
var errFound = errors.New("problems found")

// errStop ends a scan early.
var errStop = errors.New("stop")

func noArgs(args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", args[0])}
	}
	return nil
}

// openInfo opens the spool (admin socket or read-only) and reads its
// summary; the caller closes the source.
func (o *spoolOpts) openInfo(ctx context.Context) (spoolSource, spool.Info, error) {
	src, err := o.open(ctx)
	if err != nil {
		return nil, spool.Info{}, err
	}
	in, err := src.Info(ctx)
	if err != nil {
		src.Close()
		return nil, spool.Info{}, err
	}
	return src, in, nil
}

func (o *spoolOpts) writeJSON(v any, indent bool) error {
	enc := json.NewEncoder(o.stdout)
	if indent {
		enc.SetIndent("", "  ")
	}
	return enc.Encode(v)
}

func (o *spoolOpts) showProgress() bool {
	if o.progress {
		return true
	}
	f, ok := o.stderr.(*os.File)
	return ok && isTerminal(f)
}

// --- stats

// laneStat is one forwarder lane (or a cursor no lane uses any more).
type laneStat struct {
	Name       string `json:"name"` // the spool cursor, <forwarder>/<record type>
	Forwarder  string `json:"forwarder"`
	RecordType string `json:"record_type,omitempty"`
	Cursor     uint64 `json:"cursor"`
	Lag        int64  `json:"lag"` // live records after the cursor
	Active     bool   `json:"active"`
	// From a running daemon: how long its oldest waiting record has
	// waited, and the sink's last error for this lane.
	OldestWaitingSeconds float64 `json:"oldest_waiting_seconds,omitempty"`
	LastError            string  `json:"last_error,omitempty"`
	LastErrorAgeSeconds  float64 `json:"last_error_age_seconds,omitempty"`
}

type statsOut struct {
	Dir    string `json:"dir"`
	Source string `json:"source"` // "admin" or "direct"
	spool.Info
	OldestAgeSeconds float64    `json:"oldest_age_seconds"`
	NewestAgeSeconds float64    `json:"newest_age_seconds"`
	Lanes            []laneStat `json:"lanes"`
}

func spoolStats(ctx context.Context, o *spoolOpts, _ *cmdFlags, _ []string) error {
	src, in, err := o.openInfo(ctx)
	if err != nil {
		return err
	}
	defer src.Close()
	now := time.Now()
	out := statsOut{Dir: o.dir, Source: src.Kind(), Info: in}
	if in.OldestReceivedAtMs != 0 {
		out.OldestAgeSeconds = max(0, now.Sub(time.UnixMilli(in.OldestReceivedAtMs)).Seconds())
	}
	if in.NewestReceivedAtMs != 0 {
		out.NewestAgeSeconds = max(0, now.Sub(time.UnixMilli(in.NewestReceivedAtMs)).Seconds())
	}
	active := map[string]bool{}
	for _, c := range in.Consumers {
		active[c] = true
	}
	if o.cfg != nil {
		for d, types := range o.cfg.Dispatchers() {
			for _, l := range forwarder.LaneNames(d, types) {
				active[l] = true
			}
		}
	}
	live := map[string]forwarder.LaneStatus{}
	if a, ok := src.(adminSource); ok {
		statuses, err := a.c.Lanes(ctx)
		if err != nil {
			return err
		}
		for _, st := range statuses {
			live[forwarder.LaneName(st.Forwarder, st.RecordType)] = st
		}
	}
	names := map[string]bool{}
	for n := range in.Cursors {
		names[n] = true
	}
	for n := range active {
		names[n] = true
	}
	for _, n := range slices.Sorted(maps.Keys(names)) {
		cur := in.Cursors[n]
		ls := laneStat{Name: n, Cursor: cur, Lag: lagAfter(in, cur), Active: active[n]}
		ls.Forwarder, ls.RecordType, _ = strings.Cut(n, "/")
		if st, ok := live[n]; ok {
			// The daemon's own position: newer than the last commit.
			ls.Cursor, ls.Lag = st.Cursor, lagAfter(in, st.Cursor)
			if st.OldestWaitingMs != 0 {
				ls.OldestWaitingSeconds = max(0, now.Sub(time.UnixMilli(st.OldestWaitingMs)).Seconds())
			}
			if st.LastError != "" {
				ls.LastError = st.LastError
				ls.LastErrorAgeSeconds = max(0, now.Sub(time.UnixMilli(st.LastErrorMs)).Seconds())
			}
		}
		out.Lanes = append(out.Lanes, ls)
	}
	if o.json {
		return o.writeJSON(out, false)
	}
	w := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "spool\t%s\n", o.dir)
	fmt.Fprintf(w, "source\t%s\n", src.Describe())
	fmt.Fprintf(w, "records\t%s (%s)\n", fmtCount(in.Records), fmtBytes(in.Bytes))
	if in.Records > 0 {
		fmt.Fprintf(w, "oldest\tseq %d\treceived %s\t(%s)\n", in.FirstSeq, fmtTime(in.OldestReceivedAtMs), fmtAge(in.OldestReceivedAtMs, now))
		fmt.Fprintf(w, "newest\tseq %d\treceived %s\t(%s)\n", in.NewestSeq, fmtTime(in.NewestReceivedAtMs), fmtAge(in.NewestReceivedAtMs, now))
	}
	fmt.Fprintf(w, "last seq\t%d\n", in.LastSeq)
	if in.QuarantinedRecords > 0 {
		fmt.Fprintf(w, "quarantined\t%s (%s)\tspool quarantine ls\n", fmtCount(in.QuarantinedRecords), fmtBytes(in.QuarantinedBytes))
	}
	w.Flush()
	if len(out.Lanes) > 0 {
		fmt.Fprintln(o.stdout)
		w = tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "LANE\tCURSOR\tLAG\tWAITING\tLAST ERROR\t")
		for _, l := range out.Lanes {
			waiting, lastErr := "-", ""
			if l.OldestWaitingSeconds > 0 {
				waiting = (time.Duration(l.OldestWaitingSeconds * float64(time.Second))).Round(time.Millisecond).String()
			}
			if l.LastError != "" {
				lastErr = fmt.Sprintf("%s ago: %s", (time.Duration(l.LastErrorAgeSeconds * float64(time.Second))).Round(time.Second), l.LastError)
			}
			if !l.Active {
				lastErr = "(not a configured lane)"
			}
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", l.Name, l.Cursor, fmtCount(l.Lag), waiting, lastErr)
		}
		w.Flush()
	}
	return nil
}

// lagAfter is the number of live records after cursor.
func lagAfter(in spool.Info, cursor uint64) int64 {
	if in.Records == 0 || cursor >= in.NewestSeq {
		return 0
	}
	return estimate(in, cursor+1, 0)
}

// --- ls, cat, tail

func (c *cmdFlags) query() admin.Query { return admin.Query{VIN: c.vin, Topic: c.topic} }

func spoolLs(ctx context.Context, o *spoolOpts, c *cmdFlags, _ []string) error {
	if c.n <= 0 {
		return usageError{"-n must be positive"}
	}
	src, err := o.open(ctx)
	if err != nil {
		return err
	}
	defer src.Close()
	var recs []spool.RawRecord
	if c.from > 0 {
		err = src.Scan(ctx, c.from, 0, c.query(), func(r spool.RawRecord) error {
			recs = append(recs, r)
			if len(recs) >= c.n {
				return errStop
			}
			return nil
		})
		if errors.Is(err, errStop) {
			err = nil
		}
	} else {
		recs, err = src.Last(ctx, c.n, c.query())
	}
	if err != nil {
		return err
	}
	views := make([]recordView, 0, len(recs))
	for _, r := range recs {
		v, _ := viewRecord(r, false)
		views = append(views, v)
	}
	if o.json {
		return o.writeJSON(views, false)
	}
	w := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SEQ\tRECEIVED\tVIN\tTOPIC\tTXID\tSIZE")
	for _, v := range views {
		writeRow(w, v)
	}
	return w.Flush()
}

func writeRow(w io.Writer, v recordView) {
	if v.Error != "" {
		fmt.Fprintf(w, "%d\t-\t-\t-\t-\t%d\tUNDECODABLE: %s\n", v.Seq, v.Size, v.Error)
		return
	}
	fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%d\n", v.Seq, fmtTime(v.ReceivedAtMs), v.VIN, v.Topic, v.TxID, v.Size)
}

func spoolCat(ctx context.Context, o *spoolOpts, _ *cmdFlags, args []string) error {
	if len(args) != 1 {
		return usageError{"cat takes one SEQ"}
	}
	seq, err := strconv.ParseUint(args[0], 10, 64)
	if err != nil || seq == 0 {
		return usageError{fmt.Sprintf("bad SEQ %q", args[0])}
	}
	src, err := o.open(ctx)
	if err != nil {
		return err
	}
	defer src.Close()
	var found *spool.RawRecord
	if err := src.Scan(ctx, seq, seq, admin.Query{}, func(r spool.RawRecord) error {
		found = &r
		return nil
	}); err != nil {
		return err
	}
	if found == nil {
		in, err := src.Info(ctx)
		if err == nil && in.Records > 0 {
			return fmt.Errorf("record %d is not in the spool (it holds %d..%d)", seq, in.FirstSeq, in.NewestSeq)
		}
		return fmt.Errorf("record %d is not in the spool", seq)
	}
	v, derr := viewRecord(*found, true)
	if err := o.writeJSON(v, !o.json); err != nil {
		return err
	}
	if derr != nil {
		return errFound
	}
	return nil
}

// tailPrinter prints tail's records.
type tailPrinter struct {
	o    *spoolOpts
	w    *bufio.Writer
	last uint64
}

func (p *tailPrinter) print(r spool.RawRecord) error {
	p.last = max(p.last, r.Seq)
	v, _ := viewRecord(r, p.o.json)
	if p.o.json {
		var line []byte
		var err error
		if v.Error != "" {
			line, err = json.Marshal(v)
		} else {
			line, err = json.Marshal(exportLine{Seq: v.Seq, Topic: v.Topic, VIN: v.VIN, TxID: v.TxID, ReceivedAtMs: v.ReceivedAtMs, Record: v.Record})
		}
		if err != nil {
			return err
		}
		p.w.Write(line)
		p.w.WriteByte('\n')
	} else if v.Error != "" {
		fmt.Fprintf(p.w, "%d  UNDECODABLE (%d bytes): %s\n", v.Seq, v.Size, v.Error)
	} else {
		fmt.Fprintf(p.w, "%d  %s  %s  %-12s  %s  %d\n", v.Seq, fmtTime(v.ReceivedAtMs), v.VIN, v.Topic, v.TxID, v.Size)
	}
	return nil
}

func spoolTail(ctx context.Context, o *spoolOpts, c *cmdFlags, _ []string) error {
	if c.n < 0 {
		return usageError{"-n must not be negative"}
	}
	p := &tailPrinter{o: o, w: bufio.NewWriter(o.stdout)}
	defer p.w.Flush()
	q := c.query()
	cl, adminErr := o.adminClient(ctx)
	if adminErr != nil {
		// No daemon: the stored records from the spool itself.
		src, err := o.open(ctx)
		if err != nil {
			return err
		}
		in, err := src.Info(ctx)
		var recs []spool.RawRecord
		if err == nil && c.n > 0 {
			recs, err = src.Last(ctx, c.n, q)
		}
		src.Close() // before waiting: the daemon must be able to start
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := p.print(r); err != nil {
				return err
			}
		}
		if !c.follow {
			return nil
		}
		p.last = max(p.last, in.LastSeq)
	}
	if !c.follow {
		defer cl.Close()
		recs, err := adminSource{cl}.Last(ctx, c.n, q)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := p.print(r); err != nil {
				return err
			}
		}
		return nil
	}
	// Follow, through the admin socket, across daemon restarts.
	first := cl != nil
	for {
		if cl == nil {
			p.w.Flush()
			fmt.Fprintf(o.stderr, "waiting for the daemon's admin socket %s ...\n", o.admin)
			for cl == nil {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(500 * time.Millisecond):
				}
				cl, _ = o.adminClient(ctx)
			}
		}
		fq := q
		fq.Follow = true
		if first {
			fq.Last = c.n // the newest n first, then new ones
		} else {
			fq.From = p.last + 1
		}
		first = false
		err := cl.Records(ctx, fq, func(r spool.RawRecord) error {
			if err := p.print(r); err != nil {
				return err
			}
			return p.w.Flush()
		})
		cl.Close()
		cl = nil
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !errors.Is(err, admin.ErrCut) {
			fmt.Fprintf(o.stderr, "tail: %v\n", err)
		}
		fmt.Fprintln(o.stderr, "tail: the daemon stopped")
	}
}

// --- verify

type corruptRecord struct {
	Seq   uint64 `json:"seq"`
	Error string `json:"error"`
}

type verifyOut struct {
	Source   string          `json:"source"`
	Records  int64           `json:"records"`
	Bytes    int64           `json:"bytes"`
	FirstSeq uint64          `json:"first_seq"`
	LastSeq  uint64          `json:"last_seq"`
	Topics   map[string]int  `json:"topics"`
	Corrupt  []corruptRecord `json:"corrupt"`
	// ReadError is set when the scan itself failed (Pebble could not read a
	// block); AfterSeq is the last record read before it.
	ReadError string `json:"read_error,omitempty"`
	AfterSeq  uint64 `json:"after_seq,omitempty"`
	// Accounting compares the spool's own counts with what was read (only
	// on a stopped spool: a running one changes during the scan).
	Accounting *accounting `json:"accounting,omitempty"`
	OK         bool        `json:"ok"`
}

type accounting struct {
	MetaRecords int64 `json:"meta_records"`
	MetaBytes   int64 `json:"meta_bytes"`
	OK          bool  `json:"ok"`
}

func spoolVerify(ctx context.Context, o *spoolOpts, _ *cmdFlags, _ []string) error {
	src, in, err := o.openInfo(ctx)
	if err != nil {
		return err
	}
	defer src.Close()
	out := verifyOut{Source: src.Kind(), Topics: map[string]int{}, Corrupt: []corruptRecord{}}
	bar := newProgress(o.stderr, o.showProgress(), "verify", estimate(in, 0, in.NewestSeq))
	last := uint64(0)
	scanErr := src.Scan(ctx, 0, 0, admin.Query{}, func(r spool.RawRecord) error {
		bar.add(1)
		out.Records++
		out.Bytes += int64(spool.RecordSize(r))
		if out.FirstSeq == 0 {
			out.FirstSeq = r.Seq
		}
		out.LastSeq = r.Seq
		if r.Seq <= last {
			out.Corrupt = append(out.Corrupt, corruptRecord{r.Seq, fmt.Sprintf("out of order after seq %d", last)})
		}
		last = r.Seq
		var rec spool.Record
		if err := spool.DecodeRecord(r.Value, r.Seq, &rec); err != nil {
			out.Corrupt = append(out.Corrupt, corruptRecord{r.Seq, err.Error()})
			return nil
		}
		if _, _, err := (forwarder.Encoder{}).AppendValue(nil, &rec); err != nil {
			out.Corrupt = append(out.Corrupt, corruptRecord{r.Seq, fmt.Sprintf("payload: %v", err)})
			return nil
		}
		out.Topics[string(rec.Topic)]++
		return nil
	})
	bar.finish()
	if scanErr != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		out.ReadError, out.AfterSeq = scanErr.Error(), last
	}
	if src.Kind() == "direct" && scanErr == nil {
		out.Accounting = &accounting{MetaRecords: in.Records, MetaBytes: in.Bytes,
			OK: in.Records == out.Records && in.Bytes == out.Bytes}
	}
	out.OK = len(out.Corrupt) == 0 && out.ReadError == "" && (out.Accounting == nil || out.Accounting.OK)
	if o.json {
		if err := o.writeJSON(out, false); err != nil {
			return err
		}
	} else {
		w := o.stdout
		fmt.Fprintf(w, "verified %s records (%s)", fmtCount(out.Records), fmtBytes(out.Bytes))
		if out.Records > 0 {
			fmt.Fprintf(w, ", seq %d..%d", out.FirstSeq, out.LastSeq)
		}
		fmt.Fprintf(w, " via %s: ", src.Describe())
		if out.OK {
			fmt.Fprintln(w, "ok")
		} else {
			fmt.Fprintf(w, "%d corrupt\n", len(out.Corrupt))
		}
		for _, c := range out.Corrupt {
			fmt.Fprintf(w, "corrupt record seq %d: %s\n", c.Seq, c.Error)
		}
		if out.ReadError != "" {
			fmt.Fprintf(w, "read failed after seq %d: %s\n", out.AfterSeq, out.ReadError)
		}
		if a := out.Accounting; a != nil && !a.OK {
			fmt.Fprintf(w, "accounting mismatch: the spool's meta says %d records / %d bytes, read %d / %d\n",
				a.MetaRecords, a.MetaBytes, out.Records, out.Bytes)
		}
	}
	if !out.OK {
		return errFound
	}
	return nil
}

// --- export

func spoolExport(ctx context.Context, o *spoolOpts, c *cmdFlags, _ []string) error {
	if c.format != "jsonl" && c.format != "proto" {
		return usageError{fmt.Sprintf("-format %q: want jsonl or proto", c.format)}
	}
	if c.to != 0 && c.from > c.to {
		return usageError{"-from is after -to"}
	}
	src, in, err := o.openInfo(ctx)
	if err != nil {
		return err
	}
	defer src.Close()
	to := c.to
	if to == 0 {
		to = in.LastSeq // a fixed range on a running daemon
	}
	var f io.Writer = o.stdout
	var file *os.File
	if c.out != "-" && c.out != "" {
		if file, err = os.Create(c.out); err != nil {
			return err
		}
		defer file.Close()
		f = file
	}
	bw := bufio.NewWriterSize(f, 256<<10)
	bar := newProgress(o.stderr, o.showProgress(), "export", estimate(in, c.from, to))
	var n, skipped int64
	topics := map[string]bool{}
	var lenBuf [binary.MaxVarintLen64]byte
	var value []byte
	err = src.Scan(ctx, c.from, to, c.query(), func(raw spool.RawRecord) error {
		bar.add(1)
		var r spool.Record
		if err := spool.DecodeRecord(raw.Value, raw.Seq, &r); err != nil {
			skipped++
			fmt.Fprintf(o.stderr, "\nexport: seq %d skipped: %v\n", raw.Seq, err)
			return nil
		}
		// The bytes a sink sends: forwarder.Encoder's.
		if c.format == "proto" {
			b, _, err := (forwarder.Encoder{}).AppendValue(value[:0], &r)
			if err != nil {
				skipped++
				fmt.Fprintf(o.stderr, "\nexport: seq %d skipped: %v\n", raw.Seq, err)
				return nil
			}
			value = b
			k := binary.PutUvarint(lenBuf[:], uint64(len(b)))
			bw.Write(lenBuf[:k])
			bw.Write(b)
		} else {
			js, err := recordJSON(&r)
			if err != nil {
				skipped++
				fmt.Fprintf(o.stderr, "\nexport: seq %d skipped: %v\n", raw.Seq, err)
				return nil
			}
			line, err := json.Marshal(exportLine{Seq: r.Seq, Topic: string(r.Topic), VIN: r.VIN, TxID: string(r.TxID), ReceivedAtMs: r.ReceivedAtMs, Record: js})
			if err != nil {
				return err
			}
			bw.Write(line)
			bw.WriteByte('\n')
		}
		topics[string(r.Topic)] = true
		n++
		return nil
	})
	bar.finish()
	if err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if file != nil {
		if err := file.Close(); err != nil {
			return err
		}
	}
	fmt.Fprintf(o.stderr, "exported %s records", fmtCount(n))
	if skipped > 0 {
		fmt.Fprintf(o.stderr, "; %d undecodable skipped", skipped)
	}
	fmt.Fprintln(o.stderr)
	if c.format == "proto" && len(topics) > 1 {
		fmt.Fprintf(o.stderr, "warning: the proto stream mixes record types %v and does not say which is which; use -topic\n", slices.Sorted(maps.Keys(topics)))
	}
	if skipped > 0 {
		return errFound
	}
	return nil
}

// --- replay

func spoolReplay(ctx context.Context, o *spoolOpts, c *cmdFlags, _ []string) error {
	if o.cfg == nil {
		return usageError{"replay needs -config (the sinks are built from it)"}
	}
	if c.sink == "" {
		return usageError{"-sink NAME is required"}
	}
	if c.batch <= 0 {
		return usageError{"-batch must be positive"}
	}
	if c.to != 0 && c.from > c.to {
		return usageError{"-from is after -to"}
	}
	types := o.cfg.Dispatchers()[c.sink]
	if len(types) == 0 && c.sink != "logger" {
		names := slices.Sorted(maps.Keys(o.cfg.Dispatchers()))
		return fmt.Errorf("no record type is routed to sink %q in %s (configured: %v)", c.sink, o.config, names)
	}
	routed := map[string]bool{}
	for _, t := range types {
		routed[t] = true
	}
	sort.Strings(types)
	enc := forwarder.Encoder{Namespace: o.cfg.Namespace, JSON: o.cfg.TransmitDecodedRecords}
	sink, err := newSink(c.sink, o.cfg, enc, types, o.log)
	if err != nil {
		return err
	}
	if cl, ok := sink.(interface{ Close() error }); ok {
		defer cl.Close()
	}
	src, in, err := o.openInfo(ctx)
	if err != nil {
		return err
	}
	defer src.Close()
	to := c.to
	if to == 0 {
		to = in.LastSeq
	}
	bar := newProgress(o.stderr, o.showProgress(), "replay", estimate(in, c.from, to))
	var sent, skipped int64
	var firstSent, lastSent uint64
	batch := make([]spool.Record, 0, c.batch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := sendWithRetry(ctx, sink, batch, o); err != nil {
			return fmt.Errorf("send seq %d..%d to %s: %w (records before seq %d were sent; resume with -from %d)",
				batch[0].Seq, batch[len(batch)-1].Seq, c.sink, err, batch[0].Seq, batch[0].Seq)
		}
		if firstSent == 0 {
			firstSent = batch[0].Seq
		}
		lastSent = batch[len(batch)-1].Seq
		sent += int64(len(batch))
		bar.add(0)
		batch = batch[:0]
		return nil
	}
	err = src.Scan(ctx, c.from, to, c.query(), func(raw spool.RawRecord) error {
		bar.add(1)
		var r spool.Record
		if err := spool.DecodeRecord(raw.Value, raw.Seq, &r); err != nil {
			skipped++
			fmt.Fprintf(o.stderr, "\nreplay: seq %d skipped: %v\n", raw.Seq, err)
			return nil
		}
		if c.sink != "logger" && !routed[string(r.Topic)] {
			skipped++
			return nil
		}
		// DecodeRecord aliases raw.Value, which the scan does not reuse.
		batch = append(batch, r)
		if len(batch) >= c.batch {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	bar.finish()
	if err != nil {
		return err
	}
	if f, ok := sink.(interface{ Flush(context.Context) error }); ok {
		if err := f.Flush(ctx); err != nil {
			return err
		}
	}
	summary := fmt.Sprintf("replayed %s records", fmtCount(sent))
	if sent > 0 {
		summary += fmt.Sprintf(" (seq %d..%d)", firstSent, lastSent)
	}
	summary += " to " + c.sink
	if skipped > 0 {
		summary += fmt.Sprintf("; %d skipped (not routed to %s, or undecodable)", skipped, c.sink)
	}
	// stdout may be the logger sink's output: the summary goes to stderr.
	fmt.Fprintln(o.stderr, summary)
	return nil
}

// sendWithRetry sends one batch, retrying a few times with backoff.
func sendWithRetry(ctx context.Context, sink forwarder.Sink, batch []spool.Record, o *spoolOpts) error {
	backoff := 200 * time.Millisecond
	var err error
	for attempt := 1; attempt <= 5; attempt++ {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = sink.Send(sctx, batch)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		o.log.Warn("replay: send failed; retrying", "attempt", attempt, "records", len(batch), "first_seq", batch[0].Seq, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	return err
}

package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fleet-telemetry/fleet-telemetry/spool"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func appendN(t *testing.T, sp *spool.Spool, from, n int, vin func(int) string) {
	t.Helper()
	for i := from; i < from+n; i++ {
		r := &spool.Record{ReceivedAtMs: int64(1000 + i), VIN: vin(i), Topic: []byte("V"), TxID: []byte(fmt.Sprint("tx", i)), Payload: []byte{1, 2, 3}}
		if err := sp.Append(r, nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for sp.LastSeq() < uint64(from+n-1) {
		if time.Now().After(deadline) {
			t.Fatal("no commit")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestServerAndClient(t *testing.T) {
	dir := t.TempDir()
	sp, err := spool.Open(spool.Options{Dir: dir, Consumers: []string{"logger"}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	vin := func(i int) string { return fmt.Sprintf("VIN%d", i%2) }
	appendN(t, sp, 1, 100, vin)

	path := DefaultSocketPath(dir)
	if err := os.WriteFile(path, nil, 0o644); err != nil { // a stale file
		t.Fatal(err)
	}
	srv, err := Listen(path, sp, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	if m, _ := filepath.Glob(path + ".*"); len(m) != 0 {
		t.Fatalf("left over: %v", m)
	}

	c := NewClient(path)
	defer c.Close()
	ctx := context.Background()
	in, err := c.Info(ctx)
	if err != nil || in.Records != 100 || in.FirstSeq != 1 || in.NewestSeq != 100 || len(in.Consumers) != 1 {
		t.Fatalf("info %+v %v", in, err)
	}
	collect := func(q Query) []uint64 {
		t.Helper()
		var seqs []uint64
		if err := c.Records(ctx, q, func(r spool.RawRecord) error {
			seqs = append(seqs, r.Seq)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return seqs
	}
	if got := collect(Query{}); len(got) != 100 || got[0] != 1 || got[99] != 100 {
		t.Fatalf("all: %v", got)
	}
	if got := collect(Query{From: 10, To: 12}); fmt.Sprint(got) != "[10 11 12]" {
		t.Fatalf("range: %v", got)
	}
	if got := collect(Query{Last: 3, VIN: "VIN1"}); fmt.Sprint(got) != "[95 97 99]" {
		t.Fatalf("last: %v", got)
	}
	if got := collect(Query{From: 90, Topic: "alerts"}); len(got) != 0 {
		t.Fatalf("topic filter: %v", got)
	}

	// follow: the newest 2, then new commits for VIN0 only.
	fctx, cancel := context.WithCancel(ctx)
	got := make(chan uint64, 100)
	errc := make(chan error, 1)
	go func() {
		errc <- c.Records(fctx, Query{Follow: true, Last: 2, VIN: "VIN0"}, func(r spool.RawRecord) error {
			got <- r.Seq
			return nil
		})
	}()
	want := []uint64{98, 100}
	for _, w := range want {
		select {
		case s := <-got:
			if s != w {
				t.Fatalf("follow got %d want %d", s, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("follow: nothing")
		}
	}
	appendN(t, sp, 101, 4, vin)
	for _, w := range []uint64{102, 104} {
		select {
		case s := <-got:
			if s != w {
				t.Fatalf("follow got %d want %d", s, w)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("follow: nothing new")
		}
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("follow ended with %v", err)
	}

	// Closing the server cuts a follow and removes the socket.
	errc2 := make(chan error, 1)
	go func() {
		errc2 <- c.Records(ctx, Query{Follow: true}, func(spool.RawRecord) error { return nil })
	}()
	time.Sleep(100 * time.Millisecond)
	srv.Close()
	select {
	case err := <-errc2:
		if !errors.Is(err, ErrCut) {
			t.Fatalf("follow after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("follow not cut by Close")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket still there: %v", err)
	}
	if _, err := c.Info(ctx); err == nil {
		t.Fatal("Info after Close succeeded")
	}
}

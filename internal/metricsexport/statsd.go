package metricsexport

import (
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultStatsdFlushPeriod is used when StatsdOptions.FlushPeriod is not
// positive.
const DefaultStatsdFlushPeriod = time.Second

// maxPacket bounds one UDP datagram (fits a 1500-byte MTU).
const maxPacket = 1400

// StatsdOptions configure a StatsdPusher.
type StatsdOptions struct {
	// Addr is the StatsD server's host:port (UDP).
	Addr string
	// Prefix is put in front of every name as is (the reference's
	// statsd.prefix; include the separator, e.g. "fleet.").
	Prefix string
	// FlushPeriod is how often the registry is pushed.
	FlushPeriod time.Duration
	// Logger gets send errors (default slog.Default), at most one a minute.
	Logger *slog.Logger
	// gather replaces Gather(false) in tests.
	gather func() []Family
}

// StatsdPusher sends the registry to StatsD: counters as the increase
// since the last push (|c), gauges and untyped series as their value when
// it changed (|g), histograms and summaries as their _count and _sum
// increases (|c) and summary quantiles (|g). A series' labels become
// dot-separated name components in label order:
// record_total{record_type="V"} is sent as <prefix>record_total.V.
type StatsdPusher struct {
	opts StatsdOptions
	conn net.Conn
	log  *slog.Logger

	mu      sync.Mutex
	last    map[string]float64
	lastErr time.Time

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// StartStatsd dials the server and pushes every FlushPeriod until Stop.
func StartStatsd(o StatsdOptions) (*StatsdPusher, error) {
	if o.Addr == "" {
		return nil, errors.New("statsd: no host")
	}
	if _, _, err := net.SplitHostPort(o.Addr); err != nil {
		return nil, errors.New("statsd: host must be host:port, got " + strconv.Quote(o.Addr))
	}
	if o.FlushPeriod <= 0 {
		o.FlushPeriod = DefaultStatsdFlushPeriod
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.gather == nil {
		o.gather = func() []Family { return Gather(false) }
	}
	c, err := net.Dial("udp", o.Addr)
	if err != nil {
		return nil, err
	}
	p := &StatsdPusher{opts: o, conn: c, log: o.Logger, last: map[string]float64{},
		stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p, nil
}

func (p *StatsdPusher) run() {
	defer close(p.done)
	t := time.NewTicker(p.opts.FlushPeriod)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			_ = p.Flush()
			return
		case <-t.C:
			if err := p.Flush(); err != nil && time.Since(p.lastErr) > time.Minute {
				p.lastErr = time.Now()
				p.log.Warn("statsd push failed", "addr", p.opts.Addr, "err", err)
			}
		}
	}
}

// Stop pushes once more and closes the socket.
func (p *StatsdPusher) Stop() {
	p.once.Do(func() {
		close(p.stop)
		<-p.done
		_ = p.conn.Close()
	})
}

// Flush pushes the registry once.
func (p *StatsdPusher) Flush() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var pkt []byte
	var firstErr error
	send := func() {
		if len(pkt) == 0 {
			return
		}
		if _, err := p.conn.Write(pkt); err != nil && firstErr == nil {
			firstErr = err
		}
		pkt = pkt[:0]
	}
	add := func(line string) {
		if len(pkt) > 0 && len(pkt)+1+len(line) > maxPacket {
			send()
		}
		if len(pkt) > 0 {
			pkt = append(pkt, '\n')
		}
		pkt = append(pkt, line...)
	}
	for _, f := range p.opts.gather() {
		for _, s := range f.Samples {
			key := p.opts.Prefix + statsdName(s)
			switch kind(f, s) {
			case "c":
				prev, seen := p.last[key]
				p.last[key] = s.Value
				d := s.Value - prev
				if d < 0 { // reset
					d = s.Value
				}
				if d > 0 || !seen && s.Value > 0 {
					add(key + ":" + strconv.FormatFloat(d, 'f', -1, 64) + "|c")
				}
			case "g":
				if prev, seen := p.last[key]; seen && prev == s.Value {
					continue
				}
				p.last[key] = s.Value
				v := s.Value
				if v < 0 {
					// "-N" would be read as a decrement: reset to 0 first.
					add(key + ":0|g")
				}
				add(key + ":" + strconv.FormatFloat(v, 'f', -1, 64) + "|g")
			}
		}
	}
	send()
	return firstErr
}

// kind is "c" (counter: send increases), "g" (gauge) or "" (skip).
func kind(f Family, s Sample) string {
	switch f.Type {
	case "counter":
		return "c"
	case "histogram", "summary":
		switch s.Name {
		case f.Name + "_count", f.Name + "_sum":
			return "c"
		case f.Name:
			return "g" // summary quantile
		}
		return "" // buckets
	}
	return "g"
}

// statsdName is the series name with its label values appended.
func statsdName(s Sample) string {
	var b strings.Builder
	b.WriteString(sanitize(s.Name))
	for _, p := range parseLabels(s.Labels) {
		b.WriteByte('.')
		b.WriteString(sanitize(unescape(p.value)))
	}
	return b.String()
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
			return r
		}
		return '_'
	}, s)
}

# fleet-telemetry — see README.md.
GO       ?= go
BIN      := bin
PREFIX   ?= /usr/local
FUZZTIME ?= 30s

.PHONY: all build run test race vet generate check-generate fuzz bench microbench bench-tools clean install

all: build

# `fleet-telemetry version` prints the git revision it was built from. Go
# stamps it into the build info itself only in a plain clone (not a git
# worktree) and without GOFLAGS=-buildvcs=false; this passes it in for
# the other cases (the build info's own stamp wins when there is one).
VCS_REVISION := $(shell git rev-parse HEAD 2>/dev/null)
VCS_MODIFIED := $(if $(VCS_REVISION),$(shell git diff --quiet HEAD -- 2>/dev/null || echo true))
LDFLAGS      ?= -X main.vcsRevision=$(VCS_REVISION) -X main.vcsModified=$(VCS_MODIFIED)

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/fleet-telemetry ./cmd/fleet-telemetry

# The daemon on its embedded dev config: 127.0.0.1:4443, dev certificates
# created under ./var/dev-certs, spool in ./var/spool, records on stdout.
run: build
	./$(BIN)/fleet-telemetry -dev

# Everything CI runs: vet, then the whole suite with the race detector
# (unit tests, fuzz seed corpora, the reference vectors, end-to-end tests
# that start the real binary and real peers). wsframe is pure and
# single-threaded, so it runs without the race detector, which would make
# its every-byte-boundary feeds of 1 MB messages ~15x slower.
test: vet
	$(GO) test -count=1 -timeout 5m ./wsframe
	# allocation counts are only meaningful without -race (it skips these)
	$(GO) test -count=1 -run '^(TestZeroAllocs|TestBufferPool)$$' ./proto/envelope ./netloop
	$(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v '/wsframe$$')

vet:
	$(GO) vet ./...

# Regenerates proto/pb from proto/telemetry/*.proto with the pinned
# generators (installed into ./bin) and Debian's protoc 3.21.12.
generate:
	bash proto/generate.sh

# Fails if the checked-in generated code differs from a fresh generation.
check-generate: generate
	git diff --exit-code -- proto/pb

# Runs every fuzz target for FUZZTIME each (make fuzz FUZZTIME=10m).
FUZZ_TARGETS := \
	./wsframe:FuzzDecode \
	./proto/envelope:FuzzDecode \
	./proto/record:FuzzTransform \
	./proto/record:FuzzAppendDispatched \
	./internal/tlsrecord:FuzzOpen \
	./internal/tlsrecord:FuzzDifferential \
	./spool:FuzzDecodeRecord \
	./netloop:FuzzParseRequestLine \
	./netloop:FuzzHelloReader \
	./internal/config:FuzzParseConfig \
	./forwarder/mqtt:FuzzEncode \
	./internal/vehicleconfig:FuzzCheck

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

# Longer variants of the reliability and hostile-client tests (issue #7):
# 20 SIGKILL rounds of crash consistency (FT_RELIABILITY_ROUNDS), 30 s
# broker outages, 500 connections with big partial frames.
# FT_RELIABILITY_SEED=<seed> replays a crash run's decisions.
RELIABILITY_ROUNDS ?= 20
.PHONY: reliability
reliability:
	FT_RELIABILITY_ROUNDS=$(RELIABILITY_ROUNDS) $(GO) test -race -count=1 -timeout 30m -run 'Reliability|Hostile' -v ./test/

# Micro-benchmarks of the hot path (frame decode, envelope decode, payload
# validation, spool hand-off, the whole per-record path).
microbench:
	$(GO) test -run '^$$' -bench . -benchmem ./wsframe ./proto/... ./spool ./netloop

# The load generator (bench/, see docs/performance.md), the daemon and the
# kfake broker it routes records to.
bench-tools: build
	$(GO) build -o $(BIN)/bench ./bench
	$(GO) build -o $(BIN)/kfakebroker ./test/kfakebroker

# The standard load scenarios against a fresh daemon per scenario (records
# to a kfake broker, spool ack mode), the daemon pinned to CPU 0 and the
# bench and broker to CPU 1 when the machine has two or more. Reports land
# in var/bench/. Override sizes with BENCH_ARGS, e.g.
#   make bench BENCH_ARGS='-idle-conns 50000 -duration 30s'
BENCH_OUT  ?= var/bench
BENCH_ARGS ?=
bench: bench-tools
	BENCH_OUT=$(BENCH_OUT) bash bench/run.sh $(BENCH_ARGS)

# make install [PREFIX=/usr/local] [DESTDIR=]: the binary to $(PREFIX)/bin,
# the systemd unit to $(PREFIX)/lib/systemd/system (systemd searches
# /usr/local/lib/systemd/system for units an administrator installs and
# /usr/lib/systemd/system for a distribution's; on merged-/usr Debian that
# is /lib/systemd/system), the service user's sysusers.d file, and the
# example config to /etc/fleet-telemetry (the unit reads
# /etc/fleet-telemetry/config.json whatever PREFIX is). config.json itself
# is written only when it does not exist yet: an existing one is never
# touched. Without DESTDIR (a real install) the service user is created
# with systemd-sysusers and systemd is told to re-read its units.
DESTDIR     ?=
BINDIR      ?= $(PREFIX)/bin
UNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
CONFDIR     ?= /etc/fleet-telemetry
INSTALL     ?= install

install: build
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(CONFDIR)
	$(INSTALL) -m 0755 $(BIN)/fleet-telemetry $(DESTDIR)$(BINDIR)/fleet-telemetry
	sed 's|/usr/local/bin/fleet-telemetry|$(BINDIR)/fleet-telemetry|g' systemd/fleet-telemetry.service > $(DESTDIR)$(UNITDIR)/.fleet-telemetry.service.tmp
	chmod 0644 $(DESTDIR)$(UNITDIR)/.fleet-telemetry.service.tmp
	mv -f $(DESTDIR)$(UNITDIR)/.fleet-telemetry.service.tmp $(DESTDIR)$(UNITDIR)/fleet-telemetry.service
	$(INSTALL) -m 0644 systemd/fleet-telemetry.sysusers $(DESTDIR)$(SYSUSERSDIR)/fleet-telemetry.conf
	$(INSTALL) -m 0644 systemd/config.json $(DESTDIR)$(CONFDIR)/config.json.example
	@if [ -e $(DESTDIR)$(CONFDIR)/config.json ]; then \
		echo "kept the existing $(DESTDIR)$(CONFDIR)/config.json"; \
	else \
		echo "$(INSTALL) -m 0644 systemd/config.json $(DESTDIR)$(CONFDIR)/config.json"; \
		$(INSTALL) -m 0644 systemd/config.json $(DESTDIR)$(CONFDIR)/config.json; \
	fi
	@if [ -z "$(DESTDIR)" ]; then \
		if command -v systemd-sysusers >/dev/null 2>&1; then \
			echo "systemd-sysusers $(SYSUSERSDIR)/fleet-telemetry.conf"; \
			systemd-sysusers $(SYSUSERSDIR)/fleet-telemetry.conf; \
		fi; \
		if [ -d /run/systemd/system ]; then \
			echo "systemctl daemon-reload"; systemctl daemon-reload; \
		fi; \
	fi

clean:
	rm -rf $(BIN)

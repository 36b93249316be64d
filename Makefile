# fleet-telemetry — see README.md.
GO       ?= go
BIN      := bin
PREFIX   ?= /usr/local
FUZZTIME ?= 30s

.PHONY: all build run test race vet generate check-generate fuzz bench clean

all: build

build:
	$(GO) build -o $(BIN)/fleet-telemetry ./cmd/fleet-telemetry

# The daemon on its embedded dev config: 127.0.0.1:4443, dev certificates
# created under ./var/dev-certs, spool in ./var/spool, records on stdout.
run: build
	./$(BIN)/fleet-telemetry -dev

# Everything CI runs: vet, then the whole suite with the race detector
# (unit tests, fuzz seed corpora, the reference vectors, end-to-end tests
# that start the real binary).
test: vet
	$(GO) test -race -count=1 -timeout 20m ./...

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
	./spool:FuzzDecodeRecord \
	./netloop:FuzzParseRequestLine

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

# Micro-benchmarks of the hot path (frame decode, envelope decode, payload
# validation, spool hand-off, the whole per-record path).
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./wsframe ./proto/... ./spool ./netloop

clean:
	rm -rf $(BIN)

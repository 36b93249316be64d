#!/usr/bin/env bash
# Runs the standard scenarios (idle, throughput, rate, storm) with the
# binaries `make bench-tools` built. With two or more CPUs the daemon is
# pinned to CPU 0 and the bench and its kfake broker to CPU 1, so the
# daemon's CPU figures are not mixed with the load generator's.
# Extra arguments are passed to bin/bench (later flags win).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_OUT:-var/bench}
mkdir -p "$out"
[ -f var/dev-certs/ca.key ] || ./bin/fleet-telemetry certs dev var/dev-certs
pin=() server_cpus=() broker_cpus=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
	pin=(taskset -c 1)
	server_cpus=(-server-cpus 0)
	broker_cpus=(-broker-cpus 1)
fi
set -x
exec "${pin[@]}" ./bin/bench -spawn -scenario standard \
	-daemon-bin bin/fleet-telemetry -broker-bin bin/kfakebroker -certs var/dev-certs \
	"${server_cpus[@]}" "${broker_cpus[@]}" \
	-datums 20 -record-bytes 512 \
	-idle-conns 2000 -conns 200 -inflight 8 -rate-conns 200 -rate 10 -storm-workers 256 \
	-duration 10s -warmup 2s \
	-json "$out/bench.json" -html "$out/bench.html" "$@"

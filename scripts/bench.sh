#!/usr/bin/env bash
# Reproduces the load-generator figures in BENCHMARKS.md on this machine:
# a release server on 127.0.0.1 and `tickcast-bench` against it, one run per
# scenario, each bounded in time. Usage: scripts/bench.sh [duration, default 10s]
# PIN=1: the server on CPU 0 (with --writers 1), the load generator on CPU 1
# (taskset; scripts/bench-lib.sh); PIN=0 (default): both anywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10s}"
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh # (the script has cd-ed to the repository root)
PIN_MODES=$(pin_modes)
if [ "$PIN_MODES" = "0 1" ]; then
    echo "scripts/bench.sh runs one mode: PIN=0 or PIN=1 (PIN=both is for bench-peers.sh and bench-compare.sh)" >&2
    exit 2
fi
pin_mode "$PIN_MODES"
cargo build --release --quiet --workspace
BIN=target/release/tickcast
BENCH=target/release/tickcast-bench
PORT=18480
FEED_PORT=18481

run() { # name, server flags..., -- bench flags...
    local name="$1"; shift
    local server_args=() bench_args=()
    while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do server_args+=("$1"); shift; done
    [ "$#" -gt 0 ] && shift
    bench_args=("$@")
    # Pinned to one core: one writer thread.
    if [ "$PINNED" = 1 ]; then server_args=(--writers 1 "${server_args[@]}"); fi
    "${SERVER_PIN[@]}" "$BIN" --listen "127.0.0.1:$PORT" --log warn "${server_args[@]}" &
    local pid=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
        sleep 0.05
    done
    echo "== $name"
    echo "   server: ${SERVER_PIN[*]} tickcast ${server_args[*]}"
    echo "   bench:  ${BENCH_PIN[*]} tickcast-bench ${bench_args[*]}"
    "${BENCH_PIN[@]}" "$BENCH" --server "127.0.0.1:$PORT" --duration "$DURATION" "${bench_args[@]}" || true
    kill -TERM "$pid"; wait "$pid" || true
}

run "target: 100 subs x 5 of 50 symbols, 200k ticks/s (2M msgs/s), msgpack" \
    --symbols 50 --rate 200000 -- --subscribers 100 --per-sub 5 --symbols 50 --encoding msgpack
run "same, protobuf" \
    --symbols 50 --rate 200000 -- --subscribers 100 --per-sub 5 --symbols 50 --encoding protobuf
run "same, json" \
    --symbols 50 --rate 200000 -- --subscribers 100 --per-sub 5 --symbols 50 --encoding json
run "tcp feed driven by the bench, 100k ticks/s (1M msgs/s), latency from send" \
    --feed "tcp://127.0.0.1:$FEED_PORT" -- --subscribers 100 --per-sub 5 --symbols 50 \
    --drive-feed "127.0.0.1:$FEED_PORT" --rate 100000
run "light load: 100 subs x 5 of 50, 10k ticks/s (100k msgs/s)" \
    --symbols 50 --rate 10000 -- --subscribers 100 --per-sub 5 --symbols 50
# Slow consumers: the same 1M msgs/s load without, then with, subscribers
# on every symbol that cannot keep up. Healthy figures should not move, and
# the server's RSS should stay flat (--rss-every prints its timeline).
run "1M msgs/s (100k ticks/s, 100 subs x 5 of 50), healthy only" \
    --symbols 50 --rate 100000 -- --subscribers 100 --per-sub 5 --symbols 50
run "same plus 5 stalled subscribers" \
    --symbols 50 --rate 100000 -- --subscribers 100 --per-sub 5 --symbols 50 --stalled 5 --rss-every 1s
run "same plus 3 slow readers at 64 KiB/s" \
    --symbols 50 --rate 100000 -- --subscribers 100 --per-sub 5 --symbols 50 \
    --slow-readers 3 --slow-read-rate 65536 --rss-every 1s

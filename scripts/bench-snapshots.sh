#!/usr/bin/env bash
# subscribe ["*"] over a large universe: time to the last snapshot and the
# server's peak RSS (tickcast-bench --snapshots), against a release server
# on 127.0.0.1 whose synthetic feed declares SYMBOLS symbols and ticks them
# at RATE ticks/s for WARM seconds first (so books and quotes have state).
#
# Usage: scripts/bench-snapshots.sh [SYMBOLS, default 100000]
# Environment:
#   RATE       synthetic ticks/s (default 100000)
#   WARM       seconds of ticking before the first run (default 10)
#   ROUNDS     storms per encoding and depth (default 3)
#   SERVER_BIN server binary (default target/release/tickcast, built if missing)
# Each run is bounded (the load generator gives up after 180 s) and the
# server is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
SYMBOLS="${1:-100000}"
RATE="${RATE:-100000}"
WARM="${WARM:-10}"
ROUNDS="${ROUNDS:-3}"
SERVER_BIN="${SERVER_BIN:-target/release/tickcast}"
if [ "$SERVER_BIN" = target/release/tickcast ] && [ ! -x "$SERVER_BIN" ]; then
    cargo build --release --quiet -p tickcast
fi
[ -x target/release/tickcast-bench ] || cargo build --release --quiet -p tickcast-loadgen
PORT=18690
"$SERVER_BIN" --listen "127.0.0.1:$PORT" --symbols "$SYMBOLS" --max-symbols "$SYMBOLS" --rate "$RATE" \
    >target/bench-snapshots.log 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fs "127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
sleep "$WARM"
for run in "msgpack 10" "protobuf 10" "json 10" "msgpack full"; do
    set -- $run
    for round in $(seq "$ROUNDS"); do
        echo "== $1, depth $2, round $round"
        timeout 200 target/release/tickcast-bench --server "127.0.0.1:$PORT" --snapshots --symbols "$SYMBOLS" \
            --encoding "$1" --depth "$2" --server-pid "$PID" | sed -n '2,4p'
    done
done

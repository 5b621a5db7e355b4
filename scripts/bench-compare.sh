#!/usr/bin/env bash
# Two tickcast server builds side by side on the two rows a refactor must
# not move, with the same load generator, interleaved so that a noisy
# minute hits both alike:
#
#   target  scripts/bench.sh's first row: synthetic feed, 50 symbols at
#           200k ticks/s, 100 subscribers x 5 of 50, msgpack (2M msgs/s),
#           latency from ts_ingest
#   W2      scripts/bench-peers.sh's W2 row: tcp feed driven by the load
#           generator at 100k ticks/s, 100 subscribers x 5 of 50
#           (1M msgs/s), latency from the send stamp, CPU from /proc
#
# Usage: scripts/bench-compare.sh BEFORE_BIN AFTER_BIN [duration, default 10s]
#   BEFORE_BIN, AFTER_BIN  server binaries (e.g. a release build of the old
#                          commit copied aside, and target/release/tickcast)
# Environment:
#   ROUNDS   rounds per server and row (default 3)
#   ROWS     which rows to run (default "target W2"; e.g. ROWS=W2 for a
#            change that only W2's latency can show, with runs longer than
#            10 s)
#   PORT, FEED_PORT  the ports it uses (default 18680, 18681; another
#            bench on the same machine may hold them)
#   BENCH    load generator command (default: target/release/tickcast-bench,
#            built if missing); e.g. BENCH="OLD_BIN bench" for a load
#            generator that was still a subcommand of the server
#   PIN      0 (default): server and load generator share both cores; 1:
#            server on CPU 0 with --writers 1, load generator on CPU 1
#            (taskset, scripts/bench-lib.sh); both: each run both ways
#
# Output: one line per run, then per row and server the median of each
# figure over the rounds; every JSON report in target/bench-compare/.
# Each run is bounded in time and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$#" -ge 2 ] || { echo "usage: $0 BEFORE_BIN AFTER_BIN [duration]" >&2; exit 2; }
BEFORE="$1"
AFTER="$2"
DURATION="${3:-10s}"
ROUNDS="${ROUNDS:-3}"
ROWS="${ROWS:-target W2}"
if [ -z "${BENCH:-}" ]; then
    [ -x target/release/tickcast-bench ] || cargo build --release --quiet -p tickcast-loadgen
    BENCH=target/release/tickcast-bench
fi
OUT=target/bench-compare
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
PORT="${PORT:-18680}"
FEED_PORT="${FEED_PORT:-18681}"

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh # (the script has cd-ed to the repository root)
PIN_MODES=$(pin_modes)


run() { # row, label, server binary
    local row="$1" label="$2" bin="$3" bench_args writers=()
    # Pinned to one core: one writer thread.
    if [ "$PINNED" = 1 ]; then writers=(--writers 1); fi
    case "$row" in
    target)
        "${SERVER_PIN[@]}" "$bin" --listen "127.0.0.1:$PORT" --log warn "${writers[@]}" --symbols 50 --rate 200000 &
        PID=$!
        bench_args=(--subscribers 100 --per-sub 5 --symbols 50 --encoding msgpack)
        ;;
    W2)
        "${SERVER_PIN[@]}" "$bin" --listen "127.0.0.1:$PORT" --log warn "${writers[@]}" --feed "tcp://127.0.0.1:$FEED_PORT" &
        PID=$!
        bench_args=(--target tickcast --drive-feed "127.0.0.1:$FEED_PORT" --subscribers 100 --per-sub 5
            --symbols 50 --rate 100000)
        ;;
    esac
    wait_port "$PORT"
    local line
    # shellcheck disable=SC2086
    if line=$("${BENCH_PIN[@]}" $BENCH --server "127.0.0.1:$PORT" --server-pid "$PID" --duration "$DURATION" "${bench_args[@]}" --json |
        tail -1) && [ "${line:0:1}" = "{" ]; then
        if [ "$PINNED" = 1 ]; then label="$label-pinned"; fi
        printf '{"row":"%s","server":"%s",%s\n' "$row" "$label" "${line:1}" >>"$RESULTS"
        python3 - "$row" "$label" "$line" <<'EOF'
import json, sys
row, label, r = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print(f"{row:6} {label:13} delivered {r['delivered_per_sec']:>10,.0f}/s  p50 {r['p50_us']/1000:6.2f} ms  "
      f"p99 {r['p99_us']/1000:6.2f} ms  p99.9 {r['p999_us']/1000:6.2f} ms  "
      f"CPU {r['server_cpu_ns_per_msg']:5.0f} ns/msg  RSS {r['server_rss_bytes']/2**20:5.1f} MiB  seq errors {r['seq_errors']}")
EOF
    else
        echo "$row $label: the run failed" >&2
    fi
    stop_server
}

for round in $(seq "$ROUNDS"); do
    echo "== round $round/$ROUNDS"
    for mode in $PIN_MODES; do
        pin_mode "$mode"
        for row in $ROWS; do
            # Alternate which server goes first, so neither always runs warm.
            if [ $((round % 2)) -eq 1 ]; then
                run "$row" before "$BEFORE"
                run "$row" after "$AFTER"
            else
                run "$row" after "$AFTER"
                run "$row" before "$BEFORE"
            fi
        done
    done
done

echo "== medians over $ROUNDS rounds ($DURATION each)"
python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = [("delivered_per_sec", "delivered/s", 1, "{:,.0f}"), ("p50_us", "p50 ms", 1000, "{:.2f}"),
        ("p99_us", "p99 ms", 1000, "{:.2f}"), ("p999_us", "p99.9 ms", 1000, "{:.2f}"),
        ("server_cpu_ns_per_msg", "CPU ns/msg", 1, "{:.0f}"), ("server_rss_bytes", "RSS MiB", 2**20, "{:.1f}")]
print("| row | server | " + " | ".join(k[1] for k in keys) + " | seq errors |")
print("|---" * (len(keys) + 3) + "|")
for row in ("target", "W2"):
    for label in ("before", "after", "before-pinned", "after-pinned"):
        rs = [r for r in runs if r["row"] == row and r["server"] == label]
        if not rs:
            continue
        cells = [k[3].format(statistics.median(r[k[0]] for r in rs) / k[2]) for k in keys]
        print(f"| {row} | {label} | " + " | ".join(cells) + f" | {sum(r['seq_errors'] for r in rs)} |")
EOF

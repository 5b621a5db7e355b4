#!/usr/bin/env bash
# Recording overhead on the live path: the server's CPU at 1M ticks/s on the
# synthetic feed with 10 subscribers, without and with --record, in
# alternating rounds (this machine is shared and noisy: compare within a
# round, quote medians). Also checks that every tick was recorded.
#
# Usage: scripts/bench-record.sh [duration, default 10s] [rounds, default 3]
# Output: a table on stdout; raw rows in target/bench-record/results.jsonl.
# The tick log of each recording run goes to $RECORD_DIR (default under
# target/, about 70 MB per second of run) and is deleted after the run.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10s}"
ROUNDS="${2:-3}"
RATE=1000000
cargo build --release --quiet --workspace
BIN=target/release/tickcast
BENCH=target/release/tickcast-bench
PORT=18590
OUT=target/bench-record
RECORD_DIR="${RECORD_DIR:-$OUT/ticks}"
mkdir -p "$OUT"
: > "$OUT/results.jsonl"

metric() { # name -> value from /metrics
    curl -sf "http://127.0.0.1:$PORT/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}

run() { # round, mode (off|on)
    local round="$1" mode="$2" args=()
    rm -rf "$RECORD_DIR"
    [ "$mode" = on ] && args=(--record "$RECORD_DIR" --fsync 1s)
    "$BIN" --listen "127.0.0.1:$PORT" --log warn --symbols 100 --rate "$RATE" "${args[@]}" &
    local pid=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
        sleep 0.05
    done
    local published_before
    published_before=$(metric tickcast_updates_published_total)
    local started=$SECONDS
    local report
    report=$("$BENCH" --server "127.0.0.1:$PORT" --duration "$DURATION" --subscribers 10 --per-sub 10 \
        --symbols 100 --server-pid "$pid" --json | tail -1)
    local published_after recorded dropped record_bytes
    published_after=$(metric tickcast_updates_published_total)
    recorded=$(metric tickcast_record_ticks_total)
    dropped=$(metric tickcast_record_dropped_total)
    record_bytes=$(metric tickcast_record_bytes_total)
    kill -TERM "$pid"; wait "$pid" || true
    local disk=0
    [ -d "$RECORD_DIR" ] && disk=$(du -sb "$RECORD_DIR" | cut -f1)
    rm -rf "$RECORD_DIR"
    python3 - "$round" "$mode" "$report" "$published_before" "$published_after" "$((SECONDS - started))" \
        "$recorded" "$dropped" "$record_bytes" "$disk" >>"$OUT/results.jsonl" <<'EOF'
import json, sys
round_, mode, report, before, after, secs, recorded, dropped, rbytes, disk = sys.argv[1:]
r = json.loads(report)
ticks_per_sec = (float(after) - float(before)) / max(float(secs), 1)
print(json.dumps({
    "round": int(round_), "mode": mode,
    "server_cpu_cores": r["server_cpu_cores"],
    "ticks_per_sec": ticks_per_sec,
    "cpu_ns_per_tick": r["server_cpu_cores"] * 1e9 / max(ticks_per_sec, 1),
    "p99_us": r["p99_us"], "seq_errors": r["seq_errors"],
    "rss_mib": r["server_rss_bytes"] / 2**20,
    "recorded": float(recorded), "dropped": float(dropped),
    "record_bytes": float(rbytes), "disk_bytes": int(disk),
}))
EOF
    tail -1 "$OUT/results.jsonl"
}

for round in $(seq "$ROUNDS"); do
    run "$round" off
    run "$round" on
done

python3 - "$OUT/results.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print()
print("| round | cores off | cores on | ratio | ns/tick off | ns/tick on | p99 off | p99 on | recorded | dropped |")
print("|---|---|---|---|---|---|---|---|---|---|")
ratios = []
for rnd in sorted({r["round"] for r in rows}):
    off = next(r for r in rows if r["round"] == rnd and r["mode"] == "off")
    on = next(r for r in rows if r["round"] == rnd and r["mode"] == "on")
    ratio = on["cpu_ns_per_tick"] / off["cpu_ns_per_tick"]
    ratios.append(ratio)
    print(f"| {rnd} | {off['server_cpu_cores']:.3f} | {on['server_cpu_cores']:.3f} | {ratio:.3f} | "
          f"{off['cpu_ns_per_tick']:.0f} | {on['cpu_ns_per_tick']:.0f} | {off['p99_us']/1000:.2f} ms | "
          f"{on['p99_us']/1000:.2f} ms | {on['recorded']:.0f} | {on['dropped']:.0f} |")
print(f"\nmedian CPU ratio with --record: {statistics.median(ratios):.3f} (target: under 1.10)")
EOF

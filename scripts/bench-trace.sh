#!/usr/bin/env bash
# Where the time goes between a feed read and the socket write
# (issue 19, goal 2): the release server with --trace-latency, driven by
# the same load generator and workloads as scripts/bench-peers.sh.
#
#   W1   100 subscribers x 5 of 50 symbols, 10k ticks/s    (100k msgs/s)
#   W3   1,000 subscribers x 10 of 100 symbols, 20k ticks/s (2M msgs/s)
#        each with --trace-latency $EVERY: the per-stage quantiles from
#        /metrics (tickcast_trace_stage_ns, scraped at the end of the run;
#        they cover the whole run, warm-up included) beside the load
#        generator's publish-to-receive figures.
#   W2   100 subscribers x 5 of 50 symbols, 100k ticks/s (1M msgs/s),
#        alternately with tracing off and on, $ROUNDS times each: the cost
#        of tracing (server CPU ns per delivered message, p99).
#
# Every run is bounded: warm-up + duration, against a fresh server.
# Output: target/bench-trace/ (each run's JSON report and /metrics text)
# and the tables on stdout, in Markdown.
#
# Usage: scripts/bench-trace.sh [duration per run, default 10s]
#        EVERY=100 ROUNDS=2 scripts/bench-trace.sh 10s
#   EVERY   sample 1 tick in EVERY (default 100)
#   ROUNDS  W2 off/on pairs (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10s}"
EVERY="${EVERY:-100}"
ROUNDS="${ROUNDS:-2}"
OUT=target/bench-trace
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.metrics
say() { printf '\033[1m==== %s\033[0m\n' "$*" >&2; }

say "building tickcast and tickcast-bench (release)"
cargo build --release --quiet -p tickcast -p tickcast-loadgen
BIN=target/release/tickcast
BENCH=target/release/tickcast-bench
TC_PORT=18590
TC_FEED=18591

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

run() { # name, --trace-latency value, bench flags...
    local name="$1" every="$2"
    shift 2
    "$BIN" --listen "127.0.0.1:$TC_PORT" --feed "tcp://127.0.0.1:$TC_FEED" --log warn --trace-latency "$every" &
    PID=$!
    wait_port "$TC_PORT"
    local cmd=("$BENCH" --target tickcast --server "127.0.0.1:$TC_PORT" --drive-feed "127.0.0.1:$TC_FEED"
        --server-pid "$PID" "$@" --json)
    say "$name (--trace-latency $every): ${cmd[*]}"
    "${cmd[@]}" | tail -1 >"$OUT/$name.json"
    curl -sf "http://127.0.0.1:$TC_PORT/metrics" >"$OUT/$name.metrics" || true
    stop_server
}

W12=(--subscribers 100 --per-sub 5 --symbols 50)
W3=(--subscribers 1000 --per-sub 10 --symbols 100 --rate 20000 --warmup 5s)
run W1 "$EVERY" "${W12[@]}" --rate 10000 --duration "$DURATION"
run W3 "$EVERY" "${W3[@]}" --duration "$DURATION"
for round in $(seq "$ROUNDS"); do
    run "W2-off-$round" 0 "${W12[@]}" --rate 100000 --duration "$DURATION"
    run "W2-on-$round" "$EVERY" "${W12[@]}" --rate 100000 --duration "$DURATION"
done

python3 - "$OUT" "$EVERY" <<'EOF'
import json, re, sys
from pathlib import Path

out, every = Path(sys.argv[1]), sys.argv[2]
STAGES = ["feed_parse", "ring_wait", "fanout", "flush_wait", "writer_wake", "socket_write", "total"]
QUANTILES = ["0.5", "0.99", "0.999"]

def stages(path):
    """{stage: {quantile or 'sum'/'count': value}} from a /metrics text."""
    got = {}
    if not path.exists():
        return got
    for line in path.read_text().splitlines():
        m = re.match(r'tickcast_trace_stage_ns(_sum|_count)?\{stage="(\w+)"(?:,quantile="([\d.]+)")?\} (\S+)', line)
        if m:
            key = m.group(3) or m.group(1)[1:]
            got.setdefault(m.group(2), {})[key] = float(m.group(4))
    return got

def report(name):
    p = out / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() and p.read_text().startswith("{") else {}

for w in ["W1", "W3"]:
    s, r = stages(out / f"{w}.metrics"), report(w)
    print(f"\n{w}, --trace-latency {every}: µs per delivered message "
          f"(load generator: {r.get('delivered_per_sec', 0):,.0f} msgs/s, "
          f"p50 {r.get('p50_us', 0):,.0f} / p99 {r.get('p99_us', 0):,.0f} / p99.9 {r.get('p999_us', 0):,.0f} µs)\n")
    print("| stage | p50 | p99 | p99.9 | mean | share of mean total |")
    print("|---|---:|---:|---:|---:|---:|")
    total_sum = s.get("total", {}).get("sum", 0) or 1
    for st in STAGES:
        v = s.get(st, {})
        n = v.get("count", 0) or 1
        q = [f"{v.get(k, 0) / 1000:,.1f}" for k in QUANTILES]
        share = "" if st == "total" else f"{100 * v.get('sum', 0) / total_sum:.0f} %"
        print(f"| {st} | {' | '.join(q)} | {v.get('sum', 0) / n / 1000:,.1f} | {share} |")
    print(f"\n({int(s.get('total', {}).get('count', 0)):,} traced deliveries)")

print(f"\nW2, tracing off vs --trace-latency {every} (alternating runs)\n")
print("| run | delivered msgs/s | p99 µs | server CPU ns/msg |")
print("|---|---:|---:|---:|")
for p in sorted(out.glob("W2-*.json"), key=lambda p: (p.stem.split("-")[2], p.stem)):
    r = report(p.stem)
    print(f"| {p.stem} | {r.get('delivered_per_sec', 0):,.0f} | {r.get('p99_us', 0):,.0f} | "
          f"{r.get('server_cpu_ns_per_msg', 0):,.0f} |")
EOF

#!/usr/bin/env bash
# JSON lines against binary records on the tcp feed, same server build, same
# run: scripts/bench-peers.sh's W2 row (tcp feed driven by the load
# generator at 100k ticks/s, 100 subscribers x 5 of 50 symbols, 1M msgs/s,
# latency from the send stamp, server CPU from /proc), once with the
# publisher sending JSON lines and once binary records
# (`tickcast-bench --feed-format json|binary`; the server's --feed-format
# is its default, auto). Interleaved round by round, alternating which goes
# first, so that a noisy minute hits both alike.
#
# Usage: scripts/bench-feed.sh [duration, default 10s]
# Environment:
#   ROUNDS   rounds per format (default 3)
#   BIN      server binary (default target/release/tickcast)
#   BENCH    load generator (default target/release/tickcast-bench)
#
# Besides the bench's figures, each run reads the CPU time of the server's
# feed thread (`feed-tcp`, from /proc/PID/task) and divides it by the ticks
# it ingested (`tickcast_ticks_ingested_total`), over the server's whole
# life (warm-up included): the feed's own cost per tick, where the format
# makes its difference.
#
# Output: one line per run, then per format the median of each figure over
# the rounds; every JSON report in target/bench-feed/results.jsonl, the
# servers' logs in target/bench-feed/server.log. Each run is bounded in time
# and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10s}"
ROUNDS="${ROUNDS:-3}"
BIN="${BIN:-target/release/tickcast}"
BENCH="${BENCH:-target/release/tickcast-bench}"
if [ ! -x "$BIN" ] || [ ! -x "$BENCH" ]; then
    cargo build --release --quiet --workspace
fi
OUT=target/bench-feed
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
PORT=18780
FEED_PORT=18781

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh # (the script has cd-ed to the repository root)


run() { # feed format: json | binary
    local format="$1" line
    "$BIN" --listen "127.0.0.1:$PORT" --log warn --feed "tcp://127.0.0.1:$FEED_PORT" >>"$OUT/server.log" 2>&1 &
    PID=$!
    wait_port "$PORT"
    if line=$("$BENCH" --server "127.0.0.1:$PORT" --server-pid "$PID" --duration "$DURATION" \
        --target tickcast --drive-feed "127.0.0.1:$FEED_PORT" --feed-format "$format" \
        --subscribers 100 --per-sub 5 --symbols 50 --rate 100000 --json | tail -1) && [ "${line:0:1}" = "{" ]; then
        line=$(python3 - "$format" "$line" "$PID" "$PORT" <<'EOF'
import json, os, sys, urllib.request
fmt, r, pid, port = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
cpu_ns = 0
for task in os.listdir(f"/proc/{pid}/task"):
    if open(f"/proc/{pid}/task/{task}/comm").read().strip() == "feed-tcp":
        fields = open(f"/proc/{pid}/task/{task}/stat").read().rsplit(")", 1)[1].split()
        cpu_ns += (int(fields[11]) + int(fields[12])) * 10**9 // os.sysconf("SC_CLK_TCK")
metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
ticks = next(float(l.split()[1]) for l in metrics.splitlines() if l.startswith("tickcast_ticks_ingested_total "))
r = {"feed_format": fmt, **r, "feed_thread_ns_per_tick": cpu_ns / max(ticks, 1), "feed_ticks": ticks}
print(json.dumps(r))
EOF
)
        echo "$line" >>"$RESULTS"
        python3 - "$format" "$line" <<'EOF'
import json, sys
fmt, r = sys.argv[1], json.loads(sys.argv[2])
print(f"W2 {fmt:6} delivered {r['delivered_per_sec']:>10,.0f}/s  p50 {r['p50_us']/1000:6.2f} ms  "
      f"p99 {r['p99_us']/1000:6.2f} ms  p99.9 {r['p999_us']/1000:6.2f} ms  "
      f"CPU {r['server_cpu_ns_per_msg']:5.0f} ns/msg ({r['server_cpu_cores']:.2f} cores)  "
      f"feed thread {r['feed_thread_ns_per_tick']:4.0f} ns/tick  "
      f"RSS {r['server_rss_bytes']/2**20:5.1f} MiB  seq errors {r['seq_errors']}")
EOF
    else
        echo "W2 $format: the run failed" >&2
    fi
    stop_server
}

for round in $(seq "$ROUNDS"); do
    echo "== round $round/$ROUNDS"
    if [ $((round % 2)) -eq 1 ]; then
        run json
        run binary
    else
        run binary
        run json
    fi
done

echo "== medians over $ROUNDS rounds ($DURATION each)"
python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = [("delivered_per_sec", "delivered/s", 1, "{:,.0f}"), ("p50_us", "p50 ms", 1000, "{:.2f}"),
        ("p99_us", "p99 ms", 1000, "{:.2f}"), ("p999_us", "p99.9 ms", 1000, "{:.2f}"),
        ("server_cpu_ns_per_msg", "CPU ns/msg", 1, "{:.0f}"), ("server_cpu_cores", "cores", 1, "{:.2f}"),
        ("feed_thread_ns_per_tick", "feed thread ns/tick", 1, "{:.0f}"),
        ("server_rss_bytes", "RSS MiB", 2**20, "{:.1f}")]
print("| feed | " + " | ".join(k[1] for k in keys) + " | seq errors |")
print("|---" * (len(keys) + 2) + "|")
medians = {}
for fmt in ("json", "binary"):
    rs = [r for r in runs if r["feed_format"] == fmt]
    if not rs:
        continue
    medians[fmt] = {k[0]: statistics.median(r[k[0]] for r in rs) for k in keys}
    cells = [k[3].format(medians[fmt][k[0]] / k[2]) for k in keys]
    print(f"| {fmt} | " + " | ".join(cells) + f" | {sum(r['seq_errors'] for r in rs)} |")
if len(medians) == 2:
    j, b = medians["json"]["server_cpu_ns_per_msg"], medians["binary"]["server_cpu_ns_per_msg"]
    print(f"binary / json server CPU per message: {b / j:.3f} ({j - b:+.0f} ns/msg saved)")
    j, b = medians["json"]["feed_thread_ns_per_tick"], medians["binary"]["feed_thread_ns_per_tick"]
    print(f"binary / json feed thread CPU per tick: {b / j:.3f} ({j - b:+.0f} ns/tick saved)")
EOF

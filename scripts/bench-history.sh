#!/usr/bin/env bash
# What per-topic history costs and buys (BENCHMARKS.md, "History and
# resume"), in three parts:
#
#   a  scripts/bench-compare.sh's two rows (target, W2) with history off
#      (`--history 0`, reported as "before") against on (the defaults,
#      "after"), interleaved rounds, medians: delivered/s, latency, server
#      CPU per message, RSS
#   b  history memory at W2 (1M msgs/s): one W2 run of HOLD with history
#      on, the server's /metrics scraped every second: bytes per frame,
#      bytes per symbol per second of history, when --history-bytes is
#      reached (so the window it holds at this rate), RSS
#   c  tickcast-bench --resume RESUME against a synthetic feed (--symbols
#      10 --rate 50000, history on), msgpack and json alternating, ROUNDS
#      each, medians: time to the ack, to the RESUME-th missed update and
#      to the first live one, missed updates/s, bytes
#
# Usage: scripts/bench-history.sh [duration of a's runs, default 10s]
# Environment:
#   ROUNDS   rounds of a and c (default 3)
#   HOLD     measured time of b's W2 run (default 40s; at 1M msgs/s the
#            256 MiB bound is reached in well under that)
#   RESUME   missed updates per resume in c (default 10000)
#   PARTS    which parts to run (default "a b c")
# Output: a's per-run lines and median table (bench-compare.sh's), b's
# scrape timeline and figures, c's per-run lines and median table; the raw
# data in target/bench-history/. Every run is bounded in time and stops by
# itself; the server is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10s}"
ROUNDS="${ROUNDS:-3}"
HOLD="${HOLD:-40s}"
RESUME="${RESUME:-10000}"
PARTS="${PARTS:-a b c}"
SERVER_BIN=target/release/tickcast
BENCH=target/release/tickcast-bench
[ -x "$SERVER_BIN" ] && [ -x "$BENCH" ] || cargo build --release --quiet -p tickcast -p tickcast-loadgen
OUT=target/bench-history
mkdir -p "$OUT"
PORT=18700
FEED_PORT=18701

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh # (the script has cd-ed to the repository root)

case " $PARTS " in *" a "*)
    # The server without history, as a binary bench-compare.sh can start
    # (exec: the PID it stops and reads /proc of is the server's).
    OFF="$OUT/tickcast-history-off"
    printf '#!/bin/sh\nexec "%s" --history 0 "$@"\n' "$PWD/$SERVER_BIN" >"$OFF"
    chmod +x "$OFF"
    echo "== a: target and W2, history off (before) against on (after)"
    ROUNDS="$ROUNDS" BENCH="$BENCH" scripts/bench-compare.sh "$OFF" "$SERVER_BIN" "$DURATION"
    cp target/bench-compare/results.jsonl "$OUT/a-results.jsonl"
    ;;
esac

case " $PARTS " in *" b "*)
    echo "== b: history memory at W2 (1M msgs/s), $HOLD, /metrics every second"
    "$SERVER_BIN" --listen "127.0.0.1:$PORT" --log warn --feed "tcp://127.0.0.1:$FEED_PORT" &
    PID=$!
    wait_port "$PORT"
    SCRAPE="$OUT/b-scrape.txt"
    : >"$SCRAPE"
    # seconds since the epoch, history bytes, frames, evicted, RSS
    while kill -0 "$PID" 2>/dev/null; do
        t=$(date +%s.%N)
        curl -fs "127.0.0.1:$PORT/metrics" 2>/dev/null | awk -v t="$t" '
            /^tickcast_history_bytes /{b=$2} /^tickcast_history_frames /{f=$2}
            /^tickcast_history_evicted_total /{e=$2} /^process_resident_memory_bytes /{r=$2}
            END {if (b != "") print t, b, f, e, r}' >>"$SCRAPE" || true
        sleep 1
    done &
    SCRAPER=$!
    $BENCH --server "127.0.0.1:$PORT" --server-pid "$PID" --duration "$HOLD" --target tickcast \
        --drive-feed "127.0.0.1:$FEED_PORT" --subscribers 100 --per-sub 5 --symbols 50 --rate 100000 \
        --json >"$OUT/b-bench.txt"
    stop_server
    wait "$SCRAPER" 2>/dev/null || true
    sed -n '1,4p' "$OUT/b-bench.txt"
    python3 - "$SCRAPE" "$OUT/b-bench.txt" <<'EOF'
import json, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
run = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
BOUND, SYMBOLS = 256 * 2**20, 50
t0 = next(r[0] for r in rows if r[1] > 0)  # the feed's first frame kept
print("  t s   history MiB   frames      evicted     RSS MiB")
for t, b, f, e, rss in rows:
    if t >= t0 - 1:
        print(f"  {t - t0:5.1f} {b / 2**20:9.1f} {f:12,.0f} {e:12,.0f} {rss / 2**20:9.1f}")
# Growth before any eviction: from the first sample 2 s in (the warm-up
# subscribe burst is over) to the last one with nothing evicted.
growing = [r for r in rows if r[0] >= t0 + 2 and r[3] == 0]
a, z = growing[0], growing[-1]
bytes_per_s = (z[1] - a[1]) / (z[0] - a[0])
frames_per_s = (z[2] - a[2]) / (z[0] - a[0])
full = next((r for r in rows if r[3] > 0), None)
print(f"  frames kept per second   {frames_per_s:,.0f} (the feed sent {run['published_per_sec'] or 0:,.0f} ticks/s)")
print(f"  bytes per frame          {z[1] / z[2]:.1f} (payload, frame header and {64} bytes of entry overhead)")
print(f"  history growth           {bytes_per_s / 2**20:.2f} MiB/s, {bytes_per_s / SYMBOLS / 1024:.1f} KiB per symbol "
      f"per second of history")
print(f"  256 MiB reached          predicted {BOUND / bytes_per_s:.1f} s; "
      + (f"first eviction seen at {full[0] - t0:.1f} s, {full[1] / 2**20:.1f} MiB, {full[2]:,.0f} frames"
         if full else "not within the run"))
last = rows[-1]
print(f"  at the end               {last[1] / 2**20:.1f} MiB, {last[2]:,.0f} frames "
      f"({last[2] / max(frames_per_s, 1):.1f} s of history), {last[3]:,.0f} evicted, RSS {last[4] / 2**20:.1f} MiB "
      f"(the bench's reading: {run['server_rss_bytes'] / 2**20:.1f} MiB)")
EOF
    ;;
esac

case " $PARTS " in *" c "*)
    echo "== c: --resume $RESUME against --symbols 10 --rate 50000"
    "$SERVER_BIN" --listen "127.0.0.1:$PORT" --log warn --symbols 10 --rate 50000 &
    PID=$!
    wait_port "$PORT"
    sleep 3
    RESULTS="$OUT/c-results.jsonl"
    : >"$RESULTS"
    for round in $(seq "$ROUNDS"); do
        # Alternate which encoding goes first.
        if [ $((round % 2)) -eq 1 ]; then encodings="msgpack json"; else encodings="json msgpack"; fi
        for encoding in $encodings; do
            if line=$(timeout 200 "$BENCH" --server "127.0.0.1:$PORT" --server-pid "$PID" --resume "$RESUME" \
                --encoding "$encoding" --json | tail -1) && [ "${line:0:1}" = "{" ]; then
                printf '{"encoding":"%s",%s\n' "$encoding" "${line:1}" >>"$RESULTS"
                python3 - "$encoding" "$line" <<'EOF'
import json, sys
e, r = sys.argv[1], json.loads(sys.argv[2])
print(f"{e:8} ack {r['resume_ack_s'] * 1000:7.2f} ms  {r['resume_missed']:,}-th missed {r['resume_nth_s'] * 1000:7.1f} ms"
      f"  first live {r['resume_live_s'] * 1000:7.1f} ms  {r['resume_updates_per_sec']:>10,.0f} updates/s"
      f"  {r['resume_bytes']:>10,} bytes  {r['resume_before_live']:,} before live")
EOF
            else
                echo "resume $encoding: the run failed" >&2
            fi
        done
    done
    stop_server
    echo "== c: medians over $ROUNDS rounds"
    python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = [("resume_ack_s", "ack ms", 1e3, "{:.2f}"), ("resume_nth_s", "N-th missed ms", 1e3, "{:.1f}"),
        ("resume_live_s", "first live ms", 1e3, "{:.1f}"), ("resume_updates_per_sec", "missed updates/s", 1, "{:,.0f}"),
        ("resume_bytes", "bytes to the N-th", 1, "{:,.0f}"), ("resume_before_live", "updates before live", 1, "{:,.0f}")]
print("| encoding | N | " + " | ".join(k[1] for k in keys) + " | bytes per update |")
print("|---" * (len(keys) + 3) + "|")
for enc in ("msgpack", "json"):
    rs = [r for r in runs if r["encoding"] == enc]
    if rs:
        med = lambda k: statistics.median(r[k] for r in rs)
        cells = [k[3].format(med(k[0]) * k[2]) for k in keys]
        print(f"| {enc} | {rs[0]['resume_missed']:,} | " + " | ".join(cells)
              + f" | {med('resume_bytes') / rs[0]['resume_missed']:.0f} |")
EOF
    ;;
esac

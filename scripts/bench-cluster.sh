#!/usr/bin/env bash
# The NATS cluster's cost, measured with the load generator (docs/CLUSTER.md):
#
#   W2 single   100 subscribers x 5 of 50 symbols at 100k ticks/s (1M msgs/s)
#               on one tickcast (the feed is its tcp:// port)
#   W2 cluster  the same load through sequencer -> nats-server -> edge 1,
#               with edge 2 following too; the subscribers are on edge 1;
#               CPU per delivered message summed over the sequencer, both
#               edges and nats-server (--extra-pids)
#   hop         one subscriber on all 50 symbols of an edge, the feed at
#               RATE_HOP ticks/s into the sequencer: records/s over the NATS
#               hop and its latency, with --nats-batch true and false
#
# Latency is from the feed's send stamp (ts_event) to the client's receive,
# through every hop. Rounds alternate the configurations; quote medians.
# Loopback only; every run is bounded (DURATION) and stops by itself.
#
#   scripts/bench-cluster.sh            # ROUNDS=3 DURATION=10s
#   ROUNDS=1 DURATION=5s scripts/bench-cluster.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
RATE=${RATE:-100000}
RATE_HOP=${RATE_HOP:-100000}
OUT=${OUT:-target/bench-cluster}
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"

cargo build --release -q -p tickcast -p tickcast-loadgen
BIN=target/release/tickcast
BENCH=target/release/tickcast-bench
NATS=$(command -v nats-server || echo /usr/sbin/nats-server)

P_SEQ=18680 F_SEQ=18681 P_E1=18682 P_E2=18683 P_NATS=18684

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh # (the script has cd-ed to the repository root)

PIDS=()
stop_all() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
trap stop_all EXIT


bench() { # label bench-args...
    local label=$1
    shift
    echo "== $label"
    "$BENCH" --json --warmup 2s --duration "$DURATION" "$@" | tee -a "$OUT/$label.log" |
        python3 -c 'import json,sys; r=json.loads(sys.stdin.read().strip().splitlines()[-1]); r["label"]=sys.argv[1]; print(json.dumps(r))' "$label" >>"$RESULTS"
    tail -n1 "$RESULTS" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("   delivered %.0f/s  p50 %.0f us  p99 %.0f us  CPU %.0f ns/msg  seq errors %d" % (r["delivered_per_sec"], r["p50_us"], r["p99_us"], r["server_cpu_ns_per_msg"], r["seq_errors"]))'
}

start_cluster() { # extra sequencer flags...
    "$NATS" -a 127.0.0.1 -p "$P_NATS" >"$OUT/nats.log" 2>&1 &
    NATS_PID=$!
    PIDS+=("$NATS_PID")
    wait_port "$P_NATS"
    "$BIN" --log warn --listen "127.0.0.1:$P_SEQ" --feed "tcp://127.0.0.1:$F_SEQ" \
        --publish "nats://127.0.0.1:$P_NATS" "$@" &
    SEQ_PID=$!
    PIDS+=("$SEQ_PID")
    wait_port "$P_SEQ"
    "$BIN" --log warn --listen "127.0.0.1:$P_E1" --feed "nats://127.0.0.1:$P_NATS" &
    E1_PID=$!
    PIDS+=("$E1_PID")
    "$BIN" --log warn --listen "127.0.0.1:$P_E2" --feed "nats://127.0.0.1:$P_NATS" &
    E2_PID=$!
    PIDS+=("$E2_PID")
    wait_port "$P_E1"
    wait_port "$P_E2"
}

W2=(--subscribers 100 --per-sub 5 --symbols 50 --rate "$RATE")
HOP=(--subscribers 1 --per-sub 50 --symbols 50 --rate "$RATE_HOP")

for round in $(seq "$ROUNDS"); do
    echo "### round $round of $ROUNDS"
    "$BIN" --log warn --listen "127.0.0.1:$P_SEQ" --feed "tcp://127.0.0.1:$F_SEQ" &
    PIDS+=("$!")
    wait_port "$P_SEQ"
    bench "W2-single" --server "127.0.0.1:$P_SEQ" --drive-feed "127.0.0.1:$F_SEQ" --server-pid "${PIDS[0]}" "${W2[@]}"
    stop_all

    start_cluster
    bench "W2-cluster" --server "127.0.0.1:$P_E1" --drive-feed "127.0.0.1:$F_SEQ" --server-pid "$E1_PID" \
        --extra-pids "$SEQ_PID,$E2_PID,$NATS_PID" "${W2[@]}"
    stop_all

    for batch in true false; do
        start_cluster --nats-batch "$batch"
        bench "hop-batch-$batch" --server "127.0.0.1:$P_E1" --drive-feed "127.0.0.1:$F_SEQ" --server-pid "$E1_PID" \
            --extra-pids "$SEQ_PID,$E2_PID,$NATS_PID" "${HOP[@]}"
        stop_all
    done
done

echo "### medians over $ROUNDS rounds ($RESULTS)"
python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
labels = list(dict.fromkeys(r["label"] for r in rows))
print("| run | delivered msgs/s | p50 µs | p99 µs | p99.9 µs | CPU ns/delivered msg (all processes) | seq errors |")
print("|---|---|---|---|---|---|---|")
for label in labels:
    rs = [r for r in rows if r["label"] == label]
    med = lambda k: statistics.median(r[k] for r in rs)
    print(f"| {label} | {med('delivered_per_sec'):,.0f} | {med('p50_us'):,.0f} | {med('p99_us'):,.0f} | "
          f"{med('p999_us'):,.0f} | {med('server_cpu_ns_per_msg'):,.0f} | {sum(r['seq_errors'] for r in rs)} |")
EOF

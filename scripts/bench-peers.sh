#!/usr/bin/env bash
# tickcast side by side with its peers, in one run, on this machine:
#   - nats-server (Debian's package) with its WebSocket listener on loopback;
#   - a Node.js `ws` rooms-and-JSON broadcast server (benches/peers/node);
#   - tickcast with its tcp feed.
# The same load generator (`tickcast-bench --target ...`) drives each with
# the same workloads, one system after another; the publisher stamps its
# send time into every tick and latency is publish to receive.
#
# Workloads (each bounded in time, each against a fresh server):
#   W1   100 subscribers x 5 of 50 symbols, 10k ticks/s   (100k msgs/s)
#   W2   the same at 100k ticks/s                          (1M msgs/s)
#   W3   1,000 subscribers x 10 of 100 symbols, 20k ticks/s (2M msgs/s)
#   W4   W2 plus 5 stalled subscribers on every symbol (run right after W2,
#        which it is compared with, and before the heavier W3)
#   idle 10,000 idle subscribed connections: RSS per connection
#   W2 again for tickcast at other --write-budget values: CPU per message
#        against latency, beside nats-server's
#   With CONNS=1, then scripts/bench-conns.sh: up to 100,000 idle
#   connections beside W1, and 10,000 active subscribers (tickcast only).
#
# Output: target/bench-peers/results.jsonl (one JSON report per run), the
# table in BENCHMARKS.md (between the bench-peers markers) and the chart
# docs/bench-peers.svg (p99 latency against delivered rate). The table
# opens with a machine check: the time of one loopback write
# (`cargo bench --bench loopback -- write/1400`) before and after the runs.
#
# The machine is shared and noisy, so every run is repeated ROUNDS times
# (default 3), the rounds interleaved so that a noisy minute hits every
# system alike; the report keeps, per workload and system, the run with the
# median p99 (the median per-connection RSS for idle).
#
# Usage: scripts/bench-peers.sh [duration per run, default 10s]
#        ROUNDS=1 scripts/bench-peers.sh 5s   (a quick look)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10s}"
ROUNDS="${ROUNDS:-3}"
OUT=target/bench-peers
mkdir -p "$OUT"

say() { printf '\033[1m==== %s\033[0m\n' "$*"; }

# ---- peers and tools ------------------------------------------------------
if ! command -v nats-server >/dev/null 2>&1; then
    say "installing nats-server (Debian package)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nats-server >/dev/null
fi
say "nats-server $(nats-server --version 2>&1 | head -1)"
say "node $(node --version), installing ws for the node peer"
npm ci --prefix benches/peers/node --no-audit --no-fund --silent
if [ ! -x .venv-bench/bin/python ]; then
    python3 -m venv .venv-bench
fi
.venv-bench/bin/pip install -q -r benches/peers/requirements.txt
say "building tickcast (release)"
cargo build --release --quiet --workspace
BIN=target/release/tickcast
BENCH=target/release/tickcast-bench

# How fast this machine is right now: the median time of one 1,400-byte
# write on a loopback TCP connection, in ns (most of what a delivered
# message costs every system here). Taken before and after the runs and
# printed with the table, so that runs made at different times can be
# read against each other. Empty if the bench cannot run.
calibrate() {
    if cargo bench --bench loopback --quiet -- write/1400 >"$OUT/loopback.log" 2>&1; then
        .venv-bench/bin/python -c 'import json, sys; print(round(json.load(open(sys.argv[1]))["median"]["point_estimate"]))' \
            target/criterion/write/1400/new/estimates.json 2>/dev/null || true
    fi
}
say "machine check: one loopback write"
WRITE_NS_BEFORE=$(calibrate)
say "one 1,400-byte loopback write: ${WRITE_NS_BEFORE:-?} ns"

TC_PORT=18580
TC_FEED=18581
NATS_PORT=18582
NATS_WS=18583
NODE_PORT=18584

NATS_CONF="$OUT/nats.conf"
cat >"$NATS_CONF" <<EOF
# For the benchmark only: loopback, no TLS, no auth.
listen: 127.0.0.1:$NATS_PORT
websocket {
  listen: "127.0.0.1:$NATS_WS"
  no_tls: true
}
EOF

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh # (the script has cd-ed to the repository root)


start_server() { # system [extra tickcast flags...]
    case "$1" in
    tickcast*)
        "$BIN" --listen "127.0.0.1:$TC_PORT" --feed "tcp://127.0.0.1:$TC_FEED" --log warn "${@:2}" &
        PID=$!
        wait_port "$TC_PORT"
        ;;
    nats)
        nats-server -c "$NATS_CONF" >"$OUT/nats.log" 2>&1 &
        PID=$!
        wait_port "$NATS_WS"
        ;;
    node)
        node benches/peers/node/server.js "$NODE_PORT" >"$OUT/node.log" 2>&1 &
        PID=$!
        wait_port "$NODE_PORT"
        ;;
    esac
}

target_args() { # system
    case "$1" in
    tickcast*) echo "--target tickcast --server 127.0.0.1:$TC_PORT --drive-feed 127.0.0.1:$TC_FEED" ;;
    nats) echo "--target nats --server 127.0.0.1:$NATS_WS --drive-feed 127.0.0.1:$NATS_PORT" ;;
    node) echo "--target node --server 127.0.0.1:$NODE_PORT --drive-feed 127.0.0.1:$NODE_PORT" ;;
    esac
}

RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
ROUND=0
run() { # workload, system, bench flags...
    local workload="$1" system="$2"
    shift 2
    # tickcast-wb=N: tickcast with --write-budget N (the W2 trade-off sweep).
    if [[ $system == tickcast-wb=* ]]; then
        start_server "$system" --write-budget "${system#tickcast-wb=}"
    else
        start_server "$system"
    fi
    # shellcheck disable=SC2046
    local cmd=("$BENCH" $(target_args "$system") --server-pid "$PID" "$@" --json)
    say "round $ROUND/$ROUNDS, $workload / $system: ${cmd[*]}"
    local line
    if line=$("${cmd[@]}" | tee /dev/stderr | tail -1) && [ "${line:0:1}" = "{" ]; then
        printf '{"round":%d,"workload":"%s","system":"%s",%s\n' "$ROUND" "$workload" "$system" "${line:1}" >>"$RESULTS"
    else
        printf '{"round":%d,"workload":"%s","system":"%s","failed":true}\n' "$ROUND" "$workload" "$system" >>"$RESULTS"
    fi
    stop_server
}

SYSTEMS=(tickcast nats node)
# Total --write-budget values for the W2 sweep (the default is 50000 per
# writer thread, 100000 on 2 cores).
BUDGETS=(50000 25000 12500)
W12=(--subscribers 100 --per-sub 5 --symbols 50)
for ROUND in $(seq "$ROUNDS"); do
    for system in "${SYSTEMS[@]}"; do
        run W1 "$system" "${W12[@]}" --rate 10000 --duration "$DURATION"
    done
    for system in "${SYSTEMS[@]}"; do
        run W2 "$system" "${W12[@]}" --rate 100000 --duration "$DURATION"
    done
    # tickcast's CPU against latency at W2: the write budget (default
    # 50000 per writer thread) sets how often each busy subscriber is
    # written, and a write is most of what a message costs.
    for budget in "${BUDGETS[@]}"; do
        run W2 "tickcast-wb=$budget" "${W12[@]}" --rate 100000 --duration "$DURATION"
    done
    for system in "${SYSTEMS[@]}"; do
        run W4 "$system" "${W12[@]}" --rate 100000 --stalled 5 --duration "$DURATION"
    done
    for system in "${SYSTEMS[@]}"; do
        run W3 "$system" --subscribers 1000 --per-sub 10 --symbols 100 --rate 20000 --duration "$DURATION" --warmup 5s
    done
    for system in "${SYSTEMS[@]}"; do
        run idle "$system" --idle 10000 --per-sub 5 --symbols 50
    done
done

# Many connections (issue 19): 100k idle beside W1, 10k active. Long, and
# bounded by this machine's open-file limit: behind CONNS=1.
if [ "${CONNS:-0}" = 1 ]; then
    stop_server
    scripts/bench-conns.sh "$DURATION"
fi

say "machine check again: one loopback write"
WRITE_NS_AFTER=$(calibrate)
say "one 1,400-byte loopback write: ${WRITE_NS_AFTER:-?} ns"

say "report"
.venv-bench/bin/python scripts/peers_report.py "$RESULTS" \
    --benchmarks BENCHMARKS.md --chart docs/bench-peers.svg --duration "$DURATION" --rounds "$ROUNDS" \
    --write-ns "${WRITE_NS_BEFORE:-}" "${WRITE_NS_AFTER:-}"

#!/usr/bin/env bash
# tickcast side by side with its peers, in one run, on this machine:
#   - nats-server (Debian's package) with its WebSocket listener on loopback;
#   - a Node.js `ws` rooms-and-JSON broadcast server (benches/peers/node);
#   - tickcast-minimal, the simplest fan-out server that could work
#     (crates/loadgen/src/bin/tickcast-minimal: a task per feed connection
#     encodes msgpack once and pushes the frame into every subscriber's
#     unbounded queue; a writer task per subscriber, one vectored write);
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
#        which it is compared with, and before the heavier W3). The minimal
#        server has no slow-consumer policy: its memory grows for as long
#        as the run lasts, so its W4 run measures at most W4_MINIMAL_MAX
#        (default 10s) and samples its RSS every second.
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
# Environment:
#   ROUNDS      rounds (default 3)
#   PIN         0 (default): server and load generator share both cores;
#               1: the server (all its threads) on CPU 0, the load
#               generator on CPU 1 (taskset; scripts/bench-lib.sh), tickcast
#               with --writers 1 (one writer thread for its one core);
#               both: every run unpinned and pinned, interleaved.
#               The report has a table per mode.
#   SYSTEMS     systems to run, default "tickcast nats node minimal"
#   WORKLOADS   workloads to run, default "W1 W2 W2-budgets W4 W3 idle"
#               (W2-budgets: tickcast's W2 at other --write-budget values)
#   W4_MINIMAL_MAX  longest measured W4 run of the minimal server (10s)
#   e.g. PIN=both ROUNDS=1 SYSTEMS="tickcast minimal" WORKLOADS="W1 W3" \
#        scripts/bench-peers.sh 3s
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10s}"
ROUNDS="${ROUNDS:-3}"
read -r -a SYSTEMS <<<"${SYSTEMS:-tickcast nats node minimal}"
WORKLOADS="${WORKLOADS:-W1 W2 W2-budgets W4 W3 idle}"
W4_MINIMAL_MAX="${W4_MINIMAL_MAX:-10s}"
OUT=target/bench-peers
mkdir -p "$OUT"

say() { printf '\033[1m==== %s\033[0m\n' "$*"; }
has_system() { [[ " ${SYSTEMS[*]} " == *" $1 "* ]]; }

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh # (the script has cd-ed to the repository root)
PIN_MODES=$(pin_modes)

# ---- peers and tools ------------------------------------------------------
if has_system nats && ! command -v nats-server >/dev/null 2>&1; then
    say "installing nats-server (Debian package)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nats-server >/dev/null
fi
if has_system nats; then say "nats-server $(nats-server --version 2>&1 | head -1)"; fi
if has_system node; then
    say "node $(node --version), installing ws for the node peer"
    npm ci --prefix benches/peers/node --no-audit --no-fund --silent
fi
if [ ! -x .venv-bench/bin/python ]; then
    python3 -m venv .venv-bench
fi
.venv-bench/bin/pip install -q -r benches/peers/requirements.txt
say "building tickcast (release)"
cargo build --release --quiet --workspace
BIN=target/release/tickcast
BENCH=target/release/tickcast-bench
MINIMAL=target/release/tickcast-minimal

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
MIN_PORT=18585
MIN_FEED=18586

NATS_CONF="$OUT/nats.conf"
cat >"$NATS_CONF" <<EOF
# For the benchmark only: loopback, no TLS, no auth.
listen: 127.0.0.1:$NATS_PORT
websocket {
  listen: "127.0.0.1:$NATS_WS"
  no_tls: true
}
EOF


start_server() { # system [extra tickcast flags...]
    case "$1" in
    tickcast*)
        # Pinned, one core: one writer thread (its default, the CPUs it may
        # use, would say the same; this makes it explicit).
        local writers=()
        if [ "$PINNED" = 1 ]; then writers=(--writers 1); fi
        # Every client comes from 127.0.0.1: the idle run's 10,000 need
        # more than the default --max-connections-per-ip (1024).
        "${SERVER_PIN[@]}" "$BIN" --listen "127.0.0.1:$TC_PORT" --feed "tcp://127.0.0.1:$TC_FEED" --log warn \
            --max-connections-per-ip 50000 "${writers[@]}" "${@:2}" &
        PID=$!
        wait_port "$TC_PORT"
        ;;
    nats)
        "${SERVER_PIN[@]}" nats-server -c "$NATS_CONF" >"$OUT/nats.log" 2>&1 &
        PID=$!
        wait_port "$NATS_WS"
        ;;
    node)
        "${SERVER_PIN[@]}" node benches/peers/node/server.js "$NODE_PORT" >"$OUT/node.log" 2>&1 &
        PID=$!
        wait_port "$NODE_PORT"
        ;;
    minimal)
        "${SERVER_PIN[@]}" "$MINIMAL" --listen "127.0.0.1:$MIN_PORT" --feed "127.0.0.1:$MIN_FEED" >"$OUT/minimal.log" 2>&1 &
        PID=$!
        wait_port "$MIN_PORT"
        ;;
    esac
}

target_args() { # system
    case "$1" in
    tickcast*) echo "--target tickcast --server 127.0.0.1:$TC_PORT --drive-feed 127.0.0.1:$TC_FEED" ;;
    nats) echo "--target nats --server 127.0.0.1:$NATS_WS --drive-feed 127.0.0.1:$NATS_PORT" ;;
    node) echo "--target node --server 127.0.0.1:$NODE_PORT --drive-feed 127.0.0.1:$NODE_PORT" ;;
    minimal) echo "--target minimal --server 127.0.0.1:$MIN_PORT --drive-feed 127.0.0.1:$MIN_FEED" ;;
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
    local cmd=("${BENCH_PIN[@]}" "$BENCH" $(target_args "$system") --server-pid "$PID" "$@" --json)
    local pinned=false
    if [ "$PINNED" = 1 ]; then pinned=true; fi
    say "round $ROUND/$ROUNDS, $workload / $system, pinned $pinned: ${cmd[*]}"
    local line head
    head=$(printf '{"round":%d,"workload":"%s","system":"%s","pinned":%s' "$ROUND" "$workload" "$system" "$pinned")
    if line=$("${cmd[@]}" | tee /dev/stderr | tail -1) && [ "${line:0:1}" = "{" ]; then
        printf '%s,%s\n' "$head" "${line:1}" >>"$RESULTS"
    else
        printf '%s,"failed":true}\n' "$head" >>"$RESULTS"
    fi
    stop_server
}

want() { [[ " $WORKLOADS " == *" $1 "* ]]; }
# Seconds in a duration as the bench takes it (10s, 2m; anything else
# counts as long).
secs() {
    case "$1" in
    *ms) echo 0 ;;
    *s) echo "${1%s}" ;;
    *m) echo $((${1%m} * 60)) ;;
    *) echo 999999 ;;
    esac
}
W4_MINIMAL="$DURATION"
if [ "$(secs "$DURATION")" -gt "$(secs "$W4_MINIMAL_MAX")" ]; then W4_MINIMAL="$W4_MINIMAL_MAX"; fi
# Total --write-budget values for the W2 sweep (the default is 50000 per
# writer thread: 100000 on 2 cores, 50000 pinned to one).
BUDGETS=(50000 25000 12500)
W12=(--subscribers 100 --per-sub 5 --symbols 50)
for ROUND in $(seq "$ROUNDS"); do
    for mode in $PIN_MODES; do
        pin_mode "$mode"
        if want W1; then
            for system in "${SYSTEMS[@]}"; do
                run W1 "$system" "${W12[@]}" --rate 10000 --duration "$DURATION"
            done
        fi
        if want W2; then
            for system in "${SYSTEMS[@]}"; do
                run W2 "$system" "${W12[@]}" --rate 100000 --duration "$DURATION"
            done
        fi
        # tickcast's CPU against latency at W2: the write budget (default
        # 50000 per writer thread) sets how often each busy subscriber is
        # written, and a write is most of what a message costs.
        if want W2-budgets && has_system tickcast; then
            for budget in "${BUDGETS[@]}"; do
                run W2 "tickcast-wb=$budget" "${W12[@]}" --rate 100000 --duration "$DURATION"
            done
        fi
        if want W4; then
            for system in "${SYSTEMS[@]}"; do
                if [ "$system" = minimal ]; then
                    # No slow-consumer policy: memory grows with the run.
                    run W4 "$system" "${W12[@]}" --rate 100000 --stalled 5 --duration "$W4_MINIMAL" --rss-every 1s
                else
                    run W4 "$system" "${W12[@]}" --rate 100000 --stalled 5 --duration "$DURATION"
                fi
            done
        fi
        if want W3; then
            for system in "${SYSTEMS[@]}"; do
                run W3 "$system" --subscribers 1000 --per-sub 10 --symbols 100 --rate 20000 --duration "$DURATION" \
                    --warmup 5s
            done
        fi
        if want idle; then
            for system in "${SYSTEMS[@]}"; do
                run idle "$system" --idle 10000 --per-sub 5 --symbols 50
            done
        fi
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

#!/usr/bin/env bash
# Many connections on one tickcast server (issue 19, goal 4), two scenarios,
# each bounded in time:
#
#   crowd   one server; W1 (100 subscribers x 5 of 50 symbols, 10k ticks/s)
#           alone, then the same W1 while IDLE idle-but-subscribed
#           connections are held (`tickcast-bench --idle N --with-load`):
#           the active subscribers' p50/p99/p99.9 without and with the
#           crowd, the connect rate, the server's RSS and the kernel's TCP
#           memory per idle connection. IDLE is 100,000, or what the
#           open-file limit leaves room for (the server and the bench each
#           hold one descriptor per connection).
#   active  a fresh server; 10,000 active subscribers, each on 5 of 1,000
#           symbols, at 100k ticks/s: delivered msgs/s, p99, server CPU per
#           delivered message.
#
# The idle connections come from 127.0.0.2, 127.0.0.3, ... (5,000 per
# address) so their count is not bounded by the ephemeral port range.
# Before the runs the script records what bounds the count on this machine
# (the open-file limits, whether they can be raised, fs.nr_open, the port
# range, somaxconn) in target/bench-conns/machine.txt.
#
# Output: target/bench-conns/results.jsonl (one JSON report per run) and
# each run's text report on stdout; BENCHMARKS.md's "Many connections"
# section quotes them.
#
# Usage: scripts/bench-conns.sh [duration per run, default 10s]
#        IDLE=20000 scripts/bench-conns.sh 5s
#        CONNS=1 scripts/bench-peers.sh   (runs this after the peers)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10s}"
OUT=target/bench-conns
mkdir -p "$OUT"

say() { printf '\033[1m==== %s\033[0m\n' "$*"; }

say "building tickcast and tickcast-bench (release)"
cargo build --release --quiet -p tickcast --bin tickcast
cargo build --release --quiet -p tickcast-loadgen
BIN=target/release/tickcast
BENCH=target/release/tickcast-bench
TC_PORT=18680
TC_FEED=18681

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh # (the script has cd-ed to the repository root)

# ---- what bounds the connection count here --------------------------------
HARD=$(ulimit -Hn)
{
    echo "ulimit -Sn: $(ulimit -Sn), ulimit -Hn: $HARD"
    if prlimit --nofile=200000:200000 --pid $$ 2>&1; then
        echo "prlimit --nofile=200000:200000: allowed (the hard limit can be raised)"
    else
        echo "prlimit --nofile=200000:200000: refused (no CAP_SYS_RESOURCE)"
    fi
    echo "fs.nr_open: $(cat /proc/sys/fs/nr_open), fs.file-max: $(cat /proc/sys/fs/file-max)"
    echo "net.ipv4.ip_local_port_range: $(tr '\t' ' ' </proc/sys/net/ipv4/ip_local_port_range)"
    echo "net.core.somaxconn: $(cat /proc/sys/net/core/somaxconn)"
    echo "net.ipv4.tcp_mem (pages): $(tr '\t' ' ' </proc/sys/net/ipv4/tcp_mem)"
} | tee "$OUT/machine.txt"
HARD=$(ulimit -Hn)
# Each idle connection is a descriptor in the server and one in the bench;
# 400 are left for the 100 active subscribers, the publisher, the server's
# own (`server::fd_limit`) and the bench's.
ROOM=$((HARD - 400))
IDLE="${IDLE:-$((ROOM < 100000 ? ROOM : 100000))}"
say "idle connections: $IDLE (100,000 asked; the open-file limit here is $HARD)"

RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
: >"$OUT/runs.txt"
start_server() { # [extra tickcast flags...]
    # Every connection comes from loopback: the per-address bound is lifted
    # to the total.
    NO_COLOR=1 "$BIN" --listen "127.0.0.1:$TC_PORT" --feed "tcp://127.0.0.1:$TC_FEED" --log warn \
        --max-connections 100000 --max-connections-per-ip 100000 "$@" >"$OUT/server.log" 2>&1 &
    PID=$!
    wait_port "$TC_PORT"
    # The start-up warning when the open-file limit is below --max-connections.
    grep -h "open-file limit" "$OUT/server.log" || true
}
run() { # scenario, bench flags...
    local scenario="$1"
    shift
    local cmd=("$BENCH" --target tickcast --server "127.0.0.1:$TC_PORT" --drive-feed "127.0.0.1:$TC_FEED"
        --server-pid "$PID" "$@" --json)
    say "$scenario: ${cmd[*]}"
    local line ok=0
    # The report goes to stdout and runs.txt; its last line (JSON) to results.
    "${cmd[@]}" >"$OUT/run.txt" 2>&1 || ok=$?
    grep -v '^{' "$OUT/run.txt" | tee -a "$OUT/runs.txt"
    line=$(tail -1 "$OUT/run.txt")
    if [ "$ok" -eq 0 ] && [ "${line:0:1}" = "{" ]; then
        printf '{"scenario":"%s",%s\n' "$scenario" "${line:1}" >>"$RESULTS"
    else
        printf '{"scenario":"%s","failed":true}\n' "$scenario" >>"$RESULTS"
    fi
}

W1=(--subscribers 100 --per-sub 5 --symbols 50 --rate 10000 --duration "$DURATION")

say "crowd: W1 alone, then W1 beside $IDLE idle connections, on one server"
start_server
run "W1 alone" "${W1[@]}"
run "W1 + $IDLE idle" "${W1[@]}" --idle "$IDLE" --with-load
stop_server

say "active: 10,000 subscribers x 5 of 1,000 symbols at 100k ticks/s"
start_server
run "10k active" --subscribers 10000 --per-sub 5 --symbols 1000 --rate 100000 --duration "$DURATION" --warmup 30s
stop_server

say "results in $RESULTS"

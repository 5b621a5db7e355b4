# Shared by the bench scripts (sourced, not run): one server process at a
# time, stopped on exit, waiting for a port to open, and pinning.
#
#   PID=...; stop_server   stops the server in $PID (TERM, then waits)
#   wait_port PORT         returns once something accepts on 127.0.0.1:PORT
#                          (at most 10 s; then fails with a message)
#   pin_modes              the modes $PIN asks for, one word each: PIN=0 or
#                          unset "0", PIN=1 "1", PIN=both "0 1"; fails with
#                          a message if pinning cannot be done here
#   pin_mode 0|1           sets PINNED and the command prefixes for one run:
#                          "${SERVER_PIN[@]}" SERVER... &  and
#                          "${BENCH_PIN[@]}" LOAD-GENERATOR...
#
# Pinned (mode 1), the server process and every thread it starts run on
# CPU $PIN_SERVER_CPU (default 0) and the load generator on $PIN_BENCH_CPU
# (default 1), with taskset (util-linux): neither takes the other's core,
# so CPU per message and latency are measured without the two fighting
# over both. Unpinned (mode 0), both run anywhere, as before. A server
# that sizes its thread pool by the CPUs it may use (tickcast's
# --writers, tokio's workers, Go's GOMAXPROCS, via sched_getaffinity)
# sees one under taskset.

PID=""
stop_server() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    PID=""
}
trap stop_server EXIT

wait_port() { # port
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "server did not open port $1" >&2
    return 1
}

PIN_SERVER_CPU="${PIN_SERVER_CPU:-0}"
PIN_BENCH_CPU="${PIN_BENCH_CPU:-1}"
PINNED=0
SERVER_PIN=()
BENCH_PIN=()

pin_check() {
    if ! command -v taskset >/dev/null 2>&1; then
        echo "PIN=$PIN needs taskset (util-linux: apt-get install util-linux), or run with PIN=0" >&2
        return 1
    fi
    if ! taskset -c "$PIN_SERVER_CPU" true 2>/dev/null || ! taskset -c "$PIN_BENCH_CPU" true 2>/dev/null; then
        echo "PIN=$PIN: cannot run on CPUs $PIN_SERVER_CPU and $PIN_BENCH_CPU (this machine has $(nproc));" \
            "set PIN_SERVER_CPU and PIN_BENCH_CPU" >&2
        return 1
    fi
}

pin_modes() {
    case "${PIN:-0}" in
    0) echo 0 ;;
    1) pin_check && echo 1 ;;
    both) pin_check && echo "0 1" ;;
    *)
        echo "PIN=$PIN: use 0 (unpinned), 1 (pinned) or both" >&2
        return 1
        ;;
    esac
}

pin_mode() { # 0|1
    PINNED="$1"
    if [ "$1" = 1 ]; then
        SERVER_PIN=(taskset -c "$PIN_SERVER_CPU")
        BENCH_PIN=(taskset -c "$PIN_BENCH_CPU")
    else
        SERVER_PIN=()
        BENCH_PIN=()
    fi
}

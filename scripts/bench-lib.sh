# Shared by the bench scripts (sourced, not run): one server process at a
# time, stopped on exit, and waiting for a port to open.
#
#   PID=...; stop_server   stops the server in $PID (TERM, then waits)
#   wait_port PORT         returns once something accepts on 127.0.0.1:PORT
#                          (at most 10 s; then fails with a message)

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

#!/usr/bin/env python3
"""What an edge's NATS subscription costs nats-server: one wildcard
(`tickcast.tick.>`, what tickcast does) against one literal subscription
per symbol, at 100 and 10,000 symbols (docs/CLUSTER.md, "Wildcard, not
per-symbol interest").

A publisher sends MESSAGES records of 61 bytes (a trade's frame) round-robin
over the symbols' subjects; one subscriber holds either the wildcard or every
literal subject and reads them all. Both speak the NATS text protocol over a
plain socket. Reported: nats-server's CPU per delivered message (from
/proc/PID/stat), and the time to set up the subscriptions. Loopback only,
bounded by the message count.

    python3 scripts/bench-nats-interest.py [--messages 400000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import threading
import time

CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.recv(4096)  # INFO
    s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n')
    return s


def ping(s: socket.socket) -> None:
    s.sendall(b"PING\r\n")
    buf = b""
    while b"PONG" not in buf:
        buf += s.recv(65536)


def run(port: int, pid: int, symbols: int, wildcard: bool, messages: int) -> dict:
    subjects = [f"tickcast.tick.S{i:05d}" for i in range(symbols)]
    sub = connect(port)
    t0 = time.perf_counter()
    if wildcard:
        sub.sendall(b"SUB tickcast.tick.> 1\r\n")
    else:
        sub.sendall(b"".join(f"SUB {s} {i + 1}\r\n".encode() for i, s in enumerate(subjects)))
    ping(sub)
    setup = time.perf_counter() - t0
    got = 0
    done = threading.Event()

    def reader():
        nonlocal got
        while got < messages:
            chunk = sub.recv(1 << 20)
            if not chunk:
                break
            got += chunk.count(b"MSG ")  # payloads never hold "MSG "
        done.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    pub = connect(port)
    payload = b"\x39" + b"\x00" * 60
    cpu0 = cpu_seconds(pid)
    start = time.perf_counter()
    batch = []
    for n in range(messages):
        s = subjects[n % symbols]
        batch.append(f"PUB {s} {len(payload)}\r\n".encode() + payload + b"\r\n")
        if len(batch) == 2000:
            pub.sendall(b"".join(batch))
            batch = []
    pub.sendall(b"".join(batch))
    ping(pub)
    done.wait(120)
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(pid) - cpu0
    pub.close()
    sub.close()
    return {"setup_ms": setup * 1e3, "server_ns_per_msg": cpu * 1e9 / max(got, 1), "got": got, "secs": elapsed}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=400_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--port", type=int, default=18790)
    args = ap.parse_args()
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    proc = subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(args.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        rows = {}
        for _ in range(args.rounds):
            for symbols in (100, 10_000):
                for wildcard in (True, False):
                    r = run(args.port, proc.pid, symbols, wildcard, args.messages)
                    assert r["got"] >= args.messages, r
                    rows.setdefault((symbols, wildcard), []).append(r)
        print(f"{args.messages:,} messages per run, medians of {args.rounds} rounds")
        print("| symbols | subscription | set-up ms | nats-server CPU ns per delivered msg |")
        print("|---|---|---|---|")
        for (symbols, wildcard), rs in rows.items():
            kind = "one wildcard `tickcast.tick.>`" if wildcard else f"{symbols:,} literal"
            setup = statistics.median(r["setup_ms"] for r in rs)
            cpu = statistics.median(r["server_ns_per_msg"] for r in rs)
            print(f"| {symbols:,} | {kind} | {setup:.1f} | {cpu:.0f} |")
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()

"""A real tickcast server for the package's tests, run as a subprocess on
127.0.0.1, and a feed handler for its ``tcp://`` feed.

Independent of tests/python (the server's own suite): this package's tests
check the package against the binary, with helpers of their own.

* `TickcastServer.start(...)`: the binary (``$TICKCAST_BIN``, else the
  repo's ``target/debug/tickcast``) on free ports, healthy before it
  returns; `kill` and `restart` (same ports) for the reconnect tests.
* `Feed`: newline-delimited JSON ticks to the tcp feed.

Every wait here is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]
BINANCE = REPO_ROOT / "tests" / "data" / "binance"

#: Generous bound for one awaited event: debug builds on a loaded 2-core
#: machine are slow, but nothing legitimate takes this long.
TIMEOUT = 20.0


def tickcast_bin() -> Path:
    raw = os.environ.get("TICKCAST_BIN")
    if raw:
        path = Path(raw)
        return path if path.is_absolute() else REPO_ROOT / path
    return REPO_ROOT / "target" / "debug" / "tickcast"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_env() -> dict[str, str]:
    # The server reads TICKCAST_* flags from the environment: keep ours out.
    return {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}


class TickcastServer:
    """One tickcast process; `restart` brings it back on the same ports."""

    def __init__(
        self, log_dir: Path, feed: str, extra: Iterable[str], tls_context: ssl.SSLContext | None = None
    ) -> None:
        self.log_dir = log_dir
        self.feed_kind = feed
        self.extra = list(extra)
        self.port = free_port()
        self.feed_port: int | None = free_port() if feed == "tcp" else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = log_dir / f"tickcast-{self.port}.log"
        #: For a server started with --tls-cert: a context trusting its CA.
        self.tls_context = tls_context

    @classmethod
    def start(
        cls, log_dir: Path, feed: str = "tcp", extra: Iterable[str] = (), tls_context: ssl.SSLContext | None = None
    ) -> TickcastServer:
        server = cls(log_dir, feed, extra, tls_context)
        server._spawn()
        return server

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def args(self) -> list[str]:
        feed = f"tcp://127.0.0.1:{self.feed_port}" if self.feed_kind == "tcp" else self.feed_kind
        return [str(tickcast_bin()), "--listen", f"127.0.0.1:{self.port}", "--feed", feed, *self.extra]

    def _spawn(self) -> None:
        binary = tickcast_bin()
        if not binary.is_file():
            raise RuntimeError(f"tickcast binary not found at {binary}: run `cargo build` or set TICKCAST_BIN")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=_child_env(), cwd=REPO_ROOT
            )
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.healthy():
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"tickcast did not become healthy: {self.args}\n{self.log_tail()}")

    def _http(self, path: str, timeout: float) -> Any:
        if self.tls_context is None:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout)
        return urllib.request.urlopen(f"https://localhost:{self.port}{path}", timeout=timeout, context=self.tls_context)

    def healthy(self) -> bool:
        try:
            with self._http("/healthz", 1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def get(self, path: str) -> Any:
        """A JSON route (``/symbols``)."""
        with self._http(path, 5) as r:
            return json.loads(r.read())

    def metric(self, name: str) -> float | None:
        """One unlabelled value of ``/metrics``."""
        with self._http("/metrics", 5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return None

    def wait_symbols(self, *names: str) -> None:
        """Waits until the server knows ``names`` (a tcp feed's symbols
        exist once it has sent them)."""
        deadline = time.monotonic() + TIMEOUT
        while not set(names) <= set(self.get("/symbols")):
            if time.monotonic() > deadline:
                raise AssertionError(f"symbols {names} never appeared")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, and wait for the process to go."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)

    def terminate(self) -> None:
        """SIGTERM, and wait for the clean exit (a recorder flushes its tick
        log first; SIGKILL may lose the last ticks still queued)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(TIMEOUT)

    def pause(self) -> None:
        """SIGSTOP: the process stays, silent (for the heartbeat watchdog)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def cont(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """A new process on the same ports (after `kill`)."""
        self.kill()
        deadline = time.monotonic() + TIMEOUT
        while True:  # the port may linger for a moment after the kill
            try:
                self._spawn()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


class Feed:
    """A feed handler on a server's tcp feed: JSON lines."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, *ticks: dict[str, Any]) -> None:
        self.sock.sendall("".join(json.dumps(t, separators=(",", ":")) + "\n" for t in ticks).encode())

    def close(self) -> None:
        self.sock.close()


def trade(sym: str, px: float, sz: float, side: str = "buy", ts_event: int | None = None) -> dict[str, Any]:
    t: dict[str, Any] = {"type": "trade", "sym": sym, "px": px, "sz": sz, "side": side}
    if ts_event is not None:
        t["ts_event"] = ts_event
    return t


def quote(
    sym: str, bid: float, bid_sz: float, ask: float, ask_sz: float, ts_event: int | None = None
) -> dict[str, Any]:
    t: dict[str, Any] = {"type": "quote", "sym": sym, "bid": bid, "bid_sz": bid_sz, "ask": ask, "ask_sz": ask_sz}
    if ts_event is not None:
        t["ts_event"] = ts_event
    return t


def book(
    sym: str, bids: Iterable[tuple[float, float]] = (), asks: Iterable[tuple[float, float]] = ()
) -> dict[str, Any]:
    return {"type": "book", "sym": sym, "bids": [list(lv) for lv in bids], "asks": [list(lv) for lv in asks]}

"""Fixtures: ``tickcast_server``, a factory of real servers (killed at
teardown, their log printed, which pytest shows for a failing test)."""

from __future__ import annotations

import ssl
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import TickcastServer  # noqa: E402

StartServer = Callable[..., TickcastServer]


@pytest.fixture
def tickcast_server(tmp_path: Path) -> Iterator[StartServer]:
    """``tickcast_server(feed="tcp"|"synthetic", extra=[flags])``;
    ``tls_context=`` for a server started with ``--tls-cert``."""
    started: list[TickcastServer] = []

    def start(
        feed: str = "tcp", extra: Iterable[str] = (), tls_context: ssl.SSLContext | None = None
    ) -> TickcastServer:
        server = TickcastServer.start(tmp_path, feed, extra, tls_context)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc is not None and server.proc.poll() is None:
            server.cont()  # a SIGSTOPped server cannot die of SIGKILL until continued on some kernels
        server.kill()
        print(f"--- tickcast log ({' '.join(server.args[1:])}) ---\n{server.log_tail()}")

"""Fixtures for the independent-client test suite (helpers live in
tickcast_client.py).

* ``pb2`` (session): ``tickcast_pb2`` generated from proto/tickcast.proto
  with ``python -m grpc_tools.protoc`` into a temporary directory.
* ``tickcast``: a factory that starts servers on free ports and kills them
  at teardown (printing the server log, which pytest shows on failure);
  ``ssl_context=`` for a server started with ``--tls-cert``.
* ``server``: one server with a tcp feed, ``--ping-interval 1s
  --pong-timeout 1s``.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Iterable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tickcast_client import REPO_ROOT, Server, start_server  # noqa: E402


@pytest.fixture(scope="session")
def pb2(tmp_path_factory):
    """``tickcast_pb2`` generated from proto/tickcast.proto with grpc_tools."""
    out = tmp_path_factory.mktemp("pb_gen")
    proto_dir = REPO_ROOT / "proto"
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"--python_out={out}",
        str(proto_dir / "tickcast.proto"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"protoc failed: {result.stderr}"
    sys.path.insert(0, str(out))
    try:
        # Importing runs ValidateProtobufRuntimeVersion: it fails loudly if
        # the protobuf runtime is older than the protoc that generated it.
        module = importlib.import_module("tickcast_pb2")
    finally:
        sys.path.remove(str(out))
    return module


@pytest.fixture
def tickcast(tmp_path, pb2):
    """Factory: ``tickcast(feed="tcp"|"synthetic", extra=[flags])`` -> Server.
    Every server started is killed at teardown; its log is printed then, and
    pytest shows it for failing tests."""
    servers: list[Server] = []

    def start(feed: str = "tcp", extra: Iterable[str] = (), ssl_context=None) -> Server:
        s = start_server(tmp_path, pb2, feed=feed, extra=extra, ssl_context=ssl_context)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()
        print(f"--- tickcast log ({' '.join(s.args[1:])}) ---\n{s.log_tail()}")


@pytest.fixture
def server(tickcast) -> Server:
    """A server with a tcp feed and 1 s ping / 1 s pong timeout."""
    return tickcast()

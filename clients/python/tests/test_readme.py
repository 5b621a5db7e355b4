"""Every Python example in the package README runs, against a real server
started as the README says (synthetic feed, the Binance captures for
replay), each in a fresh interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from servers import BINANCE

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
README_URL = "ws://127.0.0.1:8080"


def test_the_readme_has_examples():
    assert len(EXAMPLES) >= 7
    assert all(README_URL in code for code in EXAMPLES)


@pytest.fixture(scope="module")
def readme_server(tmp_path_factory):
    from servers import TickcastServer

    server = TickcastServer.start(tmp_path_factory.mktemp("readme"), "synthetic", ["--replay-dir", str(BINANCE)])
    yield server
    server.kill()


@pytest.mark.parametrize("index", range(len(EXAMPLES)), ids=lambda i: f"example{i + 1}")
def test_a_readme_example_runs(readme_server, index):
    code = EXAMPLES[index].replace(README_URL, readme_server.url)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90, env=env)
    assert proc.returncode == 0, f"example {index + 1} failed:\n{code}\n--- stderr ---\n{proc.stderr}"
    assert proc.stdout.strip(), "every example prints something"

"""Regenerates ``src/tickcast/_proto/tickcast_pb2.py`` from the server's
``proto/tickcast.proto`` (run from anywhere, with grpcio-tools installed):

    python clients/python/tools/generate_proto.py

The package ships the generated module, so installing it needs no protoc.
One edit is made to protoc's output: the file is added to a private
``DescriptorPool`` instead of protobuf's default pool, so the package can be
imported beside any other ``tickcast_pb2`` (say, one generated from a newer
or older schema) without a "duplicate file name" clash.

``tests/test_proto.py`` fails when the shipped module no longer matches the
schema, naming this script.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_ROOT.parents[1]
PROTO = REPO_ROOT / "proto" / "tickcast.proto"
OUT = PACKAGE_ROOT / "src" / "tickcast" / "_proto" / "tickcast_pb2.py"

DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
PRIVATE_POOL = (
    "# tickcast: a private pool, so this module never clashes with another\n"
    "# tickcast_pb2 in the same process (see tools/generate_proto.py).\n"
    "_POOL = _descriptor_pool.DescriptorPool()\n"
    "DESCRIPTOR = _POOL.AddSerializedFile("
)


def generate() -> str:
    """protoc's output for tickcast.proto, moved onto a private pool."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO.parent}", f"--python_out={tmp}", str(PROTO)]
        subprocess.run(cmd, check=True, timeout=120)
        text = (Path(tmp) / "tickcast_pb2.py").read_text()
    if text.count(DEFAULT_POOL) != 1:
        raise SystemExit(f"protoc output changed shape: expected one {DEFAULT_POOL!r}")
    return text.replace(DEFAULT_POOL, PRIVATE_POOL)


def main() -> None:
    OUT.write_text(generate())
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

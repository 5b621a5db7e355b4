"""The shipped generated protobuf module matches proto/tickcast.proto."""

from __future__ import annotations

import subprocess
import sys

import pytest
from google.protobuf import descriptor_pb2

from servers import REPO_ROOT
from tickcast._proto import tickcast_pb2

PROTO = REPO_ROOT / "proto" / "tickcast.proto"


def _without_json_names(file: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """protoc's descriptor set spells out each field's ``json_name``; the
    generated module leaves them to the runtime. Nothing else differs."""

    def strip(message: descriptor_pb2.DescriptorProto) -> None:
        for f in message.field:
            f.ClearField("json_name")
        for nested in message.nested_type:
            strip(nested)

    for message in file.message_type:
        strip(message)
    return file


def test_the_shipped_module_is_generated_from_the_current_schema(tmp_path):
    pytest.importorskip("grpc_tools")
    if not PROTO.is_file():
        pytest.skip("not in the tickcast repository")
    out = tmp_path / "tickcast.desc"
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO.parent}", f"--descriptor_set_out={out}", str(PROTO)]
    subprocess.run(cmd, check=True, timeout=120)
    expected = _without_json_names(descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0])
    shipped = descriptor_pb2.FileDescriptorProto.FromString(tickcast_pb2.DESCRIPTOR.serialized_pb)
    assert shipped == expected, "tickcast_pb2.py is stale: run python clients/python/tools/generate_proto.py"

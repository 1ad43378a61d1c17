"""The node's own protocol, ``ganglion.v1`` (``ganglion_control.proto`` beside this file).

The message classes are compiled from the .proto by grpcio-tools the first time this package
is imported, in memory, with the protobuf runtime installed here (no generated code is kept
in the tree, so it never drifts from the .proto or from the installed protobuf). They are
registered in protobuf's default descriptor pool, where server reflection finds them.
The inference protocol's messages are Triton's (``tritonclient.grpc.service_pb2``).
"""

from __future__ import annotations

import sys
import tempfile
import types
from pathlib import Path

PROTO = Path(__file__).with_name("ganglion_control.proto")
SERVICE = "ganglion.v1.Control"
MODULE = f"{__name__}.ganglion_control_pb2"


def _compile(proto: Path) -> types.ModuleType:
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory(prefix="ganglion-protoc-") as out:
        args = ["grpc_tools.protoc", f"-I{proto.parent}", f"--python_out={out}", proto.name]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc could not compile {proto}")
        code = (Path(out) / f"{proto.stem}_pb2.py").read_text(encoding="utf-8")
    module = types.ModuleType(MODULE)
    module.__file__ = str(proto)
    sys.modules[MODULE] = module
    exec(compile(code, str(proto), "exec"), module.__dict__)  # noqa: S102 - our own .proto
    return module


control_pb2 = sys.modules.get(MODULE) or _compile(PROTO)

__all__ = ["SERVICE", "control_pb2"]

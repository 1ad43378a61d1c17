"""A KServe v2 node that lies, for the coordinator's tests: healthy and ready, but its
ModelInfer answers misbehave as the first line of MODE_FILE says (re-read on every call):
``nan`` (a NaN score), ``rows`` (one row fewer than asked), ``datatype`` (FP64 scores),
``name`` (its output misnamed), ``internal`` (INTERNAL, with a two-line message), else honest
zeros. It counts its ModelInfer calls into COUNT_FILE. Run as a separate process:
``python hostile_node.py PORT MODE_FILE COUNT_FILE CLASSES``; it prints ``ready`` once bound.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc


class HostileNode(pb_grpc.GRPCInferenceServiceServicer):
    """Health that passes; answers that do not."""

    def __init__(self, mode_file: Path, count_file: Path, classes: int) -> None:
        self.mode_file, self.count_file, self.classes = mode_file, count_file, classes
        self.calls = 0

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ModelReadyResponse(ready=True)

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.calls += 1
        self.count_file.write_text(str(self.calls))
        mode = self.mode_file.read_text().strip()
        if mode == "internal":
            await context.abort(grpc.StatusCode.INTERNAL, "lies\nforged log line " + "x" * 5000)
        rows = int(request.inputs[0].shape[0]) - (mode == "rows")
        scores = np.zeros((rows, self.classes), np.float64 if mode == "datatype" else np.float32)
        if mode == "nan":
            scores[0, 0] = np.nan
        reply = pb.ModelInferResponse(model_name=request.model_name, model_version="1")
        datatype = "FP64" if mode == "datatype" else "FP32"
        name = "scores" if mode == "name" else "output"
        reply.outputs.add(name=name, datatype=datatype, shape=list(scores.shape))
        reply.raw_output_contents.append(scores.tobytes())
        return reply


async def main(port: int, mode_file: Path, count_file: Path, classes: int) -> None:
    """Serve on 127.0.0.1:``port`` until killed."""
    server = grpc.aio.server()
    node = HostileNode(mode_file, count_file, classes)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(node, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])))

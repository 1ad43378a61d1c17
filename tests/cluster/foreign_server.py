"""One expert's ONNX graph behind a foreign KServe v2 server: NVIDIA Triton Inference Server
(through PyTriton) or KServe's ModelServer, on 127.0.0.1 only.

Run with the Python that has them (``scripts/setup_interop.sh``), never imported by the tests:
``python foreign_server.py {triton,kserve} --name NAME --onnx MODEL.onnx --port P --http-port H
[--workspace DIR]``. It imports nothing of Ganglion's: the foreign server runs the expert's
``model.onnx`` on ONNX Runtime, as a user would deploy it there. It prints ``ready`` once the
model is bound, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import sysconfig
from typing import Any

import numpy as np
import onnxruntime as ort

DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64}


def _session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _dims(arg: Any) -> tuple[int, ...]:
    """An ONNX value's shape without its batch axis (-1 for symbolic axes)."""
    return tuple(d if isinstance(d, int) else -1 for d in arg.shape[1:])


def serve_triton(args: argparse.Namespace, session: ort.InferenceSession) -> None:
    """Triton 2.51 through PyTriton; its Python stub must find this Python's libpython."""
    libdir = sysconfig.get_config_var("LIBDIR")
    os.environ["LD_LIBRARY_PATH"] = ":".join(
        p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p
    )
    from pytriton.decorators import batch
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        values = session.run(None, inputs)
        return {o.name: v for o, v in zip(session.get_outputs(), values, strict=True)}

    config = TritonConfig(
        grpc_address="127.0.0.1",
        grpc_port=args.port,
        http_address="127.0.0.1",
        http_port=args.http_port,
        allow_metrics=False,
    )
    triton = Triton(config=config, workspace=args.workspace)
    triton.bind(
        model_name=args.name,
        infer_func=infer,
        inputs=[Tensor(_dims(i), DTYPES[i.type], i.name) for i in session.get_inputs()],
        outputs=[Tensor(_dims(o), DTYPES[o.type], o.name) for o in session.get_outputs()],
        config=ModelConfig(max_batch_size=4096),
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: triton.stop())
    triton.run()
    print("ready", flush=True)
    triton.serve()


def serve_kserve(args: argparse.Namespace, session: ort.InferenceSession) -> None:
    """KServe 0.21's ModelServer; it binds every interface by itself, so its two listeners
    are pointed at 127.0.0.1 here (gRPC's ``[::]`` address and uvicorn's ``0.0.0.0`` host)."""
    sys.argv = sys.argv[:1]  # kserve parses the command line at import
    import grpc.aio
    from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
    from kserve.protocol.rest import server as rest_server

    make_server = grpc.aio.server

    def loopback_server(*a: Any, **kw: Any) -> Any:
        server = make_server(*a, **kw)
        add_port = server.add_insecure_port
        server.add_insecure_port = lambda address: add_port(address.replace("[::]", "127.0.0.1"))
        return server

    grpc.aio.server = loopback_server
    rest_init = rest_server.RESTServer.__init__

    def loopback_rest(self: Any, *a: Any, **kw: Any) -> None:
        rest_init(self, *a, **kw)
        self.config.host = "127.0.0.1"

    rest_server.RESTServer.__init__ = loopback_rest

    class OnnxExpert(Model):
        def __init__(self) -> None:
            super().__init__(args.name)
            self.ready = True

        async def predict(self, request: InferRequest, headers: Any = None, **_: Any) -> Any:
            arrays = {i.name: i.as_numpy() for i in request.inputs}
            values = session.run(None, arrays)
            outputs = []
            for meta, value in zip(session.get_outputs(), values, strict=True):
                out = InferOutput(name=meta.name, shape=list(value.shape), datatype="FP32")
                out.set_data_from_numpy(np.ascontiguousarray(value, np.float32), binary_data=True)
                outputs.append(out)
            return InferResponse(
                model_name=self.name, infer_outputs=outputs, response_id=request.id
            )

    print("ready", flush=True)
    ModelServer(http_port=args.http_port, grpc_port=args.port, grace_period=1).start([OnnxExpert()])


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("engine", choices=("triton", "kserve"))
    parser.add_argument("--name", required=True)
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--workspace", default=None)
    args = parser.parse_args()
    session = _session(args.onnx)
    (serve_triton if args.engine == "triton" else serve_kserve)(args, session)


if __name__ == "__main__":
    main()

"""What serving over gRPC adds to a Session call, on loopback, in one run.

Targets, all serving the same small ONNX model (a dense MLP 8 -> 16 -> 4, batch 1, float32),
each server in its own process:
- ``in-process``: ``Session.run`` (onnxruntime backend) called directly, no network;
- ``node``: ``ganglion serve`` (this project's node: grpc.aio, KServe v2 checks, one worker
  thread per model);
- ``bare``: a bare grpc.aio ModelInfer (bytes -> numpy -> the same Session -> bytes, on the
  event loop, no checks) — the floor for a Python gRPC server;
- ``pytriton``: NVIDIA PyTriton (a real Triton server, CPU, its Python backend calling an
  onnxruntime session with the same options) when ``--pytriton-python`` names a Python that
  has ``nvidia-pytriton`` (it conflicts with nothing here, but is kept out of the project's
  venv: ``python3.11 -m venv /tmp/pytriton-venv && /tmp/pytriton-venv/bin/pip install
  nvidia-pytriton onnxruntime==<ours> numpy<2``).

Latency: ``--requests`` sequential ModelInfer calls per target with a synchronous grpc stub
and one pre-built request (same bytes for every server). Throughput: 1, 8 and 32 concurrent
clients (coroutines on one grpc.aio channel in this process) for ``--seconds`` each.
Targets are interleaved inside each of ``--repeats`` rounds. Prints a JSON line per
measurement and a table of medians over rounds. Goal: the node adds < 1 ms p50 over
in-process and stays within 1.5x of the bare server's p50.

Usage: ``python benchmarks/grpc_overhead.py [--repeats 3] [--requests 500] [--seconds 2]
[--pytriton-python /tmp/pytriton-venv/bin/python]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "dense"
CONCURRENCY = (1, 8, 32)
START_TIMEOUT_S = 120.0


# ---- servers (run as ``--serve bare|pytriton``, in their own processes) ------------------------


def serve_bare(bundle: Path, port: int) -> None:
    """A bare grpc.aio KServe ModelInfer over the same Session: no checks, no thread hop."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    from ganglion.runtime import load

    session = load(bundle, backend="onnxruntime")
    name = session.manifest.inputs[0].name

    class Bare(pb_grpc.GRPCInferenceServiceServicer):
        async def ServerReady(self, request: Any, context: Any) -> Any:
            return pb.ServerReadyResponse(ready=True)

        async def ModelReady(self, request: Any, context: Any) -> Any:
            return pb.ModelReadyResponse(ready=request.name == MODEL)

        async def ModelInfer(self, request: Any, context: Any) -> Any:
            tensor = request.inputs[0]
            x = np.frombuffer(request.raw_input_contents[0], "<f4").reshape(tensor.shape)
            y = session.run({name: x})
            reply = pb.ModelInferResponse(model_name=request.model_name)
            for key, value in y.items():
                reply.outputs.add(name=key, datatype="FP32", shape=value.shape)
                reply.raw_output_contents.append(value.tobytes())
            return reply

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(Bare(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def serve_pytriton(onnx_path: Path, port: int, workspace: Path) -> None:
    """PyTriton on CPU: Triton's gRPC front end, its Python backend calling onnxruntime."""
    import onnxruntime as ort
    from pytriton.decorators import batch
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    options = ort.SessionOptions()
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        (out,) = session.run(["output"], {name: inputs[name]})
        return {"output": out}

    config = TritonConfig(
        grpc_address="127.0.0.1",
        grpc_port=port,
        http_address="127.0.0.1",
        http_port=_free_port(),
        metrics_port=_free_port(),
        allow_metrics=False,
    )
    with Triton(config=config, workspace=str(workspace)) as triton:
        triton.bind(
            model_name=MODEL,
            infer_func=infer,
            inputs=[Tensor(name=name, dtype=np.float32, shape=(8,))],
            outputs=[Tensor(name="output", dtype=np.float32, shape=(4,))],
            config=ModelConfig(max_batch_size=64),
        )
        triton.serve()


# ---- the client side ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_bundle(folder: Path) -> Path:
    """The dense MLP bundle (torch.export -> convert_dense, fixed seed)."""
    import torch
    from torch import nn

    from ganglion.converters.dense import convert_dense
    from ganglion.runtime.bundle import save_bundle

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    dim = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(mlp, (torch.zeros(2, 8),), dynamic_shapes=({0: dim},))
    return save_bundle(convert_dense(exported), folder / MODEL)


def _wait_ready(address: str, process: subprocess.Popen, log: Path) -> None:
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text(errors='replace')[-2000:]}")
        with grpc.insecure_channel(address) as channel:
            try:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                if stub.ServerReady(pb.ServerReadyRequest(), timeout=1).ready:
                    ready = pb.ModelReadyRequest(name=MODEL)
                    if stub.ModelReady(ready, timeout=1).ready:
                        return
            except grpc.RpcError:
                pass
        time.sleep(0.3)
    raise RuntimeError(f"server not ready after {START_TIMEOUT_S} s: {log}")


def start(kind: str, command: list[str], folder: Path, env: dict[str, str]) -> tuple[Any, str]:
    """Start one server process; returns it with its address once it is ready."""
    port = _free_port()
    log = folder / f"{kind}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    address = f"127.0.0.1:{port}"
    try:
        _wait_ready(address, process, log)
    except BaseException:
        stop(process)
        raise
    return process, address


def stop(process: subprocess.Popen) -> None:
    """End a server process and its children (Triton's server is one)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def request_for(x: np.ndarray) -> Any:
    """The one ModelInfer request every server gets (raw FP32 bytes)."""
    from ganglion.runtime.serving.client import infer_request

    return infer_request(MODEL, {"input": x})


def latencies_remote(address: str, request: Any, count: int) -> np.ndarray:
    """Seconds per sequential ModelInfer call (after 50 warm-up calls)."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(50):
            stub.ModelInfer(request, timeout=10)
        times = np.empty(count)
        for i in range(count):
            t0 = time.perf_counter()
            stub.ModelInfer(request, timeout=10)
            times[i] = time.perf_counter() - t0
    return times


def latencies_local(session: Any, x: np.ndarray, count: int) -> np.ndarray:
    """Seconds per ``session.run`` call (after 50 warm-up calls)."""
    inputs = {"input": x}
    for _ in range(50):
        session.run(inputs)
    times = np.empty(count)
    for i in range(count):
        t0 = time.perf_counter()
        session.run(inputs)
        times[i] = time.perf_counter() - t0
    return times


async def _throughput(address: str, request: Any, clients: int, seconds: float) -> int:
    import grpc
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(10):
            await stub.ModelInfer(request, timeout=10)
        done = 0
        end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < end:
                await stub.ModelInfer(request, timeout=30)
                done += 1

        await asyncio.gather(*(worker() for _ in range(clients)))
    return done


def throughput_local(session: Any, x: np.ndarray, seconds: float) -> int:
    """``session.run`` calls completed in ``seconds`` (one thread: a Session's rule)."""
    inputs, done = {"input": x}, 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        session.run(inputs)
        done += 1
    return done


def _emit(row: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    rows.append(row)
    print(json.dumps(row), flush=True)


def _table(rows: list[dict[str, Any]], targets: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    def median(kind: str, target: str, key: str, **match: Any) -> float:
        values = [
            r[key]
            for r in rows
            if r["row"] == kind
            and r["target"] == target
            and all(r[k] == v for k, v in match.items())
        ]
        return statistics.median(values) if values else float("nan")

    base = median("latency", "in-process", "p50_us")
    bare = median("latency", "bare", "p50_us")
    table = Table(title="gRPC overhead on loopback (batch 1, medians over rounds)")
    for column in ("target", "p50 µs", "p99 µs", "added p50 µs", "p50 / bare"):
        table.add_column(column, justify="right")
    for c in CONCURRENCY:
        table.add_column(f"req/s @{c}", justify="right")
    for target in targets:
        p50 = median("latency", target, "p50_us")
        cells = [
            target,
            f"{p50:.0f}",
            f"{median('latency', target, 'p99_us'):.0f}",
            "" if target == "in-process" else f"{p50 - base:.0f}",
            "" if target == "in-process" else f"{p50 / bare:.2f}",
        ]
        for c in CONCURRENCY:
            value = median("throughput", target, "req_per_s", concurrency=c)
            cells.append("" if np.isnan(value) else f"{value:.0f}")
        table.add_row(*cells)
    Console(width=120).print(table)


def run(args: argparse.Namespace) -> None:
    """Build the model, start the servers, measure interleaved rounds, print rows and table."""
    from ganglion.runtime import load

    folder = Path(tempfile.mkdtemp(prefix="ganglion-grpc-bench-"))
    processes: list[subprocess.Popen] = []
    try:
        bundle = make_bundle(folder)
        env = {**os.environ}
        me = [sys.executable, str(Path(__file__).resolve())]
        node_cmd = [sys.executable, "-m", "ganglion.runtime.cli", "serve", f"{MODEL}={bundle}"]
        node_cmd += ["--backend", "onnxruntime", "--simulate-energy"]
        servers = {
            "node": node_cmd,
            "bare": [*me, "--serve", "bare", "--model-path", str(bundle)],
        }
        if args.pytriton_python:
            workspace = folder / "pytriton-workspace"
            servers["pytriton"] = [args.pytriton_python, str(Path(__file__).resolve())]
            servers["pytriton"] += [
                "--serve",
                "pytriton",
                "--model-path",
                str(bundle / "model.onnx"),
            ]
            servers["pytriton"] += ["--workspace", str(workspace)]
        addresses = {}
        for kind, command in servers.items():
            server_env = dict(env)
            if kind == "pytriton":
                libdir = subprocess.check_output(
                    [
                        args.pytriton_python,
                        "-c",
                        "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))",
                    ],
                    text=True,
                ).strip()
                server_env["LD_LIBRARY_PATH"] = os.pathsep.join(
                    p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p
                )
            process, addresses[kind] = start(kind, command, folder, server_env)
            processes.append(process)
        session = load(bundle, backend="onnxruntime")
        x = np.random.default_rng(0).random((1, 8), dtype=np.float32)
        request = request_for(x)
        targets = ["in-process", *addresses]
        rows: list[dict[str, Any]] = []
        common = {"batch": 1, "model": "dense MLP 8-16-4 fp32 (onnxruntime)"}
        for round_ in range(args.repeats):
            for target in targets:
                if target == "in-process":
                    times = latencies_local(session, x, args.requests)
                else:
                    times = latencies_remote(addresses[target], request, args.requests)
                p50, p99 = np.percentile(times, [50, 99]) * 1e6
                _emit(
                    {
                        "row": "latency",
                        "target": target,
                        "round": round_,
                        "requests": args.requests,
                        "p50_us": float(p50),
                        "p99_us": float(p99),
                        "mean_us": float(times.mean() * 1e6),
                        "client": "in-process" if target == "in-process" else "grpc sync stub",
                        **common,
                    },
                    rows,
                )
            for clients in CONCURRENCY:
                for target in targets:
                    if target == "in-process":
                        if clients != 1:
                            continue
                        done = throughput_local(session, x, args.seconds)
                    else:
                        done = asyncio.run(
                            _throughput(addresses[target], request, clients, args.seconds)
                        )
                    _emit(
                        {
                            "row": "throughput",
                            "target": target,
                            "round": round_,
                            "concurrency": clients,
                            "seconds": args.seconds,
                            "requests": done,
                            "req_per_s": done / args.seconds,
                            "client": "grpc.aio, one channel, N coroutines",
                            **common,
                        },
                        rows,
                    )
        session.close()
        _table(rows, targets)
        print(
            f"threads: node = asyncio loop (calls under 0.5 ms run on it; slower ones on one "
            f"worker thread per model); bare = asyncio loop; "
            f"onnxruntime intra-op threads = default ({os.cpu_count()} cores), inter-op 1; "
            f"client and servers share this machine's {os.cpu_count()} cores"
        )
    finally:
        for process in processes:
            stop(process)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    """Parse arguments; run a server (``--serve``) or the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--pytriton-python", default=os.environ.get("PYTRITON_PYTHON"))
    parser.add_argument("--serve", choices=("bare", "pytriton"), help=argparse.SUPPRESS)
    parser.add_argument("--model-path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workspace", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "bare":
        serve_bare(args.model_path, args.port)
    elif args.serve == "pytriton":
        serve_pytriton(args.model_path, args.port, args.workspace)
    else:
        run(args)


if __name__ == "__main__":
    main()

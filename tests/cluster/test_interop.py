"""One ensemble whose experts sit on three kinds of KServe v2 server: ``ganglion serve``,
NVIDIA Triton Inference Server 2.51 (through PyTriton 0.7.0) and KServe 0.21's ModelServer,
all on 127.0.0.1. The coordinator needs nothing of them beyond the protocol and readiness.

The foreign servers run under the Python that ``scripts/setup_interop.sh`` prepares
(``.venv-interop``; ``GANGLION_INTEROP_PYTHON`` names another, and this interpreter is used
when it has them): KServe's generated protobuf modules clash with tritonclient's in one
process, so each server is its own process. Without them the test skips, saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from ganglion.runtime.serving.client import NodeCallError, NodeClient

REPO = Path(__file__).resolve().parents[2]
SERVER = Path(__file__).with_name("foreign_server.py")
PACKAGES = {"triton": "pytriton", "kserve": "kserve"}
START_TIMEOUT_S = 90.0
PROBE = (
    "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))"
)


def _interop_python() -> tuple[str | None, str]:
    """The Python with nvidia-pytriton and kserve, or None and why there is none."""
    interop = REPO / ".venv-interop/bin/python"
    candidates = [os.environ.get("GANGLION_INTEROP_PYTHON"), str(interop), sys.executable]
    lacking = []
    for python in filter(None, candidates):
        if not Path(python).is_file():
            continue
        done = subprocess.run([python, "-c", PROBE, *PACKAGES.values()], capture_output=True)
        if done.returncode == 0:
            return python, ""
        lacking.append(f"not in {python}")
    where = "; ".join(filter(None, ("" if interop.is_file() else f"no {interop}", *lacking)))
    return None, (
        "nvidia-pytriton 0.7.0 and kserve 0.21 are not installed "
        f"(run scripts/setup_interop.sh, or set GANGLION_INTEROP_PYTHON): {where}"
    )


async def _ready(address: str, model: str) -> bool:
    async with NodeClient(address, timeout_s=1.0) as client:
        try:
            return await client.ready() and await client.model_ready(model)
        except NodeCallError:
            return False


@contextlib.contextmanager
def foreign_servers(
    python: str, experts: dict[str, tuple[str, Path]], folder: Path, free_port
) -> Iterator[tuple[dict[str, str], Callable[[], None]]]:
    """Foreign servers started at once (engine -> (model, its ONNX graph)): their gRPC
    addresses, and a function that blocks until each serves its model. Always stopped: SIGTERM to
    each process group, SIGKILL after 20 s and for whatever of the group is left
    (tritonserver and its Python stubs)."""
    processes: dict[str, tuple[subprocess.Popen, str, Path]] = {}
    try:
        for engine, (model, onnx) in experts.items():
            port, http_port = free_port(), free_port()
            log = folder / f"{engine}.log"
            command = [python, str(SERVER), engine, "--name", model, "--onnx", str(onnx)]
            command += ["--port", str(port), "--http-port", str(http_port)]
            command += ["--workspace", str(folder / f"{engine}-workspace")]
            with open(log, "wb") as out:
                process = subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            processes[engine] = (process, f"127.0.0.1:{port}", log)

        def wait_ready() -> None:
            for engine, (process, address, log) in processes.items():
                _wait_ready(engine, process, address, experts[engine][0], log)

        yield {engine: address for engine, (_, address, _) in processes.items()}, wait_ready
    finally:
        for process, _, _ in processes.values():
            _stop(process)


def _wait_ready(engine: str, process: subprocess.Popen, address: str, model: str, log: Path):
    deadline = time.monotonic() + START_TIMEOUT_S
    while not asyncio.run(_ready(address, model)):
        text = log.read_text(errors="replace")
        if process.poll() is not None:
            pytest.fail(f"{engine} exited with {process.returncode}:\n{text[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{engine} not ready after {START_TIMEOUT_S} s:\n{text[-3000:]}")
        time.sleep(0.3)


def _stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def interop_python() -> str:
    """The Python that runs the foreign servers (session-scoped, so a skip comes before the
    other session fixtures are built)."""
    python, why = _interop_python()
    if python is None:
        pytest.skip(why)
    return python


def test_the_coordinator_routes_to_our_node_triton_and_kserve(
    interop_python,
    ensemble_bundle,
    tmp_path,
    free_tcp_port,
    cluster_file,
    start_cluster,
    expected,
    ask_once,
) -> None:
    members = ensemble_bundle / "members"
    foreign = {"triton": "e2", "kserve": "e3"}
    experts = {engine: (m, members / m / "model.onnx") for engine, m in foreign.items()}
    servers = foreign_servers(interop_python, experts, tmp_path, free_tcp_port)
    with servers as (addresses, wait_ready):
        nodes = {"ours": {"models": ["e1"], "device": "jetson-agx-orin-64gb"}}
        for engine, model in foreign.items():
            port = int(addresses[engine].rsplit(":", 1)[1])
            nodes[engine] = {"models": [model], "start": "external", "port": port}
        cluster = start_cluster(cluster_file(tmp_path, ensemble_bundle, nodes))  # meanwhile
        wait_ready()
        for engine in foreign:
            _wait_admitted(cluster.coordinator, engine)
        x = np.random.default_rng(7).normal(size=(4, 8)).astype(np.float32)
        reply = ask_once(cluster.coordinator, x)
        cluster.down()
    assert reply.experts == ["e1", "e2", "e3"]
    assert reply.parameters["nodes"] == "e1=ours,e2=triton,e3=kserve"
    want = expected(x, reply.experts)
    for name in ("probs", "gate"):
        np.testing.assert_allclose(reply.outputs[name], want[name], rtol=0, atol=1e-6)


def _wait_admitted(coordinator: str, node: str, timeout_s: float = 30.0) -> None:
    async def status() -> str:
        async with NodeClient(coordinator, timeout_s=2.0) as client:
            return await client.health(f"node/{node}")

    deadline = time.monotonic() + timeout_s
    while asyncio.run(status()) != "SERVING":
        assert time.monotonic() < deadline, f"the coordinator did not admit {node}"
        time.sleep(0.2)


PYTRITON_CLIENT = """
import json, sys
import numpy as np
from pytriton.client import ModelClient
x = np.array(json.loads(sys.argv[3]), dtype=np.float32)
with ModelClient("grpc://" + sys.argv[1], sys.argv[2], init_timeout_s=30) as client:
    out = client.infer_batch(input=x)
print(json.dumps({k: v.tolist() for k, v in out.items()}))
"""


def test_pytritons_model_client_batches_against_our_node(
    interop_python, ensemble_bundle, tmp_path, cluster_file, start_cluster
) -> None:
    """NVIDIA's own client (PyTriton's ModelClient: ModelConfig first, then batched infer)
    against ``ganglion serve``, its numbers those of the bundle run here."""
    from ganglion.runtime import load
    from ganglion.runtime.serving.cluster import read_state

    nodes = {"ours": {"models": ["e1"], "device": "jetson-agx-orin-64gb"}}
    cluster = start_cluster(cluster_file(tmp_path, ensemble_bundle, nodes))
    address = next(r.address for r in read_state(cluster.state_dir) if r.name == "ours")
    x = np.random.default_rng(8).normal(size=(5, 8)).astype(np.float32)
    done = subprocess.run(
        [interop_python, "-W", "ignore", "-c", PYTRITON_CLIENT, address, "e1", repr(x.tolist())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    cluster.down()
    assert done.returncode == 0, done.stderr[-2000:]
    got = {k: np.array(v, np.float32) for k, v in json.loads(done.stdout).items()}
    with load(ensemble_bundle / "members" / "e1", backend="onnxruntime") as session:
        want = session.run({session.manifest.inputs[0].name: x})
    assert set(got) == set(want)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-6)

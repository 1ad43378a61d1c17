"""A small MoE² ensemble (three dense experts, a gate), cluster files with free ports on
127.0.0.1, clusters started with ``ganglion cluster up`` (real processes, always stopped),
and a client that calls the coordinator.

The reference for every collaborative answer is the same ensemble run in this process on
ONNX Runtime (``runtime.load(bundle, backend="onnxruntime")``, ``select`` for a subset).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from ganglion.converters.dense import convert_dense
from ganglion.converters.ensemble import convert_ensemble
from ganglion.runtime import load
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.ensemble_calibration import all_expert_probabilities
from ganglion.runtime.serving.client import NodeClient, infer_request, response_parameters
from ganglion.runtime.serving.cluster import cluster_down, read_state
from ganglion.runtime.serving.kserve_tensors import response_arrays

EXPERTS = ("e1", "e2", "e3")
FEATURES, CLASSES = 8, 4
UP_TIMEOUT_S = 120


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def ensemble_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three small dense experts (different seeds) and a gate trained on 64 samples."""
    members = {}
    for seed, name in enumerate(EXPERTS):
        torch.manual_seed(seed)
        mlp = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, CLASSES)).eval()
        batch = torch.export.Dim("batch", min=1, max=4096)
        exported = torch.export.export(
            mlp, (torch.zeros(2, FEATURES),), dynamic_shapes=({0: batch},)
        )
        members[name] = convert_dense(exported)
    x = np.random.default_rng(0).normal(size=(64, FEATURES)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, CLASSES, 64)
    probs = all_expert_probabilities(members, {"x": x})
    program = convert_ensemble(members, {"x": x}, labels, probs, epochs=20)
    return save_bundle(program, tmp_path_factory.mktemp("ensemble") / "moe")


@pytest.fixture(scope="session")
def expected(ensemble_bundle: Path) -> Callable[[np.ndarray, list[str]], dict[str, np.ndarray]]:
    """``expected(x, experts)``: the ensemble's outputs in this process for those experts."""
    session = load(ensemble_bundle, backend="onnxruntime")

    def run(x: np.ndarray, experts: list[str]) -> dict[str, np.ndarray]:
        session.select([e for e in EXPERTS if e in experts])
        out = session.run(x)
        assert isinstance(out, dict)
        return out

    yield run
    session.close()


def write_cluster(
    folder: Path, bundle: Path, nodes: dict[str, dict[str, Any]], **coordinator: Any
) -> Path:
    """A cluster file: one ensemble ``moe``, ``nodes`` (name -> node keys, ``port`` picked
    free unless given), the coordinator on a free port with ``coordinator`` keys."""
    settings = {"port": free_port(), "device": "cpu", **coordinator}
    lines = ["[coordinator]"]
    lines += [f"{key} = {_toml(value)}" for key, value in settings.items()]
    lines += ["", "[[ensemble]]", 'name = "moe"', f"bundle = {_toml(str(bundle))}"]
    for name, keys in nodes.items():
        lines += ["", "[[node]]", f"name = {_toml(name)}"]
        lines += [f"{k} = {_toml(v)}" for k, v in {"port": free_port(), **keys}.items()]
    path = folder / "cluster.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def cli(*args: str, timeout: float = UP_TIMEOUT_S + 30) -> subprocess.CompletedProcess:
    """``ganglion ARGS`` in a separate process."""
    command = [sys.executable, "-m", "ganglion.runtime.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@dataclass
class Cluster:
    """A cluster ``ganglion cluster up`` started from ``config``."""

    config: Path
    state_dir: Path

    @property
    def coordinator(self) -> str:
        """The coordinator's address."""
        return next(r.address for r in read_state(self.state_dir) if r.role == "coordinator")

    def pid(self, name: str) -> int:
        """The pid of node ``name`` as the state file records it."""
        return next(r.pid for r in read_state(self.state_dir) if r.name == name)

    def up(self) -> subprocess.CompletedProcess:
        """``ganglion cluster up`` (starts what is not running); fails the test on error."""
        done = cli(
            "cluster", "up", "--config", str(self.config), "--state-dir", str(self.state_dir)
        )
        if done.returncode != 0:
            logs = "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                for p in sorted(self.state_dir.glob("*.log"))
            )
            pytest.fail(f"cluster up failed: {done.stderr}\n{logs}")
        return done

    def down(self) -> None:
        """``cluster down`` (what ``up`` started, nothing else)."""
        cluster_down(self.state_dir, grace_s=5.0)


@pytest.fixture(scope="session")
def start_cluster() -> Iterator[Callable[[Path], Cluster]]:
    """``start_cluster(config)``: ``cluster up`` now, ``cluster down`` at the session's end
    (every cluster started this way, whatever happened in between)."""
    started: list[Cluster] = []

    def start(config: Path) -> Cluster:
        cluster = Cluster(config, config.parent / "state")
        started.append(cluster)
        cluster.up()
        return cluster

    yield start
    for cluster in started:
        cluster_down(cluster.state_dir, grace_s=5.0)


@dataclass(frozen=True)
class Reply:
    """The coordinator's answer: outputs and parameters by name."""

    outputs: dict[str, np.ndarray]
    parameters: dict[str, Any]

    @property
    def experts(self) -> list[str]:
        """The experts that answered, from the parameters."""
        return self.parameters["experts"].split(",")


async def ask(
    client: NodeClient, x: np.ndarray, parameters: dict[str, Any] | None = None, timeout_s=10.0
) -> Reply:
    """One ModelInfer of ensemble ``moe`` with raw tensors."""
    request = infer_request("moe", {"input": x}, parameters=parameters)
    response = await client.model_infer(request, timeout_s)
    return Reply(response_arrays(response), response_parameters(response))


def call(address: str, x: np.ndarray, parameters: dict[str, Any] | None = None) -> Reply:
    """``ask`` once, from synchronous test code."""

    async def once() -> Reply:
        async with NodeClient(address, timeout_s=10.0) as client:
            return await ask(client, x, parameters)

    return asyncio.run(once())


@pytest.fixture(scope="session")
def free_tcp_port() -> Callable[[], int]:
    """``free_port()``: a TCP port free on 127.0.0.1 now."""
    return free_port


@pytest.fixture(scope="session")
def cluster_file() -> Callable[..., Path]:
    """``write_cluster(folder, bundle, nodes, **coordinator)``."""
    return write_cluster


@pytest.fixture(scope="session")
def ganglion_cli() -> Callable[..., subprocess.CompletedProcess]:
    """``cli(*args)``: the ganglion command in a separate process."""
    return cli


@pytest.fixture(scope="session")
def ask_async() -> Callable[..., Any]:
    """``await ask(client, x, parameters)`` -> Reply."""
    return ask


@pytest.fixture(scope="session")
def ask_once() -> Callable[..., Reply]:
    """``call(address, x, parameters)`` -> Reply, from synchronous code."""
    return call

"""The demo's cluster section: the digits MoE² ensemble served by two simulated edge nodes
(``ganglion serve`` processes on loopback, each with both experts) and a coordinator, all
started by ``cluster up``; asked without a budget, under an energy budget that leaves room
for one expert, and again after one node is killed. ``cluster down`` stops them all."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganglion.models.recipes.digits import DigitsData
from ganglion.runtime.bundle import read_manifest
from ganglion.runtime.serving.client import (
    NodeCallError,
    NodeClient,
    infer_request,
    response_parameters,
)
from ganglion.runtime.serving.cluster import cluster_down, cluster_up, read_state
from ganglion.runtime.serving.cluster_config import read_cluster_config
from ganglion.runtime.serving.kserve_tensors import response_arrays

ENSEMBLE = "digits-moe"
NODES = {"orin-nano": "jetson-orin-nano-8gb", "orin-agx": "jetson-agx-orin-64gb"}
EXPERTS = ["digits-0-4", "digits-5-9"]


@dataclass
class ClusterRow:
    """One request to the coordinator and what it answered."""

    request: str
    experts: str
    nodes: str  # the nodes that answered
    accuracy: float
    energy_mj: float
    energy_kind: str
    latency_ms: float
    retries: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_cluster_file(ensemble: Path, folder: Path) -> Path:
    """``folder/cluster.toml``: the coordinator and two nodes on free loopback ports."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["[coordinator]", f"port = {_free_port()}", 'device = "cpu"', ""]
    lines += ["[[ensemble]]", f'name = "{ENSEMBLE}"', f'bundle = "{ensemble.resolve()}"']
    for name, device in NODES.items():
        lines += ["", "[[node]]", f'name = "{name}"', f"port = {_free_port()}"]
        lines += [f'device = "{device}"', f"models = {EXPERTS!r}".replace("'", '"')]
    path = folder / "cluster.toml"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


async def _ask(address: str, inputs: dict, parameters: dict) -> tuple[dict, dict]:
    async with NodeClient(address, timeout_s=30.0) as client:
        response = await client.model_infer(infer_request(ENSEMBLE, inputs, parameters=parameters))
    return response_arrays(response), response_parameters(response)


def _row(request: str, outputs: dict, params: dict, y: np.ndarray) -> ClusterRow:
    accuracy = float((outputs["probs"].argmax(-1) == y).mean())
    return ClusterRow(
        request,
        str(params["experts"]),
        ", ".join(sorted({pair.split("=")[1] for pair in str(params["nodes"]).split(",")})),
        accuracy,
        float(params["energy_j"]) * 1e3,
        str(params["energy_kind"]),
        float(params["latency_ms"]),
        int(params["retries"]),
    )


def cluster_tour(ensemble: Path, data: DigitsData, out: Path) -> list[ClusterRow]:
    """Start the cluster, ask it three times (see the module docstring), stop it."""
    config_path = write_cluster_file(ensemble, out / "cluster")
    config = read_cluster_config(config_path)
    state = config_path.parent / ".ganglion" / "demo"
    records = cluster_up(config, state)
    try:
        address = next(r.address for r in records if r.role == "coordinator")
        x, y = {read_manifest(ensemble).inputs[0].name: data.x_test}, data.y_test
        rows = []
        outputs, params = asyncio.run(_ask(address, x, {}))
        rows.append(_row("no budget", outputs, params, y))
        budget = _one_expert_budget(address, x)
        outputs, params = asyncio.run(_ask(address, x, {"energy_budget_j": budget}))
        rows.append(_row(f"energy ≤ {budget * 1e3:.3g} mJ", outputs, params, y))
        victim = next(r for r in read_state(state) if r.name == "orin-nano")
        os.killpg(victim.pid, signal.SIGKILL)  # asked at once: usually before a probe sees it
        outputs, params = asyncio.run(_ask(address, x, {}))
        rows.append(_row("orin-nano killed", outputs, params, y))
        return rows
    finally:
        cluster_down(state)


def _one_expert_budget(address: str, x: dict) -> float:
    """1.5× what the cheapest expert needs (the coordinator says so when refusing 1e-12 J)."""
    try:
        asyncio.run(_ask(address, x, {"energy_budget_j": 1e-12}))
    except NodeCallError as refused:
        needs = str(refused).split("cheapest needs ", 1)[1].split(" J", 1)[0]
        return 1.5 * float(needs)
    raise RuntimeError("the coordinator accepted a 1e-12 J budget")

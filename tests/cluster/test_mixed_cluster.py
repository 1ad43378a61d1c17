"""A mixed development cluster as issue 20 names it, started by ``ganglion cluster up``: two
Jetson AGX Orin nodes, an RTX 4090 node and a Loihi 2 node whose ``backend = "lava"`` serves a
spiking expert quantized for Loihi 2 (``loihi2-fixed``) on Lava's bit-accurate simulator.

The ensemble: dense experts ``e1`` and ``e2`` (each on one Orin and on the RTX 4090) and the
spiking ``s1``, hosted only by the Lava node, so every answer with ``s1`` comes from Lava.
The reference is the same ensemble run in this process on the torch backend, whose fixed-point
program gives the same spikes as Lava's ``fixed_pt`` models (ONNX Runtime has no step graph
for a ``loihi2-fixed`` program); the dense experts and the gate differ between ONNX Runtime on
the nodes and torch here only by float32 rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ganglion.converters.dense import convert_dense
from ganglion.converters.ensemble import convert_ensemble
from ganglion.converters.loihi_quantize import quantize_loihi2
from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.runtime import load
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.ensemble_calibration import all_expert_probabilities
from ganglion.runtime.serving.cluster import read_state, running

pytestmark = pytest.mark.lava  # skipped where Lava does not import (root conftest)

FEATURES, CLASSES = 8, 4
ALL = ["e1", "e2", "s1"]
NODES = {
    "orin-a": {"device": "jetson-agx-orin-64gb", "models": ["e1"]},
    "orin-b": {"device": "jetson-agx-orin-64gb", "models": ["e2"]},
    "rtx": {"device": "rtx-4090", "models": ["e1", "e2"]},
    "loihi": {"device": "loihi2", "models": ["s1"], "backend": "lava"},
}
ATOL = 1e-6  # float32 rounding of the dense experts and gate (as test_coordinator.py)


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, CLASSES)).eval()


@pytest.fixture(scope="module")
def mixed_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two dense experts and one spiking expert (T=8, quantized for Loihi 2), and a gate."""
    x = np.random.default_rng(0).normal(size=(64, FEATURES)).astype(np.float32)
    labels = np.random.default_rng(1).integers(0, CLASSES, 64)
    batch = torch.export.Dim("batch", min=1, max=4096)
    members = {
        name: convert_dense(
            torch.export.export(
                _mlp(seed), (torch.zeros(2, FEATURES),), dynamic_shapes=({0: batch},)
            )
        )
        for seed, name in enumerate(ALL[:2])
    }
    spiking = convert_spiking(_mlp(2), x, None, SpikingOptions(timesteps=8))
    members["s1"] = quantize_loihi2(spiking, x, labels)
    probs = all_expert_probabilities(members, {"x": x})
    program = convert_ensemble(members, {"x": x}, labels, probs, epochs=20)
    return save_bundle(program, tmp_path_factory.mktemp("mixed") / "moe")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, mixed_bundle: Path, cluster_file, start_cluster):
    config = cluster_file(
        tmp_path_factory.mktemp("mixed-cluster"),
        mixed_bundle,
        NODES,
        call_timeout_ms=20000,  # Lava builds its processes on the first call
        request_timeout_ms=30000,
        health_interval_ms=200,
    )
    return start_cluster(config)


def test_the_lava_node_answers_its_spiking_expert_and_the_answer_equals_the_ensemble(
    cluster, mixed_bundle: Path, ask_once
) -> None:
    x = np.random.default_rng(7).normal(size=(1, FEATURES)).astype(np.float32)
    reply = ask_once(cluster.coordinator, x)
    assert reply.experts == ALL
    with load(mixed_bundle, backend="torch") as session:
        want = session.run(x)
    for name in ("probs", "gate"):
        np.testing.assert_allclose(reply.outputs[name], want[name], rtol=0, atol=ATOL)
    p = reply.parameters
    used = dict(item.split("=") for item in p["nodes"].split(","))
    assert used["s1"] == "loihi"
    loihi = next(r.command for r in read_state(cluster.state_dir) if r.name == "loihi")
    assert loihi[loihi.index("--backend") + 1] == "lava"
    assert sorted(used) == ALL and all(e in NODES[n]["models"] for e, n in used.items())
    assert p["energy_kind"] == "simulated" and p["energy_j"] > 0  # every node simulates its meter
    assert p["latency_kind"] == "measured" and (p["retries"], p["replans"]) == (0, 0)


def test_down_stops_exactly_the_four_nodes_and_the_coordinator(cluster, ganglion_cli) -> None:
    records = read_state(cluster.state_dir)
    assert [(r.role, r.name) for r in records] == [
        *(("node", name) for name in NODES),
        ("coordinator", "coordinator"),
    ]
    assert all(running(r) for r in records)
    down = ganglion_cli("cluster", "down", "--state-dir", str(cluster.state_dir))
    assert down.returncode == 0, down.stderr
    assert down.stdout.splitlines() == [f"stopped {r.role} {r.name} (pid {r.pid})" for r in records]
    assert not any(running(r) for r in records)
    assert not (cluster.state_dir / "cluster.json").exists()

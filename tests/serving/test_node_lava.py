"""A node serving a spiking bundle on the Lava backend: requests whose sequence length builds a
new Lava network (Lava forks its processes then) are answered, also after the model is
reloaded through the repository API while gRPC's threads run, and the node stops on SIGTERM.
Lava runs in a worker process of the node's (``lava_worker``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tritonclient.grpc as triton

from ganglion.converters.spiking import spiking_manifest
from ganglion.models.deployable import Deployable
from ganglion.models.manifest import SpikingTime
from ganglion.models.spiking import Affine, Neuron, SpikingGraph, SpikingNetwork
from ganglion.models.spiking.graph import INPUT, OUTPUT
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.session import load

pytestmark = pytest.mark.lava  # skipped where Lava does not import (root conftest)


def _lif(size: int, decay: float, threshold: float) -> Neuron:
    shape = (size,)
    return Neuron(
        decay=torch.full(shape, decay),
        gain=torch.ones(shape),
        bias=torch.zeros(shape),
        threshold=torch.full(shape, threshold),
        v_reset=torch.zeros(shape),
        v_init=torch.zeros(shape),
        reset="zero",
        model="lif",
    )


def _program() -> Deployable:
    """6 -> 5 -> 4 LIF, time-major spikes in and out (any sequence length)."""
    gen = torch.Generator().manual_seed(11)
    nodes = {
        "fc1": Affine(torch.randn(5, 6, generator=gen), torch.zeros(5)),
        "lif1": _lif(5, 0.9, 1.0),
        "fc2": Affine(torch.randn(4, 5, generator=gen), torch.zeros(4)),
        "lif2": _lif(4, 0.8, 0.8),
    }
    edges = [(INPUT, "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", OUTPUT)]
    graph = SpikingGraph(nodes, edges, (6,))
    time = SpikingTime(timesteps=12)
    return Deployable(SpikingNetwork(graph, time), spiking_manifest(graph, time), graph.to_config())


def _ask(client: triton.InferenceServerClient, x: np.ndarray) -> np.ndarray:
    given = triton.InferInput("input", list(x.shape), "FP32")
    given.set_data_from_numpy(x)
    return client.infer("snn", [given], client_timeout=60).as_numpy("output")


def test_new_sequence_lengths_and_a_reload_are_answered_and_sigterm_stops_the_node(
    launch_node, tmp_path
) -> None:
    folder = save_bundle(_program(), tmp_path / "snn")
    inline = load(folder, backend="lava")
    rng = np.random.default_rng(0)
    with launch_node([f"snn={folder}", "--backend", "lava"], tmp_path) as node:
        client = triton.InferenceServerClient(node.address)
        for steps in (12, 5, 9, 12):
            x = (rng.random((steps, 2, 6)) > 0.5).astype(np.float32)
            np.testing.assert_array_equal(_ask(client, x), inline.run(x))
        client.unload_model("snn")
        client.load_model("snn")  # Lava starts again while the node's threads run
        x = (rng.random((7, 1, 6)) > 0.5).astype(np.float32)
        np.testing.assert_array_equal(_ask(client, x), inline.run(x))
        client.close()
        node.process.terminate()
        assert node.process.wait(timeout=30) is not None
    inline.close()

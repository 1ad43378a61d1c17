"""Errors: an unmappable node is named, a too-large program says by how much, Lava missing."""

from __future__ import annotations

import re
import sys

import pytest
import torch

from ganglion.converters.spiking import SpikingOptions, convert_spiking, spiking_manifest
from ganglion.models.deployable import Deployable
from ganglion.models.errors import BackendUnavailable
from ganglion.models.manifest import SpikingTime
from ganglion.models.spiking import Affine, Neuron, SpikingGraph, SpikingNetwork
from ganglion.models.spiking.graph import INPUT, OUTPUT
from ganglion.runtime.backends.lava_backend import import_lava
from ganglion.runtime.loihi_fit import LoihiFitError, chip_fit, require_fit
from ganglion.runtime.session import load


def test_subtract_reset_program_on_lava_names_the_neuron_and_the_fix(digits_mlp):
    model, data = digits_mlp
    program = convert_spiking(model, data.x_train[:64], None, SpikingOptions(timesteps=4))
    with pytest.raises(BackendUnavailable, match="'relu_1' resets by subtraction.*quantize"):
        load(program, backend="lava")


def _wide_program(neurons: int) -> SpikingGraph:
    t = torch.ones(neurons)
    neuron = Neuron(
        decay=t, gain=t, bias=0 * t, threshold=t, v_reset=0 * t, v_init=0 * t, reset="zero"
    )
    nodes = {"fc": Affine(torch.zeros(neurons, 1), torch.zeros(neurons)), "lif": neuron}
    return SpikingGraph(nodes, [(INPUT, "fc"), ("fc", "lif"), ("lif", OUTPUT)], (1,))


def test_too_large_program_says_by_how_much():
    report = chip_fit(_wide_program(130 * 8192), chips=1)  # 130 neurocores of neurons
    assert report["neurocores"] == 130 and not report["fits"]
    with pytest.raises(
        LoihiFitError,
        match="130 neurocores .2 Loihi 2 chips., 1 declared: 2 neurocores .1 chips. over",
    ):
        require_fit(report)
    assert chip_fit(_wide_program(130 * 8192), chips=2)["fits"]


def test_chip_fit_counts_neurons_synapses_and_memory_per_layer(quantized_mlp):
    report = chip_fit(quantized_mlp.module.graph)
    rows = {row["layer"]: row for row in report["layers"]}
    assert rows["relu_1"]["neurons"] == 128 and rows["relu_1"]["synapses"] == 64 * 128
    assert rows["affine_5"]["synaptic_memory_bytes"] == 64 * 10
    assert report["neurocores"] == 3 and report["fits"]


def test_missing_lava_gives_one_line_with_the_install_hint(monkeypatch):
    for name in [m for m in sys.modules if m == "lava" or m.startswith("lava.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lava", None)
    with pytest.raises(BackendUnavailable, match=r"lava-nc is not installed.*pip install") as err:
        import_lava()
    assert "\n" not in str(err.value)


def test_recurrent_loop_through_two_dense_layers_is_refused_with_the_edge_named():
    """A loop through two Dense layers takes two steps on Lava (each delivers one step late) but
    one in the program: chip fit and the Lava backend refuse it in one line naming the edge."""
    t = torch.ones(2)
    lif = lambda: Neuron(decay=t, gain=t, bias=0 * t, threshold=t, v_reset=0 * t,  # noqa: E731
                         v_init=0 * t, reset="zero")  # fmt: skip
    dense = lambda: Affine(torch.eye(2), torch.zeros(2))  # noqa: E731
    nodes = {"fc1": dense(), "lif1": lif(), "fc2": dense(), "lif2": lif(), "back": dense()}
    edges = [(INPUT, "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"),
             ("lif2", "back"), ("back", "lif1"), ("lif2", OUTPUT)]  # fmt: skip
    graph = SpikingGraph(nodes, edges, (2,))
    assert graph.recurrent and not chip_fit(graph)["mappable"]
    reason = "edge back -> lif1 would reach 'lif1' 1 step(s) later on Lava"
    assert reason in chip_fit(graph)["unsupported"]
    time = SpikingTime(timesteps=4, encoding="none", decoding="none")
    program = Deployable(SpikingNetwork(graph, time), spiking_manifest(graph, time), {})
    with pytest.raises(BackendUnavailable, match=re.escape(reason)) as err:
        load(program, backend="lava")
    assert "\n" not in str(err.value)

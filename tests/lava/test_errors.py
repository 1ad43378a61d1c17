"""Errors: an unmappable node is named, a too-large program says by how much, Lava missing."""

from __future__ import annotations

import sys

import pytest
import torch

from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.errors import BackendUnavailable
from ganglion.models.spiking import Affine, Neuron, SpikingGraph
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


def test_recurrent_graph_is_refused_by_the_lava_backend_with_the_edge_named():
    t = torch.ones(2)
    neuron = Neuron(decay=t, gain=t, bias=0 * t, threshold=t, v_reset=0 * t, v_init=0 * t,
                    reset="zero")  # fmt: skip
    nodes = {"fc": Affine(torch.eye(2), torch.zeros(2)), "lif": neuron}
    edges = [(INPUT, "fc"), ("fc", "lif"), ("lif", "fc"), ("lif", OUTPUT)]
    graph = SpikingGraph(nodes, edges, (2,))
    assert not chip_fit(graph)["mappable"]
    assert "lif -> fc carries the previous step" in chip_fit(graph)["unsupported"]

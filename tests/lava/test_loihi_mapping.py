"""Mapping onto Loihi 2: pooling folded into the layer it feeds (exact), and one verdict on
what can be mapped, shared by the chip-fit report, ``quantize`` and the Lava backend."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from ganglion.converters.loihi_quantize import quantize_loihi2
from ganglion.converters.spiking import spiking_manifest
from ganglion.models.deployable import Deployable
from ganglion.models.errors import BackendUnavailable, ConversionError
from ganglion.models.manifest import SpikingTime
from ganglion.models.spiking import Affine, Conv2d, Flatten, Neuron, SpikingGraph, SpikingNetwork
from ganglion.models.spiking.graph import INPUT, OUTPUT
from ganglion.models.spiking.layers import AvgPool2d, SumPool2d
from ganglion.models.spiking.loihi_layout import fold_pooling, unsupported_reason
from ganglion.runtime.loihi_fit import LoihiFitError, chip_fit, require_fit
from ganglion.runtime.session import load


def _lif(shape: tuple[int, ...]) -> Neuron:
    t = torch.ones(shape)
    return Neuron(
        decay=0.9 * t, gain=t, bias=0 * t, threshold=t, v_reset=0 * t, v_init=0 * t, reset="zero"
    )


def _pool_conv_graph(pool: AvgPool2d, conv: Conv2d, size: int) -> SpikingGraph:
    """input (2, size, size) -> pool -> conv -> LIF -> output."""
    nodes = {"pool": pool, "conv": conv}
    shape = SpikingGraph(nodes, [(INPUT, "pool"), ("pool", "conv"), ("conv", OUTPUT)],
                         (2, size, size)).output_shape  # fmt: skip
    nodes["lif"] = _lif(shape)
    edges = [(INPUT, "pool"), ("pool", "conv"), ("conv", "lif"), ("lif", OUTPUT)]
    return SpikingGraph(nodes, edges, (2, size, size))


def _conv(gen: torch.Generator, **kwargs) -> Conv2d:
    return Conv2d(torch.randn(3, 2, 3, 3, generator=gen), torch.randn(3, generator=gen), **kwargs)


@pytest.mark.parametrize(
    "pool, conv_kwargs, size",
    [
        (AvgPool2d((2, 2), (2, 2)), {"padding": (1, 1)}, 12),
        (SumPool2d((3, 3), (2, 2), (1, 1)), {"padding": (1, 1), "stride": (2, 2)}, 11),
        (AvgPool2d((3, 3), (1, 1)), {"dilation": (2, 2)}, 12),
    ],
    ids=["avg2-pad1", "sum3-stride2-pad1", "avg3-overlap-dilated"],
)
def test_pooling_folds_into_the_conv_it_feeds_exactly(pool, conv_kwargs, size):
    gen = torch.Generator().manual_seed(1)
    graph = _pool_conv_graph(pool, _conv(gen, **conv_kwargs), size)
    assert unsupported_reason(graph) is None
    folded = fold_pooling(graph)
    assert list(folded.nodes) == ["conv", "lif"] and folded.predecessors("conv") == [INPUT]
    x = (torch.rand(4, 2, size, size, generator=gen) < 0.5).double()
    conv = graph.nodes["conv"]
    expected = F.conv2d(
        F.avg_pool2d(x, pool.kernel_size, pool.stride, pool.padding)
        * (pool.kernel_size[0] * pool.kernel_size[1] if isinstance(pool, SumPool2d) else 1),
        conv.weight.double(), conv.bias.double(), conv.stride, conv.padding, conv.dilation,
    )  # fmt: skip
    got = folded.nodes["conv"]
    y = F.conv2d(x, got.weight.double(), got.bias.double(), got.stride, got.padding)
    assert torch.allclose(y, expected, atol=1e-5)


def test_pooling_then_flatten_folds_into_the_dense_layer_exactly():
    gen = torch.Generator().manual_seed(2)
    nodes = {
        "lif0": _lif((2, 6, 6)),
        "pool": AvgPool2d((2, 2), (2, 2)),
        "flat": Flatten(),
        "fc": Affine(torch.randn(5, 18, generator=gen), torch.randn(5, generator=gen)),
    }
    edges = [(INPUT, "lif0"), ("lif0", "pool"), ("pool", "flat"), ("flat", "fc"), ("fc", OUTPUT)]
    # the input feeds a neuron directly: not mappable, but the fold itself is still exact
    folded = fold_pooling(SpikingGraph(nodes, edges, (2, 6, 6)))
    assert folded.predecessors("flat") == ["lif0"] and folded.shapes["flat"] == (72,)
    s = (torch.rand(3, 2, 6, 6, generator=gen) < 0.5).float()
    expected = nodes["fc"].forward(F.avg_pool2d(s, 2).reshape(3, -1))
    assert torch.allclose(folded.nodes["fc"].forward(s.reshape(3, -1)), expected, atol=1e-5)


def test_pooled_map_edge_that_the_conv_pads_is_refused_naming_both_nodes():
    """5 pixels pooled by 2 drop the last pixel, which a folded Conv's padding would read."""
    graph = _pool_conv_graph(
        AvgPool2d((2, 2), (2, 2)), _conv(torch.Generator().manual_seed(3), padding=(1, 1)), 5
    )
    reason = unsupported_reason(graph)
    assert reason is not None and "'pool'" in reason and "'conv'" in reason


def _program(graph: SpikingGraph) -> Deployable:
    time = SpikingTime(timesteps=4, encoding="none", decoding="none")
    return Deployable(SpikingNetwork(graph, time), spiking_manifest(graph, time), graph.to_config())


def test_unfoldable_pooling_gets_one_verdict_from_chip_fit_quantize_and_lava():
    conv = _conv(torch.Generator().manual_seed(4), padding=(1, 1))
    nodes = {"conv": conv, "lif": _lif((3, 4, 4)), "pool": AvgPool2d((2, 2), (2, 2))}
    edges = [(INPUT, "conv"), ("conv", "lif"), ("lif", "pool"), ("pool", OUTPUT)]
    program = _program(SpikingGraph(nodes, edges, (2, 4, 4)))
    reason = "pooling node 'pool' must feed one Dense or Conv layer"
    report = chip_fit(program.module.graph)
    assert not report["mappable"] and not report["fits"] and reason in report["unsupported"]
    with pytest.raises(LoihiFitError, match=reason):
        require_fit(report)
    with pytest.raises(ConversionError, match=reason):
        quantize_loihi2(program)
    with pytest.raises(BackendUnavailable, match=reason):
        load(program, backend="lava")


def test_chip_fit_counts_the_digits_cnn_as_mapped_with_pooling_folded(digits_cnn):
    """The CNN's AvgPools fold into the next layers: no neurons of their own; the second Conv
    reads 16 channels through a 6×6 kernel (3×3 taps spread over 2×2 windows)."""
    from ganglion.converters.spiking import SpikingOptions, convert_spiking

    model, data = digits_cnn
    opts = SpikingOptions(timesteps=4, reset="zero")
    graph = convert_spiking(model, data.x_train[:64], None, opts).module.graph
    report = chip_fit(graph)
    assert report["mappable"] and report["fits"] and report["unsupported"] is None
    rows = {row["layer"]: row for row in report["layers"]}
    pools = [n for n, layer in graph.nodes.items() if isinstance(layer, AvgPool2d)]
    assert len(pools) == 2 and not set(pools) & set(rows)
    neuron = graph.predecessors(pools[1])[0]  # the second conv block's neurons
    assert rows[neuron]["synapses"] == (16 * 6 * 6) * (32 * 4 * 4)
    assert report["neurons"] == 16 * 8 * 8 + 32 * 4 * 4 + 10


def _refused_everywhere(program: Deployable, reason: str) -> None:
    """One verdict, matching ``reason``, from chip fit, quantize and the Lava backend."""
    report = chip_fit(program.module.graph)
    assert not report["mappable"] and re.search(reason, report["unsupported"])
    with pytest.raises(ConversionError, match=reason):
        quantize_loihi2(program)
    with pytest.raises(BackendUnavailable, match=reason):
        load(program, backend="lava")


def test_non_spiking_neuron_feeding_a_dense_layer_is_refused_naming_it():
    """Lava's LIF sends spikes only, so an LI's membrane can be read as the program's output but
    cannot feed another layer: one verdict from chip fit, quantize and the Lava backend."""
    t = torch.ones(3)
    li = Neuron(decay=0.9 * t, gain=t, bias=0 * t, threshold=t, v_reset=0 * t, v_init=0 * t,
                fire="none", model="li")  # fmt: skip
    nodes = {"fc": Affine(torch.ones(3, 2), torch.zeros(3)), "hidden": li,
             "fc2": Affine(torch.ones(3, 3), torch.zeros(3)), "lif": _lif((3,))}  # fmt: skip
    edges = [(INPUT, "fc"), ("fc", "hidden"), ("hidden", "fc2"), ("fc2", "lif"), ("lif", OUTPUT)]
    program = _program(SpikingGraph(nodes, edges, (2,)))
    reason = "neuron node 'hidden' .li. is non-spiking"
    _refused_everywhere(program, reason)


def test_a_threshold_that_is_not_positive_is_refused_naming_the_neuron():
    """Loihi folds each threshold into the neuron's weights: a 0 (which NIR allows) divided
    by it and failed deep in quantize as 'cannot convert float NaN to integer'."""
    lif = _lif((3,))
    lif.threshold = torch.tensor([1.0, 0.0, 1.0])
    nodes = {"fc": Affine(torch.ones(3, 2), torch.zeros(3)), "lif": lif}
    program = _program(SpikingGraph(nodes, [(INPUT, "fc"), ("fc", "lif"), ("lif", OUTPUT)], (2,)))
    reason = r"neuron node 'lif' has threshold 0 at index \(1,\): Loihi 2 folds each threshold"
    _refused_everywhere(program, reason)


def test_chip_fit_takes_its_limits_from_the_loihi2_device_profile(monkeypatch):
    """The report's limits are the profile's figures, and a changed profile changes the fit: a
    layer of 4 neurons fed by 4·3000 synapses needs ceil(12000 / 5000) = 3 cores of 5000."""
    import dataclasses

    from ganglion.device.profiles.registry import builtin_profiles
    from ganglion.runtime import loihi_fit

    profile = builtin_profiles()["loihi2"]
    figures = profile.neuromorphic
    nodes = {"fc": Affine(torch.ones(4, 3000), torch.zeros(4)), "lif": _lif((4,))}
    graph = SpikingGraph(nodes, [(INPUT, "fc"), ("fc", "lif"), ("lif", OUTPUT)], (3000,))
    report = chip_fit(graph)
    assert report["limits"] == {
        "cores_per_chip": figures.cores,
        "neurons_per_core": figures.neurons_per_core,
        "synapses_per_core": figures.synapses_per_core,
        "bytes_per_synapse": figures.bytes_per_synapse,
    }
    assert report["neurocores"] == 1 and "120M synapses per chip" in report["source"]
    small = dataclasses.replace(figures, synapses_per_core=5000, bytes_per_synapse=2, cores=2)
    monkeypatch.setattr(
        loihi_fit, "_profile", lambda: dataclasses.replace(profile, neuromorphic=small)
    )
    report = chip_fit(graph)
    assert report["neurocores"] == 3 and report["chips_needed"] == 2 and not report["fits"]
    assert report["layers"][0]["synaptic_memory_bytes"] == 2 * 12000

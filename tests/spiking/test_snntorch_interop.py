"""Graphs exported by snnTorch's export_to_nir run here and reproduce snnTorch's own spikes."""

from __future__ import annotations

from pathlib import Path

import nir
import pytest
import snntorch as snn
import torch
from snntorch import utils
from snntorch.export_nir import export_to_nir
from torch import nn

from ganglion.converters.nir_graph import read_nir
from ganglion.models.manifest import SpikingTime
from ganglion.models.spiking import SpikingNetwork


def leaky(shape: tuple[int, ...], beta: float, threshold: float, output: bool = False) -> snn.Leaky:
    """snnTorch Leaky with NIR's semantics: reset to zero at the spike, per-neuron arrays."""
    return snn.Leaky(
        beta=torch.full(shape, beta),
        threshold=torch.full(shape, threshold),
        init_hidden=True,
        output=output,
        reset_mechanism="zero",
        reset_delay=False,
    )


def snntorch_spikes(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run snnTorch step by step over time-major x; returns the output layer's spikes."""
    utils.reset(net)
    with torch.no_grad():
        return torch.stack([net(x_t)[0] for x_t in x])


def ganglion_spikes(
    net: nn.Module, sample: torch.Tensor, x: torch.Tensor, path: Path
) -> torch.Tensor:
    nir.write(str(path), export_to_nir(net, sample, ignore_dims=[0]))
    program = SpikingNetwork(read_nir(path), SpikingTime())
    with torch.no_grad():
        return program.run(x)


def test_dense_snntorch_network_spikes_match(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(12, 32),
        leaky((32,), 0.9, 0.6),
        nn.Linear(32, 6),
        leaky((6,), 0.8, 0.4, output=True),
    )
    x = (torch.rand(40, 16, 12) < 0.3).float()
    expected = snntorch_spikes(net, x)
    got = ganglion_spikes(net, torch.zeros(1, 12), x, tmp_path / "dense.nir")
    assert expected.sum() > 50, "the network must spike for the test to mean anything"
    assert torch.equal(got, expected)


def test_conv_snntorch_network_spikes_match(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        leaky((4, 6, 6), 0.85, 0.5),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(36, 5),
        leaky((5,), 0.9, 0.3, output=True),
    )
    x = torch.rand(25, 8, 1, 6, 6)
    expected = snntorch_spikes(net, x)
    got = ganglion_spikes(net, torch.zeros(1, 1, 6, 6), x, tmp_path / "conv.nir")
    assert expected.sum() > 20
    assert torch.equal(got, expected)


@pytest.mark.parametrize("beta", [0.5, 0.95])
def test_imported_leak_equals_snntorch_beta(tmp_path: Path, beta: float) -> None:
    net = nn.Sequential(nn.Linear(3, 3), leaky((3,), beta, 1.0, output=True))
    path = tmp_path / "b.nir"
    nir.write(str(path), export_to_nir(net, torch.zeros(1, 3), ignore_dims=[0]))
    neuron = read_nir(path).nodes["1"]
    assert torch.allclose(neuron.decay, torch.full((3,), beta), atol=1e-6)
    assert torch.all(neuron.gain == 1.0)

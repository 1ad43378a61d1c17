"""Small networks for the spiking tests: residual, LIF, and hand-built graphs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ganglion.models.manifest import SpikingTime
from ganglion.models.spiking import (
    Affine,
    Conv2d,
    Flatten,
    Neuron,
    Scale,
    SpikingGraph,
    SpikingNetwork,
    SumPool2d,
)


class ResidualNet(nn.Module):
    """conv -> relu -> [conv + skip] -> relu -> pool -> linear, untrained but deterministic."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = torch.relu(self.bn(self.body(h)) + h)
        return self.head(torch.flatten(self.pool(h), 1))


@pytest.fixture
def residual_net() -> nn.Module:
    """A residual CNN on 1x8x8 inputs, in eval mode with non-trivial BatchNorm statistics."""
    net = ResidualNet()
    net.bn.running_mean.uniform_(-0.2, 0.2)
    net.bn.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture
def handmade_graph() -> SpikingGraph:
    """Every node type: conv, sum-pool, flatten, scale, affine, leaky neurons with bias."""
    g = torch.Generator().manual_seed(7)
    shape = (4, 4, 4)

    def lif(shape: tuple[int, ...], reset: str) -> Neuron:
        return Neuron(
            decay=torch.full(shape, 0.9),
            gain=torch.full(shape, 1.5),
            bias=torch.full(shape, 0.02),
            threshold=torch.rand(shape, generator=g) + 0.5,
            v_reset=torch.zeros(shape),
            v_init=torch.zeros(shape),
            reset=reset,
            model="lif",
        )

    nodes = {
        "conv": Conv2d(
            torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, generator=g) * 0.1, padding=(1, 1)
        ),
        "lif1": lif(shape, "zero"),
        "pool": SumPool2d((2, 2), (2, 2)),
        "flat": Flatten(),
        "scale": Scale(torch.rand(16, generator=g) + 0.5),
        "fc": Affine(torch.randn(5, 16, generator=g), torch.zeros(5)),
        "lif2": lif((5,), "subtract"),
    }
    edges = [
        ("input", "conv"),
        ("conv", "lif1"),
        ("lif1", "pool"),
        ("pool", "flat"),
        ("flat", "scale"),
        ("scale", "fc"),
        ("fc", "lif2"),
        ("lif2", "output"),
    ]
    return SpikingGraph(nodes, edges, input_shape=(2, 4, 4))


@pytest.fixture
def handmade_network(handmade_graph: SpikingGraph) -> SpikingNetwork:
    """The handmade graph as a time-major program (no encoding, no decoding)."""
    return SpikingNetwork(handmade_graph, SpikingTime(timesteps=12))

"""``SpikingNetwork.step`` on the CPU with numpy state: the same arithmetic with the glue cut.

At batch 1 a step's arithmetic (a few small matmuls and neuron updates) takes a few tens of
microseconds, and the torch path's per-call glue (tensor state, dictionaries per layer, tensor
wrappers around the compiled neuron loop) as much again. ``CpuStep`` walks the same nodes with
numpy state: each stateless node runs its own ``forward`` on a zero-copy tensor view, each
neuron the compiled single-step loop the torch path calls (``kernels.lif.cpu``), the decoded
output ``scale_decoded`` (numpy's float32 division is the torch path's, bit for bit). The
torch ``step`` stays the spec: equal bit for bit (``tests/spiking/test_cpu_step.py``).

It takes float32 CPU graphs where every node and the output read one node through a delay-0
edge (chains: MLPs and CNNs as converted), every neuron is ``plain`` (the compiled loop's
neuron) and the input is not rate-encoded; ``build`` gives None for any other network, and the
caller keeps the torch path. A call gives None when the network stopped suiting it (compiled
kernels turned off with ``GANGLION_KERNELS=0``, a neuron's parameters replaced by ones the loop
cannot take): the caller then takes the torch path for that step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ganglion.kernels.lif import cpu_scan_available
from ganglion.kernels.lif.cpu import float_step_loop
from ganglion.models.spiking.decoding import scale_decoded
from ganglion.models.spiking.graph_order import INPUT, OUTPUT
from ganglion.models.spiking.layers import Delay
from ganglion.models.spiking.neuron import Neuron

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class _Node:
    name: str
    source: str  # the one node (or INPUT) it reads this step
    neuron: Neuron | None  # with its membrane ``state_key``; else a stateless ``forward``
    state_key: str
    forward: Callable[[torch.Tensor], torch.Tensor] | None


class CpuStep:
    """One timestep of a suitable ``SpikingNetwork`` (module docstring) on numpy arrays."""

    def __init__(self, network: torch.nn.Module, nodes: list[_Node], output: str) -> None:
        self.network = network
        self.nodes = nodes
        self.output = output
        self.time = network.time
        self.decoding = network.time.decoding

    @classmethod
    def build(cls, network: torch.nn.Module) -> CpuStep | None:
        """The fast step of ``network`` (a ``SpikingNetwork``), or None when it does not suit."""
        plan, graph = network.plan, network.graph
        if network.time.encoding == "rate" or plan.delayed or plan.device.type != "cpu":
            return None
        nodes = []
        for name in [*plan.order, OUTPUT]:
            sources = plan.sources[name]
            if len(sources) != 1 or sources[0][1]:
                return None
            if name == OUTPUT:
                break
            layer, keys = graph.nodes[name], plan.state_keys[name]
            if isinstance(layer, Delay) or (isinstance(layer, Neuron) and not layer.plain):
                return None
            if isinstance(layer, Neuron):
                nodes.append(_Node(name, sources[0][0], layer, keys[0], None))
            else:
                nodes.append(_Node(name, sources[0][0], None, "", layer.forward))
        return cls(network, nodes, plan.sources[OUTPUT][0][0])

    def __call__(self, x: np.ndarray, state: Arrays) -> tuple[np.ndarray, Arrays] | None:
        """(output, new state) for input ``x`` [B, ...] and ``state`` (the network's names, as
        arrays), as ``SpikingNetwork.step`` gives them; None when it cannot (module docstring).
        Call it under ``torch.inference_mode`` (the layers' weights may require grad)."""
        if not cpu_scan_available():
            return None
        values = {INPUT: x}
        new: Arrays = {"t": state["t"] + 1}
        for node in self.nodes:
            inp = values[node.source]
            if node.neuron is None:
                values[node.name] = node.forward(torch.from_numpy(inp)).numpy()
                continue
            params = node.neuron.cpu_scan_params()
            if params is None:
                return None
            values[node.name], new[node.state_key] = float_step_loop(
                np.ascontiguousarray(inp),
                np.ascontiguousarray(state[node.state_key]),
                *params,
                node.neuron.reset == "zero",
            )
        out = values[self.output]
        if self.decoding == "none":
            return np.ascontiguousarray(out), new
        new["decode"] = state["decode"] + out
        return scale_decoded(new["decode"], self.time), new

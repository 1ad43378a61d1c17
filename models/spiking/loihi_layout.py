"""What a spiking graph must look like to map onto Loihi 2 (through Lava), and its number formats.

Mappable graphs hold only Affine (Lava ``Dense``), Conv2d (Lava ``Conv``), Flatten (a port
reshape) and Neuron (Lava ``LIF``) nodes. Every synaptic node reads spikes (or the graph input)
and feeds exactly one neuron layer or the graph output; every neuron layer reads synaptic nodes
only. Loihi 2 formats used here (Lava ``PyLifModelBitAcc``, ``PyDenseModelBitAcc``):
weight mantissa 8-bit signed, shared per-layer exponent; u, v 24-bit; du, dv 12-bit unsigned;
bias mantissa 13-bit signed with a 3-bit exponent; vth 17-bit unsigned (compared as vth << 6).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ganglion.models.spiking.graph import INPUT, OUTPUT, SpikingGraph
from ganglion.models.spiking.layers import Affine, Conv2d, Flatten, Neuron

SYNAPTIC = (Affine, Conv2d)
MAPPABLE = (Affine, Conv2d, Flatten, Neuron)
WEIGHT_MANT_MAX = 127  # 8-bit signed mantissa, used symmetric: [-127, 127]
BIAS_MANT_MAX = 4095  # 13-bit signed: [-4096, 4095]
BIAS_EXP_MAX = 7  # 3-bit unsigned
VTH_MAX = 2**17 - 1
UV_LIMIT = 2**23  # u wraps and v clips at 24 bits
ACT_SHIFT = 6  # a_in and vth are MSB-aligned by << 6
DECAY_UNITY = 4096
DU_PLAIN = 4095  # with Lava's +1 offset, u = a_in << 6 each step (no current memory)


@dataclass
class LoihiConfig:
    """The fixed-point program's numbers that are not in its graph (config.json ``loihi``).

    The graph holds effective integers: synaptic weights ``W_q`` (a spike of value s adds
    ``W_q · s`` to a_in), neuron ``threshold = vth << 6``, ``bias = bias_mant << bias_exp``,
    ``decay = (4096 − dv) / 4096``, ``gain = 64`` and integer ``v_init``.
    """

    input_scale: float = 1.0  # graded input spike = round(x · input_scale)
    input_bits: int = 0  # 0: binary input spikes; else graded, |x_q| ≤ 2**input_bits − 1
    readout_scale: float = 1.0  # output current = a / readout_scale + readout_bias
    readout_bias: list[float] = field(default_factory=list)  # per output feature (flattened)
    weight_exp: dict[str, int] = field(default_factory=dict)  # synaptic node -> Lava exponent


def unsupported_reason(graph: SpikingGraph) -> str | None:
    """Why ``graph`` cannot map onto Loihi 2 through Lava, naming the node; None if it can."""
    supported = ", ".join(t.__name__ for t in MAPPABLE)
    if graph.delays:
        a, b = next(iter(graph.delays))
        return f"edge {a} -> {b} carries the previous step (recurrent or delayed): not mapped"
    for name, layer in graph.nodes.items():
        kind = type(layer).__name__
        if not isinstance(layer, MAPPABLE):
            return f"node {name!r} ({kind}) has no Loihi 2 / Lava process (supported: {supported})"
        sources = [_through_flatten(graph, p) for p in graph.predecessors(name)]
        consumers = [b for a, b in graph.edges if a == name]
        if isinstance(layer, Neuron) and any(not _is_synaptic(graph, s) for s in sources):
            return f"neuron node {name!r} must read synaptic layers only (Dense/Conv)"
        if isinstance(layer, Neuron) and not layer.plain:
            return (
                f"neuron node {name!r} ({layer.model}, fire {layer.fire}, spikes {layer.spikes}, "
                f"reset delay {layer.reset_delay}) has no Loihi 2 LIF form here: Lava's LIF "
                f"fires one spike on v > vth and resets at once"
            )
        if isinstance(layer, Flatten) and not layer.full:
            return f"Flatten node {name!r} keeps several axes; only a full flatten is mapped"
        if isinstance(layer, SYNAPTIC):
            if any(s != INPUT and not isinstance(graph.nodes[s], Neuron) for s in sources):
                return f"synaptic node {name!r} must read spikes (a neuron layer or the input)"
            if len(consumers) != 1 or not _feeds_neuron_or_output(graph, consumers[0]):
                return f"synaptic node {name!r} must feed exactly one neuron layer or the output"
    return None


def _through_flatten(graph: SpikingGraph, name: str) -> str:
    while name != INPUT and isinstance(graph.nodes[name], Flatten):
        name = graph.predecessors(name)[0]
    return name


def _is_synaptic(graph: SpikingGraph, name: str) -> bool:
    return name != INPUT and isinstance(graph.nodes[name], SYNAPTIC)


def _feeds_neuron_or_output(graph: SpikingGraph, name: str) -> bool:
    return name == OUTPUT or isinstance(graph.nodes[name], Neuron)


def synaptic_depth(graph: SpikingGraph) -> int:
    """Synaptic layers on the longest input -> output path: Lava's delay in timesteps."""
    depth = {INPUT: 0}
    for name, layer in graph.nodes.items():
        base = max(depth[p] for p in graph.predecessors(name))
        depth[name] = base + (1 if isinstance(layer, SYNAPTIC) else 0)
    return max(depth[p] for p in graph.predecessors(OUTPUT))


def split_bias(bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Effective integer bias [N] -> (13-bit mantissa, smallest 3-bit exponent) with
    ``mant << exp`` equal to the nearest representable value (equal to ``bias`` when it is)."""
    b = bias.double()
    exp = torch.zeros_like(b, dtype=torch.int64)
    for e in range(BIAS_EXP_MAX + 1):
        exp = torch.where((b / 2**e).round().abs() <= BIAS_MANT_MAX, exp, exp + 1)
    exp = exp.clamp(max=BIAS_EXP_MAX)
    mant = (b / 2.0**exp).round().clamp(-BIAS_MANT_MAX - 1, BIAS_MANT_MAX).long()
    return mant, exp


def decay_to_dv(decay: torch.Tensor) -> torch.Tensor:
    """Neuron ``decay`` (1 = no leak) -> Loihi's 12-bit ``dv`` (v keeps (4096 − dv)/4096)."""
    return (DECAY_UNITY - (decay.double() * DECAY_UNITY).round()).long().clamp(0, DECAY_UNITY - 1)

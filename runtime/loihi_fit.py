"""Chip-fit report: how many Loihi 2 neurocores and chips a spiking program needs.

The limits are read from the built-in ``loihi2`` device profile (``device/profiles/loihi2.json``,
each figure with its source there): 128 neurocores per chip, 1,048,576 neurons and 120 M
synapses per chip (Intel's Loihi 2 brief). The per-core figures are those chip totals split
evenly over 128 cores — an assumption (Intel publishes no per-core limits in a form we found):
8,192 neurons and 937,500 synapses per core. Each neuron layer sits on its own cores together
with the synapses that feed it, recurrent ones included (a Dense read-out counts its outputs as
neurons; a non-spiking LI / CubaLI / I read-out is a neuron layer like any other); Conv
connections are counted expanded (no weight sharing), and synaptic memory is one byte per
synapse (the 8-bit weight mantissa), so the report errs on the large side.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from ganglion.device.profiles.registry import builtin_profiles
from ganglion.device.profiles.schema import DeviceProfile
from ganglion.models.errors import GanglionError
from ganglion.models.spiking.graph import OUTPUT, SpikingGraph
from ganglion.models.spiking.layers import Affine, Conv2d, Neuron
from ganglion.models.spiking.loihi_layout import fold_pooling, unsupported_reason

PROFILE = "loihi2"
LIMIT_FIGURES = {  # report key -> the profile's neuromorphic figure, and how the report words it
    "cores_per_chip": ("cores", "cores/chip"),
    "neurons_per_core": ("neurons_per_core", "neurons/core"),
    "synapses_per_core": ("synapses_per_core", "synapses/core"),
    "bytes_per_synapse": ("bytes_per_synapse", "B/synapse"),
}


@functools.cache
def _profile() -> DeviceProfile:
    return builtin_profiles()[PROFILE]


def chip_limits() -> dict[str, int]:
    """Loihi 2's capacity from its device profile: cores per chip, neurons and synapses per
    core, bytes of synaptic memory per synapse."""
    figures = _profile().neuromorphic
    assert figures is not None  # the loihi2 profile is neuromorphic (its schema requires figures)
    return {key: getattr(figures, figure) for key, (figure, _) in LIMIT_FIGURES.items()}


def limits_source() -> str:
    """Each limit with where it comes from (the profile's source, or "assumed")."""
    profile, limits = _profile(), chip_limits()
    parts = []
    for key, (figure, words) in LIMIT_FIGURES.items():
        dotted = f"neuromorphic.{figure}"
        origin = "assumed" if profile.is_assumed(dotted) else profile.sources[dotted]
        parts.append(f"{limits[key]:,} {words} ({origin})")
    return f"{PROFILE} device profile: " + "; ".join(parts)


class LoihiFitError(GanglionError):
    """A program needs more Loihi 2 chips than declared."""


def _synapses(layer: Affine | Conv2d, out_shape: tuple[int, ...]) -> int:
    """Connections of a synaptic layer (Conv expanded: every output neuron's receptive field)."""
    if isinstance(layer, Affine):
        return int(layer.weight.numel())
    per_output = int(layer.weight[0].numel())
    return per_output * math.prod(out_shape)


def chip_fit(graph: SpikingGraph, chips: int = 1) -> dict[str, Any]:
    """Neurons, synapses, synaptic memory and neurocores per layer; chips needed; fits or not.

    ``mappable`` says whether ``ganglion quantize`` and the Lava backend can map the program at
    all (``unsupported`` names the node that stops them); a program that cannot be mapped does
    not fit, whatever its size. A mappable program is counted as mapped: pooling folded into
    the layer it feeds (no neurons of its own, the folded layer's larger kernel)."""
    reason = unsupported_reason(graph)
    if reason is None:
        graph = fold_pooling(graph)
    limits = chip_limits()
    targets = {n: graph.shapes[n] for n, layer in graph.nodes.items() if isinstance(layer, Neuron)}
    readout = [
        p for p in graph.predecessors(OUTPUT) if isinstance(graph.nodes.get(p), (Affine, Conv2d))
    ]
    targets.update({p: graph.shapes[p] for p in readout})
    layers = []
    for name, shape in targets.items():
        feeding = (
            [name]
            if name in readout
            else [
                p for p in graph.predecessors(name) if isinstance(graph.nodes[p], (Affine, Conv2d))
            ]
        )
        synapses = sum(_synapses(graph.nodes[p], graph.shapes[p]) for p in feeding)
        neurons = math.prod(shape)
        cores = max(
            math.ceil(neurons / limits["neurons_per_core"]),
            math.ceil(synapses / limits["synapses_per_core"]),
            1,
        )
        layers.append(
            {
                "layer": name,
                "neurons": neurons,
                "synapses": synapses,
                "synaptic_memory_bytes": synapses * limits["bytes_per_synapse"],
                "neurocores": cores,
            }
        )
    cores = sum(layer["neurocores"] for layer in layers)
    needed = math.ceil(cores / limits["cores_per_chip"])
    available = chips * limits["cores_per_chip"]
    return {
        "layers": layers,
        "neurons": sum(layer["neurons"] for layer in layers),
        "synapses": sum(layer["synapses"] for layer in layers),
        "neurocores": cores,
        "chips_needed": needed,
        "chips_declared": chips,
        "fits": cores <= available and reason is None,
        "mappable": reason is None,
        "unsupported": reason,
        "neurocores_over": max(cores - available, 0),
        "limits": limits,
        "source": limits_source(),
    }


def require_fit(report: dict[str, Any]) -> None:
    """LoihiFitError saying why the program cannot be mapped, or by how much it exceeds the
    declared chips."""
    if report.get("unsupported"):
        raise LoihiFitError(f"program cannot be mapped onto Loihi 2: {report['unsupported']}")
    if not report["fits"]:
        raise LoihiFitError(
            f"program needs {report['neurocores']} neurocores ({report['chips_needed']} Loihi 2 "
            f"chips), {report['chips_declared']} declared: {report['neurocores_over']} neurocores "
            f"({report['chips_needed'] - report['chips_declared']} chips) over"
        )

"""Chip-fit report: how many Loihi 2 neurocores and chips a spiking program needs.

Limits used (``LIMITS``): 128 neurocores per chip, 1,048,576 neurons and 120 M synapses per chip
(Intel's Loihi 2 brief; open-neuromorphic.org's Loihi 2 page). The per-core figures are those
chip totals split evenly over 128 cores — an assumption (Intel publishes no per-core limits in
a form we found): 8,192 neurons and 937,500 synapses per core. Each neuron layer sits on its
own cores together with the synapses that feed it (the readout layer counts its outputs as
neurons); Conv connections are counted expanded (no weight sharing), and synaptic memory is
one byte per synapse (the 8-bit weight mantissa), so the report errs on the large side.
"""

from __future__ import annotations

import math
from typing import Any

from ganglion.models.errors import GanglionError
from ganglion.models.spiking.graph import OUTPUT, SpikingGraph
from ganglion.models.spiking.layers import Affine, Conv2d, Neuron
from ganglion.models.spiking.loihi_layout import fold_pooling, unsupported_reason

LIMITS = {
    "cores_per_chip": 128,
    "neurons_per_core": 1_048_576 // 128,
    "synapses_per_core": 120_000_000 // 128,
    "bytes_per_synapse": 1,
}
SOURCE = (
    "Intel Loihi 2 brief and open-neuromorphic.org: 128 cores, 1M neurons, 120M synapses "
    "per chip; per-core limits = chip totals / 128 (assumption)"
)


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
            math.ceil(neurons / LIMITS["neurons_per_core"]),
            math.ceil(synapses / LIMITS["synapses_per_core"]),
            1,
        )
        layers.append(
            {
                "layer": name,
                "neurons": neurons,
                "synapses": synapses,
                "synaptic_memory_bytes": synapses * LIMITS["bytes_per_synapse"],
                "neurocores": cores,
            }
        )
    cores = sum(layer["neurocores"] for layer in layers)
    needed = math.ceil(cores / LIMITS["cores_per_chip"])
    available = chips * LIMITS["cores_per_chip"]
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
        "limits": dict(LIMITS),
        "source": SOURCE,
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

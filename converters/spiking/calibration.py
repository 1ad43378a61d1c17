"""Post-hoc SNN calibration against the ANN's activations (Li et al., ICML 2021, "A Free Lunch
From ANN"), run after threshold balancing.

A converted layer's spiking output, averaged over T and scaled by its threshold, estimates the
ANN's activation; at small T it is off by a quantization and clipping error that grows layer
after layer. Calibration walks the layers in topological order on the calibration data, each
against the ANN's activation of the same layer on the same inputs, with the layers before it
already calibrated:

    bias (per output channel):  b ← b − (μ_SNN − μ_ANN), μ the mean over samples (and space)
    potential (per neuron):     v_init ← v_init + T · (E[ANN] − E[SNN])

The bias goes into the Linear or Conv2d that feeds the neuron (the output layer too, for
membrane decoding), so a calibrated program is an ordinary spiking program.
"""

from __future__ import annotations

import torch

from ganglion.converters.spiking.ann_graph import AnnGraph
from ganglion.models.manifest import SpikingTime
from ganglion.models.spiking.graph import INPUT, OUTPUT, SpikingGraph
from ganglion.models.spiking.layers import Affine, Conv2d
from ganglion.models.spiking.network import SpikingNetwork
from ganglion.models.spiking.neuron import Neuron

CALIBRATION_SAMPLES = 1024  # calibration inputs used (Li et al.: one batch to 1024)
_BATCH = 512


def probe(network: SpikingNetwork, node: str, x: torch.Tensor) -> torch.Tensor:
    """The value ``node`` carries, averaged over the program's T steps, per sample [N, *shape]:
    a neuron's spikes per step times its threshold (the ANN activation it stands for), or the
    output's mean current. Runs only the part of the graph that feeds ``node``."""
    graph = network.graph
    sub = graph if node == OUTPUT else _prefix_graph(graph, node)
    time = SpikingTime(
        network.time.timesteps,
        encoding=network.time.encoding,
        decoding="membrane",
        seed=network.time.seed,
    )
    program = SpikingNetwork(sub, time)
    with torch.no_grad():
        out = torch.cat([program.run(x[i : i + _BATCH]) for i in range(0, x.shape[0], _BATCH)])
    if node != OUTPUT:
        out = out * graph.nodes[node].threshold
    return out


def _prefix_graph(graph: SpikingGraph, node: str) -> SpikingGraph:
    """The nodes ``node`` depends on, with ``node`` as the output."""
    keep, todo = {node}, [node]
    while todo:
        for p in graph.predecessors(todo.pop()):
            if p != INPUT and p not in keep:
                keep.add(p)
                todo.append(p)
    edges = [(a, b) for a, b in graph.edges if b in keep and (a in keep or a == INPUT)]
    delays = {e: d for e, d in graph.delays.items() if e in edges}
    nodes = {n: layer for n, layer in graph.nodes.items() if n in keep}
    return SpikingGraph(nodes, [*edges, (node, OUTPUT)], graph.input_shape, delays)


def ann_targets(ann: AnnGraph, graph: SpikingGraph, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What each calibrated node should carry: the ANN activation of its ReLU (the ReLU of the
    output for a spiking output layer), and the ANN output for the program's output."""
    with torch.no_grad():
        out, values = ann.run(x)
    targets = {}
    for name, layer in graph.nodes.items():
        if isinstance(layer, Neuron):
            targets[name] = values[name] if name in values else torch.relu(out)
    if not any(isinstance(graph.nodes.get(p), Neuron) for p in graph.predecessors(OUTPUT)):
        targets[OUTPUT] = out
    return targets


def calibrate(
    network: SpikingNetwork, ann: AnnGraph, x: torch.Tensor, steps: tuple[str, ...]
) -> dict[str, dict[str, float | bool]]:
    """Calibrate ``network`` in place on inputs ``x``, layer by layer in topological order.

    steps: any of "bias" and "potential" (in that order within a layer).
    Returns per calibrated node, against the ANN before and after (the whole network
    calibrated): the RMS error and the mean error per channel (its absolute value averaged
    over channels, what the corrections remove), and which corrections it received.
    """
    x = x[:CALIBRATION_SAMPLES]
    targets = ann_targets(ann, network.graph, x)
    before = {n: _errors(probe(network, n, x), t) for n, t in targets.items()}
    applied: dict[str, dict[str, bool]] = {n: {} for n in targets}
    for name, target in targets.items():
        if "bias" in steps:
            applied[name]["bias"] = _correct_bias(network, name, x, target)
        if "potential" in steps and name != OUTPUT:
            _correct_potential(network, name, x, target)
            applied[name]["potential"] = True
    after = {n: _errors(probe(network, n, x), t) for n, t in targets.items()}
    return {
        n: {
            "rmse_before": before[n][0],
            "rmse_after": after[n][0],
            "mean_error_before": before[n][1],
            "mean_error_after": after[n][1],
            **applied[n],
        }
        for n in targets
    }


def _correct_bias(
    network: SpikingNetwork, name: str, x: torch.Tensor, target: torch.Tensor
) -> bool:
    """b ← b − (μ_SNN − μ_ANN) per output channel, in the first Linear/Conv2d feeding ``name``;
    False when no such layer feeds it directly."""
    synapse = next(
        (
            network.graph.nodes[p]
            for p in network.graph.predecessors(name)
            if isinstance(network.graph.nodes.get(p), Affine | Conv2d)
        ),
        None,
    )
    if synapse is None:
        return False
    synapse.bias = synapse.bias - _channel_means(probe(network, name, x) - target)
    return True


def _correct_potential(
    network: SpikingNetwork, name: str, x: torch.Tensor, target: torch.Tensor
) -> None:
    """v_init ← v_init + T · (E[ANN] − E[SNN]) per neuron."""
    neuron = network.graph.nodes[name]
    error = (probe(network, name, x) - target).mean(0)
    neuron.v_init = neuron.v_init - network.time.timesteps * error


def _channel_means(error: torch.Tensor) -> torch.Tensor:
    """Mean of an error [N, C, ...] per channel (axis 1) -> [C]."""
    return error.transpose(0, 1).reshape(error.shape[1], -1).mean(1)


def _errors(value: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """RMS error, and the mean over channels of |mean error per channel|."""
    error = value - target
    return float(error.pow(2).mean().sqrt()), float(_channel_means(error).abs().mean())

"""The layer table of a spiking program read from its files, without torch: config.json's
graph and the shapes of its tensors (``weights.safetensors``).

It reproduces what ``SpikingGraph.from_config`` builds from the same files (node order, each
node's inputs, per-sample shapes, tensor sizes) for graphs as Ganglion writes them, where
every cycle already carries a delay-1 edge. Anything else (a cycle of delay-0 edges, a node
type or field it does not know, shapes that do not fit) gives None: the caller then describes
the rebuilt graph, which also says what is wrong.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ganglion.models.errors import ShapeError
from ganglion.models.spiking.graph_order import (
    INPUT,
    OUTPUT,
    Edge,
    predecessors,
    propagate_shapes,
    topological_order,
)
from ganglion.runtime.artifact_shapes import Shape, element_count

GRAPH_OF_ARCHITECTURE = {"spiking_graph": None, "loihi2_fixed_graph": "graph"}  # config key


def spiking_rows(
    architecture: str, config: dict[str, Any], shapes: dict[str, Shape]
) -> dict[str, Any] | None:
    """``layers`` rows, ``parameters`` and ``parameter_split`` as ``SpikingKind.describe``
    gives them for the graph in ``config`` whose tensors have ``shapes`` (``<node>.<field>``);
    None when the files alone do not settle them."""
    if architecture not in GRAPH_OF_ARCHITECTURE:
        return None
    key = GRAPH_OF_ARCHITECTURE[architecture]
    try:
        graph = config if key is None else config[key]
        nodes = {spec["name"]: spec for spec in graph["nodes"]}
        edges = [(str(e[0]), str(e[1])) for e in graph["edges"]]
        delays = {(str(e[0]), str(e[1])): int(e[2]) for e in graph["edges"] if len(e) > 2}
        input_shape = tuple(int(d) for d in graph["input_shape"])
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    if not set(delays.values()) <= {0, 1}:
        return None
    delayed = {edge for edge, d in delays.items() if d}
    if not all(isinstance(n, str) for n in nodes) or not _valid_edges(set(nodes), edges):
        return None
    order = topological_order(list(nodes), edges, delayed)
    if len(order) != len(nodes):  # a delay-0 cycle: the graph would first delay its closing edge
        return None
    tensors = {name: _node_tensors(name, shapes) for name in order}

    def out_shape(name: str, in_shape: Shape) -> Shape:
        out = _out_shape(nodes[name], tensors[name], in_shape)
        if out is None:
            raise ShapeError(f"node {name!r} cannot take input {in_shape}")
        return out

    try:
        node_shapes = propagate_shapes(order, edges, input_shape, out_shape)
    except ShapeError:
        return None
    return _rows(order, nodes, tensors, edges, node_shapes)


def _valid_edges(names: set[str], edges: list[Edge]) -> bool:
    names = names | {INPUT, OUTPUT}
    known = all(a in names and b in names and a != OUTPUT and b != INPUT for a, b in edges)
    return known and len(set(edges)) == len(edges)


def _node_tensors(name: str, shapes: dict[str, Shape]) -> dict[str, Shape]:
    """The node's fields as ``from_config`` gathers them: ``<name>.<field>``, no further dot."""
    prefix = f"{name}."
    return {
        k[len(prefix) :]: shape
        for k, shape in shapes.items()
        if k.startswith(prefix) and "." not in k[len(prefix) :]
    }


def _out_shape(spec: dict[str, Any], tensors: dict[str, Shape], in_shape: Shape) -> Shape | None:
    """A node's per-sample output shape, as its class in ``models/spiking/layers.py`` gives it."""
    kind = spec.get("type")
    try:
        if kind in ("Scale", "Threshold"):
            return in_shape
        if kind == "Neuron":
            return in_shape if tensors["threshold"] == in_shape else None
        if kind == "Delay":
            np.broadcast_shapes(tensors["steps"], in_shape)
            return in_shape
        if kind == "Flatten":
            return _flatten(spec.get("start_dim", 0), spec.get("end_dim", -1), in_shape)
        if kind in ("AvgPool2d", "SumPool2d"):
            return _pooled(spec, in_shape)
        weight, bias = tensors["weight"], tensors["bias"]
        if bias != weight[:1] or len(weight) != {"Affine": 2, "Conv1d": 3, "Conv2d": 4}[kind]:
            return None
        if kind == "Affine":
            return (weight[0],)
        return _convolved(spec, weight, in_shape)
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError):
        return None


def _flatten(start_dim: int, end_dim: int, in_shape: Shape) -> Shape | None:
    rank = len(in_shape)
    start, end = (start_dim % rank, end_dim % rank) if rank else (0, 0)
    if start > end:
        return None
    return (*in_shape[:start], math.prod(in_shape[start : end + 1]), *in_shape[end + 1 :])


def _pooled(spec: dict[str, Any], in_shape: Shape) -> Shape:
    c, h, w = in_shape
    (kh, kw), (sh, sw) = spec["kernel_size"], spec["stride"]
    ph, pw = spec.get("padding", (0, 0))
    return (c, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)


def _convolved(spec: dict[str, Any], weight: Shape, in_shape: Shape) -> Shape:
    if len(weight) == 3:  # Conv1d: [out, in/groups, k] on (C, L)
        _, length = in_shape
        stride, padding = int(spec.get("stride", 1)), int(spec.get("padding", 0))
        dilation = int(spec.get("dilation", 1))
        return (weight[0], (length + 2 * padding - dilation * (weight[2] - 1) - 1) // stride + 1)
    _, h, w = in_shape  # Conv2d: [out, in/groups, kh, kw] on (C, H, W)
    (sh, sw), (ph, pw) = spec.get("stride", (1, 1)), spec.get("padding", (0, 0))
    dh, dw = spec.get("dilation", (1, 1))
    oh = (h + 2 * ph - dh * (weight[2] - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (weight[3] - 1) - 1) // sw + 1
    return (weight[0], oh, ow)


def _rows(
    order: list[str],
    nodes: dict[str, dict[str, Any]],
    tensors: dict[str, dict[str, Shape]],
    edges: list[Edge],
    shapes: dict[str, Shape],
) -> dict[str, Any]:
    layers, weights, constants = [], 0, 0
    for name in order:
        count = element_count(tensors[name].values())
        if nodes[name].get("type") == "Neuron":
            constants += count
        else:
            weights += count
        layers.append(
            {
                "name": name,
                "type": nodes[name]["type"],
                "shape": list(shapes[name]),
                "parameters": count,
                "inputs": predecessors(name, edges),
            }
        )
    return {
        "layers": layers,
        "parameters": weights + constants,
        "parameter_split": {"synaptic": weights, "neuron": constants},
    }

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

from ganglion.runtime.artifact_shapes import Shape, element_count

INPUT, OUTPUT = "input", "output"  # the graph's reserved node names (models/spiking/graph.py)
GRAPH_OF_ARCHITECTURE = {"spiking_graph": None, "loihi2_fixed_graph": "graph"}  # config key
Edge = tuple[str, str]


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
    order = _topological_order(list(nodes), edges, delayed)
    if order is None:
        return None
    tensors = {name: _node_tensors(name, shapes) for name in order}
    node_shapes = _infer_shapes(order, nodes, tensors, edges, input_shape)
    if node_shapes is None:
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


def _predecessors(name: str, edges: list[Edge]) -> list[str]:
    return [a for a, b in edges if b == name]


def _topological_order(nodes: list[str], edges: list[Edge], delayed: set[Edge]) -> list[str] | None:
    """Kahn's order over delay-0 edges, as ``SpikingGraph`` walks it; None on a delay-0 cycle
    (the graph would first delay the edge closing it)."""
    indegree = dict.fromkeys(nodes, 0)
    for a, b in edges:
        if b in indegree and a != INPUT and (a, b) not in delayed:
            indegree[b] += 1
    ready = [n for n in nodes if indegree[n] == 0]
    order: list[str] = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for a, b in edges:
            if a == n and (a, b) not in delayed and b in indegree:
                indegree[b] -= 1
                if indegree[b] == 0:
                    ready.append(b)
    return order if len(order) == len(nodes) else None


def _infer_shapes(
    order: list[str],
    nodes: dict[str, dict[str, Any]],
    tensors: dict[str, dict[str, Shape]],
    edges: list[Edge],
    input_shape: Shape,
) -> dict[str, Shape] | None:
    """Per-sample shapes, each node's from the first known input, as ``SpikingGraph`` infers
    them; None where its inputs disagree or a node cannot take its input."""
    shapes: dict[str, Shape] = {INPUT: input_shape}
    pending = [*order, OUTPUT]
    while pending:
        progress = False
        for name in list(pending):
            known = {shapes[p] for p in _predecessors(name, edges) if p in shapes}
            if len(known) > 1:
                return None
            if not known:
                continue
            in_shape = known.pop()
            out = in_shape if name == OUTPUT else _out_shape(nodes[name], tensors[name], in_shape)
            if out is None:
                return None
            shapes[name] = out
            pending.remove(name)
            progress = True
        if not progress:
            return None
    for name in [*order, OUTPUT]:
        if len({shapes[p] for p in _predecessors(name, edges)}) != 1:
            return None
    return shapes


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
                "inputs": _predecessors(name, edges),
            }
        )
    return {
        "layers": layers,
        "parameters": weights + constants,
        "parameter_split": {"synaptic": weights, "neuron": constants},
    }

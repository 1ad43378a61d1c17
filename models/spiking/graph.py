"""SpikingGraph: the structure of a spiking program (nodes, edges, shapes) and its config form.

Semantics follow NIR: a node's input is the sum of everything on its incoming edges; the
whole graph is evaluated once per timestep, in topological order (no synaptic delay).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ganglion.models.errors import ShapeError
from ganglion.models.spiking.layers import LAYER_TYPES, Neuron, plain_fields, tensor_fields

INPUT, OUTPUT = "input", "output"


@dataclass
class SpikingGraph:
    """Nodes keyed by name (topologically ordered on construction) and directed edges.

    ``INPUT`` and ``OUTPUT`` are reserved names of the graph's single input and output; they
    are not in ``nodes``. ``input_shape`` is per sample.
    """

    nodes: dict[str, Any]
    edges: list[tuple[str, str]]
    input_shape: tuple[int, ...]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, init=False)
    _preds: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(d) for d in self.input_shape)
        self.edges = [(str(a), str(b)) for a, b in self.edges]
        names = set(self.nodes) | {INPUT, OUTPUT}
        for a, b in self.edges:
            if a not in names or b not in names:
                raise ShapeError(f"edge {a} -> {b} names a node that does not exist")
            self._preds.setdefault(b, []).append(a)
        self.nodes = {n: self.nodes[n] for n in self._topological_order()}
        self.shapes = self._infer_shapes()

    def predecessors(self, name: str) -> list[str]:
        """Nodes with an edge into ``name``, in edge order."""
        return self._preds.get(name, [])

    def input_of(self, name: str, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """The input of ``name``: the sum of its predecessors' values, in edge order."""
        preds = self.predecessors(name)
        total = values[preds[0]]
        for p in preds[1:]:
            total = total + values[p]
        return total

    def _topological_order(self) -> list[str]:
        indegree = {n: 0 for n in self.nodes}
        for a, b in self.edges:
            if b in indegree and a != INPUT:
                indegree[b] += 1
        ready = [n for n in self.nodes if indegree[n] == 0]
        order: list[str] = []
        while ready:
            n = ready.pop(0)
            order.append(n)
            for a, b in self.edges:
                if a == n and b in indegree:
                    indegree[b] -= 1
                    if indegree[b] == 0:
                        ready.append(b)
        if len(order) != len(self.nodes):
            cyclic = sorted(set(self.nodes) - set(order))
            raise ShapeError(f"recurrent edges are not supported (cycle through {cyclic})")
        return order

    def _infer_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {INPUT: self.input_shape}
        for name in [*self.nodes, OUTPUT]:
            preds = self.predecessors(name)
            if not preds:
                raise ShapeError(f"node {name!r} has no input")
            in_shapes = {shapes[p] for p in preds}
            if len(in_shapes) != 1:
                raise ShapeError(f"inputs of {name!r} disagree in shape: {sorted(in_shapes)}")
            in_shape = in_shapes.pop()
            shapes[name] = in_shape if name == OUTPUT else self.nodes[name].out_shape(in_shape)
        return shapes

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the graph's output."""
        return self.shapes[OUTPUT]

    def neurons(self) -> dict[str, Neuron]:
        """The neuron nodes, in topological order."""
        return {n: layer for n, layer in self.nodes.items() if isinstance(layer, Neuron)}

    def to_config(self) -> dict[str, Any]:
        """JSON-able structure; tensors go to ``state_tensors``."""
        return {
            "architecture": "spiking_graph",
            "input_shape": list(self.input_shape),
            "nodes": [
                {"name": n, "type": type(layer).__name__, **plain_fields(layer)}
                for n, layer in self.nodes.items()
            ],
            "edges": [list(e) for e in self.edges],
        }

    def apply_to_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Replace every node tensor ``x`` by ``fn(x)`` (how ``Module.to`` reaches the nodes)."""
        for layer in self.nodes.values():
            for name, tensor in tensor_fields(layer).items():
                setattr(layer, name, fn(tensor))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of every node, keyed ``<node>.<field>``."""
        return {
            f"{n}.{k}": v.contiguous()
            for n, layer in self.nodes.items()
            for k, v in tensor_fields(layer).items()
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> SpikingGraph:
        """Rebuild a graph from ``to_config`` output and its tensors."""
        nodes: dict[str, Any] = {}
        for spec in config["nodes"]:
            spec = dict(spec)
            name, type_name = spec.pop("name"), spec.pop("type")
            if type_name not in LAYER_TYPES:
                raise ShapeError(f"unknown node type {type_name!r} for node {name!r}")
            if type_name == "Neuron":
                spec.pop("shape", None)
            prefix = f"{name}."
            params = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            nodes[name] = LAYER_TYPES[type_name](**params, **spec)
        return cls(
            nodes=nodes,
            edges=[tuple(e) for e in config["edges"]],
            input_shape=tuple(config["input_shape"]),
        )

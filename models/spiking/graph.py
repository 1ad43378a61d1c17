"""SpikingGraph: the structure of a spiking program (nodes, edges, shapes) and its config form.

Semantics follow NIR: a node's input is the sum of everything on its incoming edges; the
whole graph is evaluated once per timestep. An edge carries its source's output of this step
(delay 0) or of the previous step (delay 1). Delay-1 edges are a framework's synaptic delay
(Lava's Dense delivers one step late) or close a cycle: a recurrent edge carries the previous
step's spikes, as the exporting frameworks simulate it. Where the delays given leave a cycle
of delay-0 edges, the edge that closes it (first found walking the edges in order from the
input), moved back to the neuron that feeds it, gets delay 1. Nodes run in topological order
of the delay-0 edges.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ganglion.models.errors import ShapeError
from ganglion.models.spiking.graph_order import (
    INPUT,
    OUTPUT,
    Edge,
    propagate_shapes,
    topological_order,
)
from ganglion.models.spiking.layers import (
    LAYER_TYPES,
    Delay,
    Neuron,
    plain_fields,
    tensor_fields,
)


@dataclass
class SpikingGraph:
    """Nodes keyed by name (topologically ordered on construction) and directed edges.

    ``INPUT`` and ``OUTPUT`` are reserved names of the graph's single input and output; they
    are not in ``nodes``. ``input_shape`` is per sample. ``delays`` maps an edge to 1 when it
    carries the previous step's output (absent: 0).
    """

    nodes: dict[str, Any]
    edges: list[Edge]
    input_shape: tuple[int, ...]
    delays: dict[Edge, int] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, init=False)
    groups: list[list[str]] = field(default_factory=list, init=False)
    _preds: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(d) for d in self.input_shape)
        self.edges = [(str(a), str(b)) for a, b in self.edges]
        names = set(self.nodes) | {INPUT, OUTPUT}
        for a, b in self.edges:
            if a not in names or b not in names or a == OUTPUT or b == INPUT:
                raise ShapeError(f"edge {a} -> {b} names a node that does not exist")
            self._preds.setdefault(b, []).append(a)
        if len(set(self.edges)) != len(self.edges):
            raise ShapeError("an edge appears twice")
        self.delays = {(str(a), str(b)): int(d) for (a, b), d in self.delays.items() if d}
        for edge, d in self.delays.items():
            if edge not in self.edges or d != 1:
                raise ShapeError(f"delay of edge {edge[0]} -> {edge[1]} must be 0 or 1")
        self.delays.update(dict.fromkeys(self._closing_edges(), 1))
        order = topological_order(list(self.nodes), self.edges, set(self.delays))
        self.nodes = {n: self.nodes[n] for n in order}
        self.shapes = propagate_shapes(
            order, self.edges, self.input_shape, lambda n, shape: self.nodes[n].out_shape(shape)
        )
        self.groups = self._groups()

    # ---- structure ---------------------------------------------------------------------------

    def predecessors(self, name: str) -> list[str]:
        """Nodes with an edge into ``name``, in edge order."""
        return self._preds.get(name, [])

    def input_of(self, name: str, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """The input of ``name``: the sum of its predecessors' values, in edge order (edge
        delays are the caller's: ``SpikingNetwork`` applies them)."""
        preds = self.predecessors(name)
        total = values[preds[0]]
        for p in preds[1:]:
            total = total + values[p]
        return total

    def delay(self, source: str, target: str) -> int:
        """1 when edge source -> target carries the previous step's output, else 0."""
        return self.delays.get((source, target), 0)

    def delayed_sources(self) -> list[str]:
        """Nodes whose previous output some edge reads (state ``prev.<node>``), in node order."""
        sources = {a for a, _ in self.delays}
        return [n for n in [INPUT, *self.nodes] if n in sources]

    @property
    def recurrent(self) -> bool:
        """True when some group of nodes feeds itself (a cycle through a delay-1 edge)."""
        return any(self.cyclic(g) for g in self.groups)

    def cyclic(self, group: list[str]) -> bool:
        """True when ``group`` is a cycle (or a node feeding itself): it must run step by step."""
        return len(group) > 1 or (group[0], group[0]) in set(self.edges)

    def _successors(self, name: str, delayed: bool = True) -> list[str]:
        return [b for a, b in self.edges if a == name and (delayed or not self.delay(a, b))]

    def _closing_edges(self) -> list[Edge]:
        """Delay-0 edges that close a cycle of delay-0 edges (depth-first from the input)."""
        closing: list[Edge] = []
        state: dict[str, int] = {}  # 1: on the walk's stack, 2: done

        def visit(start: str) -> None:
            stack = [(start, iter(self._successors(start, delayed=False)))]
            state[start] = 1
            while stack:
                node, succ = stack[-1]
                nxt = next(succ, None)
                if nxt is None:
                    state[node] = 2
                    stack.pop()
                elif state.get(nxt) == 1:
                    closing.append((node, nxt))
                elif nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, iter(self._successors(nxt, delayed=False))))

        for start in [INPUT, *self.nodes]:
            if start not in state:
                visit(start)
        return [self._onto_state_output(edge) for edge in closing]

    def _onto_state_output(self, edge: Edge) -> Edge:
        """The edge to delay instead of ``edge``: walked back through stateless nodes with a
        single delay-0 input, so the delay carries a neuron's (or delay node's) previous output
        and the stateless nodes after it see it anew (a recurrent Affine adds its bias at t=0)."""
        a, b = edge
        seen = {a}
        while a != INPUT and not isinstance(self.nodes[a], Neuron | Delay):
            preds = [p for p in self.predecessors(a) if not self.delay(p, a)]
            if len(preds) != 1 or preds[0] in seen:
                break
            a, b = preds[0], a
            seen.add(a)
        return (a, b)

    def _groups(self) -> list[list[str]]:
        """Strongly connected components over all edges, in an order that evaluates every
        group after the groups it reads; nodes inside a group in topological order."""
        index = {n: i for i, n in enumerate(self.nodes)}
        component = _strongly_connected(list(self.nodes), self._successors)
        members: dict[int, list[str]] = {}
        for n in self.nodes:
            members.setdefault(component[n], []).append(n)
        needs = {c: set() for c in members}
        for a, b in self.edges:
            if a in component and b in component and component[a] != component[b]:
                needs[component[b]].add(component[a])
        order: list[list[str]] = []
        done: set[int] = set()
        while len(done) < len(members):
            ready = [c for c in members if c not in done and needs[c] <= done]
            first = min(ready, key=lambda c: index[members[c][0]])
            done.add(first)
            order.append(members[first])
        return order

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the graph's output."""
        return self.shapes[OUTPUT]

    def neurons(self) -> dict[str, Neuron]:
        """The neuron nodes, in topological order."""
        return {n: layer for n, layer in self.nodes.items() if isinstance(layer, Neuron)}

    # ---- config ------------------------------------------------------------------------------

    def to_config(self) -> dict[str, Any]:
        """JSON-able structure; tensors go to ``state_tensors``. A delayed edge is [a, b, 1]."""
        return {
            "architecture": "spiking_graph",
            "input_shape": list(self.input_shape),
            "nodes": [
                {"name": n, "type": type(layer).__name__, **plain_fields(layer)}
                for n, layer in self.nodes.items()
            ],
            "edges": [[a, b, 1] if self.delay(a, b) else [a, b] for a, b in self.edges],
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
            params = {
                k[len(prefix) :]: v
                for k, v in tensors.items()
                if k.startswith(prefix) and "." not in k[len(prefix) :]
            }
            nodes[name] = LAYER_TYPES[type_name](**params, **spec)
        edges = [(e[0], e[1]) for e in config["edges"]]
        delays = {(e[0], e[1]): int(e[2]) for e in config["edges"] if len(e) > 2}
        return cls(
            nodes=nodes, edges=edges, input_shape=tuple(config["input_shape"]), delays=delays
        )


def _strongly_connected(nodes: list[str], successors: Callable[[str], list[str]]) -> dict[str, int]:
    """Tarjan's algorithm, iterative: node -> component id."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    component: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    members = set(nodes)
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter([s for s in successors(root) if s in members]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, succ = work[-1]
            nxt = next(succ, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter([s for s in successors(nxt) if s in members])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                cid = len(set(component.values()))
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component[member] = cid
                    if member == node:
                        break
    return component

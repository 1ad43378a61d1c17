"""The structural rules of a spiking graph, without torch: the order nodes are evaluated in and
how per-sample shapes flow along the edges.

``SpikingGraph`` applies them to its layers; ``inspect`` applies them to a bundle's files
(``runtime/kinds/spiking_rows.py``) without rebuilding the program, so both read a graph alike.
"""

from __future__ import annotations

from collections.abc import Callable

from ganglion.models.errors import ShapeError

INPUT, OUTPUT = "input", "output"  # reserved names of the graph's single input and output
Edge = tuple[str, str]
Shape = tuple[int, ...]


def predecessors(name: str, edges: list[Edge]) -> list[str]:
    """Nodes with an edge into ``name``, in edge order."""
    return [a for a, b in edges if b == name]


def topological_order(nodes: list[str], edges: list[Edge], delayed: set[Edge]) -> list[str]:
    """Kahn's order over the edges not in ``delayed``, ties broken by ``nodes``' order; a node
    on a cycle of such edges never becomes ready and is left out."""
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
    return order


def propagate_shapes(
    order: list[str],
    edges: list[Edge],
    input_shape: Shape,
    out_shape: Callable[[str, Shape], Shape],
) -> dict[str, Shape]:
    """Per-sample shapes of ``INPUT``, every node in ``order`` and ``OUTPUT``: a node's output
    is ``out_shape(node, input shape)``, its input shape that of its first predecessor whose
    shape is known (nodes on a cycle wait for one); every input of a node must agree.
    ``ShapeError`` for a node without input, inputs that disagree, or unreachable nodes."""
    preds = {name: predecessors(name, edges) for name in [*order, OUTPUT]}
    shapes: dict[str, Shape] = {INPUT: input_shape}
    pending = [*order, OUTPUT]
    while pending:
        progress = False
        for name in list(pending):
            if not preds[name]:
                raise ShapeError(f"node {name!r} has no input")
            known = {shapes[p] for p in preds[name] if p in shapes}
            if not known:
                continue
            if len(known) != 1:
                raise ShapeError(f"inputs of {name!r} disagree in shape: {sorted(known)}")
            in_shape = known.pop()
            shapes[name] = in_shape if name == OUTPUT else out_shape(name, in_shape)
            pending.remove(name)
            progress = True
        if not progress:
            raise ShapeError(f"nodes {sorted(pending)} are not reachable from the input")
    for name in [*order, OUTPUT]:
        ins = {shapes[p] for p in preds[name]}
        if len(ins) != 1:
            raise ShapeError(f"inputs of {name!r} disagree in shape: {sorted(ins)}")
    return shapes

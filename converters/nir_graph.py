"""Translate between our SpikingGraph and NIR (the Neuromorphic Intermediate Representation).

NIR is continuous-time and carries no dt; ``NirSemantics`` (``nir_semantics``) says how to
discretize and which simulation conventions to follow; ``nir_nodes`` converts node by node.
Graph-level rules:
- Nested NIRGraph nodes are inlined; their nodes are named ``<subgraph>.<node>``.
- A recurrent edge carries the previous step's output (``SpikingGraph``'s delay-1 edges), and
  with ``synaptic_delay`` every edge leaving a weighted node (Affine, Linear, Conv) does too.
- Export writes the edge delays to the graph's ``metadata`` ("ganglion_delays", JSON), so our
  graph -> NIR -> our graph keeps them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch

from ganglion.converters.nir_nodes import (
    NEURON_TYPES,
    layer_from_nir,
    layer_to_nir,
    metadata,
    neuron_from_nir,
    neuron_to_nir,
)
from ganglion.converters.nir_semantics import NirSemantics, semantics_for
from ganglion.models.errors import NIRError, file_problem
from ganglion.models.manifest import DEFAULT_DT
from ganglion.models.spiking.graph import INPUT, OUTPUT, Edge, SpikingGraph
from ganglion.models.spiking.layers import SYNAPTIC, tensor_fields
from ganglion.models.spiking.neuron import Neuron

DELAYS_KEY = "ganglion_delays"
TIME_KEY = "ganglion_time"  # graph metadata: how the program runs over time (JSON)
MAX_TIME_NOTE = 4096  # characters of that JSON
MAX_NODE_ELEMENTS = 1 << 22  # per sample, any node's values (a 2048x2048 map); bounds memory


# ---- ours -> NIR -----------------------------------------------------------------------------


def to_nir(
    graph: SpikingGraph,
    dt: float = DEFAULT_DT,
    dt_leaky: float | None = None,
    time: dict[str, Any] | None = None,
) -> nir.NIRGraph:
    """Our graph as an NIRGraph (per-neuron parameter arrays, explicit Input/Output types);
    ``time`` (the program's timesteps, encoding, decoding...) goes into the graph's metadata
    as ``ganglion_time`` (JSON), for a peer that must know how many steps to run and how."""
    nodes: dict[str, nir.NIRNode] = {
        INPUT: nir.Input(input_type={"input": np.array(graph.input_shape)}),
        OUTPUT: nir.Output(output_type={"output": np.array(graph.output_shape)}),
    }
    for name, layer in graph.nodes.items():
        if isinstance(layer, Neuron):
            nodes[name] = neuron_to_nir(name, layer, dt, dt_leaky or dt)
        else:
            in_shape = graph.shapes[graph.predecessors(name)[0]]
            nodes[name] = layer_to_nir(name, layer, in_shape, dt)
    meta = {DELAYS_KEY: json.dumps(sorted(graph.delays))} if graph.delays else {}
    if time:
        meta[TIME_KEY] = json.dumps(time, sort_keys=True)
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges), metadata=meta)


def write_nir(
    graph: SpikingGraph,
    path: str | Path,
    dt: float = DEFAULT_DT,
    dt_leaky: float | None = None,
    time: dict[str, Any] | None = None,
) -> None:
    """Write our graph to an NIR HDF5 file (``time``: as ``to_nir``)."""
    nir.write(str(path), to_nir(graph, dt, dt_leaky, time))


# ---- NIR -> ours -----------------------------------------------------------------------------


def _inline(graph: nir.NIRGraph, prefix: str = "") -> tuple[dict[str, Any], list[Edge]]:
    """Nodes and edges of ``graph`` with nested graphs inlined as ``<sub>.<node>`` (their
    Input/Output nodes stay, as pass-through placeholders)."""
    nodes: dict[str, Any] = {}
    edges: list[Edge] = []
    ports: dict[str, tuple[str, str]] = {}  # subgraph -> (its input, its output) node names
    for name, node in graph.nodes.items():
        full = f"{prefix}{name}"
        if isinstance(node, nir.NIRGraph):
            inner_nodes, inner_edges = _inline(node, f"{full}.")
            ins = [n for n, v in node.nodes.items() if isinstance(v, nir.Input)]
            outs = [n for n, v in node.nodes.items() if isinstance(v, nir.Output)]
            if len(ins) != 1 or len(outs) != 1:
                raise NIRError(f"nested graph {full!r} needs one Input and one Output node")
            ports[full] = (f"{full}.{ins[0]}", f"{full}.{outs[0]}")
            nodes.update(inner_nodes)
            edges += inner_edges
        else:
            nodes[full] = node
    for a, b in graph.edges:
        a, b = f"{prefix}{a}", f"{prefix}{b}"
        edges.append((ports[a][1] if a in ports else a, ports[b][0] if b in ports else b))
    return nodes, edges


def _drop_placeholders(nodes: dict[str, Any], edges: list[Edge], keep: set[str]) -> list[Edge]:
    """Edges with every Input/Output placeholder (except ``keep``) bridged over."""
    for name in [n for n, v in nodes.items() if isinstance(v, nir.Input | nir.Output)]:
        if name in keep:
            continue
        preds = [a for a, b in edges if b == name]
        bridged: list[Edge] = []
        for a, b in edges:
            if a == name:
                bridged += [(p, b) for p in preds]
            elif b != name:
                bridged.append((a, b))
        edges = bridged
        del nodes[name]
    return edges


def _param_shape(node: Any) -> tuple[int, ...] | None:
    """A neuron's per-sample shape from its parameter arrays or declared input type."""
    names = ("tau", "tau_mem", "tau_syn", "r", "v_threshold", "v_leak", "v_reset", "w_in")
    shapes = [np.shape(getattr(node, n)) for n in names if getattr(node, n, None) is not None]
    shape = np.broadcast_shapes(*shapes) if shapes else ()
    if shape:
        return tuple(int(d) for d in shape)
    declared = (getattr(node, "input_type", None) or {}).get("input")
    if declared is not None and np.size(declared):
        return tuple(int(d) for d in np.atleast_1d(declared))
    return None


def _input_shape(node: nir.Input, consumers: list[Any]) -> tuple[int, ...]:
    """The per-sample input shape. Norse 1.1.0 and Sinabs 3.1 declare the Input with a leading
    batch or time axis ([1, 8], [40, 8]); where an Affine/Linear reads the input, its weight's
    input width settles it and the extra leading axes are dropped."""
    declared = tuple(int(d) for d in np.atleast_1d(node.input_type["input"]))
    widths = {np.shape(c.weight)[1] for c in consumers if isinstance(c, nir.Affine | nir.Linear)}
    if len(widths) == 1 and len(declared) > 1 and declared[-1] == next(iter(widths)):
        return declared[-1:]
    return declared


def _bounded(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` when a node's per-sample values are at most ``MAX_NODE_ELEMENTS``, else
    NIRError naming the node (checked before anything of that size is allocated); every
    size must be at least 1."""
    if any(d < 1 for d in shape):
        raise NIRError(f"node {name!r} has shape {list(shape)}; every size must be at least 1")
    elements = math.prod(shape)
    if elements > MAX_NODE_ELEMENTS:
        raise NIRError(
            f"node {name!r} holds {elements} values per sample ({list(shape)}); the limit is "
            f"{MAX_NODE_ELEMENTS}"
        )
    return shape


def _build_nodes(
    flat: dict[str, Any], edges: list[Edge], input_shape: tuple[int, ...], sem: NirSemantics
) -> dict[str, Any]:
    """Our nodes; a neuron whose parameters are scalars takes its shape from its input."""
    built: dict[str, Any] = {}
    for name, node in flat.items():
        if name in (INPUT, OUTPUT):
            raise NIRError(f"a hidden node may not be called {name!r}")
        if isinstance(node, NEURON_TYPES):
            shape = _param_shape(node)
            if shape is not None:
                built[name] = neuron_from_nir(name, node, shape, sem)
        else:
            built[name] = layer_from_nir(name, node, sem)
    shapes: dict[str, tuple[int, ...]] = {INPUT: _bounded(INPUT, input_shape)}
    while len(shapes) < len(flat) + 1:
        progress = False
        for name in flat:
            known = [shapes[a] for a, b in edges if b == name and a in shapes]
            if name in shapes or not known:
                continue
            if name not in built:
                built[name] = neuron_from_nir(name, flat[name], known[0], sem)
            shapes[name] = _bounded(name, built[name].out_shape(known[0]))
            progress = True
        if not progress:
            missing = sorted(set(flat) - set(shapes))
            raise NIRError(f"nodes {missing} are not reachable from the input")
    return {n: built[n] for n in flat}


def _delays(
    graph: nir.NIRGraph, nodes: dict[str, Any], edges: list[Edge], sem: NirSemantics
) -> dict:
    stored = metadata(graph).get(DELAYS_KEY)
    if stored is not None:
        return {(a, b): 1 for a, b in json.loads(stored)}
    if not sem.synaptic_delay:
        return {}
    return {(a, b): 1 for a, b in edges if isinstance(nodes.get(a), SYNAPTIC)}


def _check_decays(nodes: dict[str, Any], sem: NirSemantics) -> None:
    """NIRError naming the first neuron whose Euler decay leaves [0, 1] (dt larger than τ)."""
    for name, layer in nodes.items():
        if not isinstance(layer, Neuron) or layer.decay_mode != "euler":
            continue
        for what, decay in (("tau", layer.decay), ("tau_syn", layer.syn_decay)):
            if decay is not None and bool(((decay < 0) | (decay > 1)).any()):
                worst = float(decay.min() if bool((decay < 0).any()) else decay.max())
                raise NIRError(
                    f"node {name!r}: dt = {sem.leaky_dt():g} s is larger than its {what}, so "
                    f"the Euler decay 1 - dt/{what} = {worst:g} leaves [0, 1]; use --decay "
                    f"exact or a smaller --dt (--force-dt imports it anyway)"
                )


def from_nir(
    graph: nir.NIRGraph,
    dt: float | None = None,
    semantics: NirSemantics | None = None,
    force: bool = False,
) -> SpikingGraph:
    """An NIRGraph as our SpikingGraph under ``semantics`` (default: NIR's plain rules at
    ``dt``); with ``force`` an unstable Euler decay is kept rather than refused."""
    if dt is not None and not (isinstance(dt, int | float) and math.isfinite(dt) and dt > 0):
        raise NIRError(f"--dt must be a positive finite number of seconds, got {dt!r}")
    sem = semantics or semantics_for("nir")
    if dt is not None:
        sem = dataclasses.replace(sem, dt=float(dt))
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        # nir.read puts an Input "input_X" before a node X no edge enters, an Output
        # "output_X" after one no edge leaves: name such nodes, not the nodes it made up
        loose = [
            n
            for n, node in graph.nodes.items()
            if not isinstance(node, nir.Input | nir.Output)
            and (f"input_{n}" in inputs or f"output_{n}" in outputs)
        ]
        if loose:
            raise NIRError(
                f"node {loose[0]!r} has no edge into it or none out of it; the graph needs "
                "one Input and one Output node, every other node between them"
            )
        raise NIRError(f"the graph needs one Input and one Output node, has {inputs} and {outputs}")
    flat, edges = _inline(graph)
    edges = _drop_placeholders(flat, edges, keep={inputs[0], outputs[0]})
    rename = {inputs[0]: INPUT, outputs[0]: OUTPUT}
    edges = [(rename.get(a, a), rename.get(b, b)) for a, b in edges]
    consumers = [flat[b] for a, b in edges if a == INPUT and b != OUTPUT]  # skip: Input->Output
    input_shape = _input_shape(graph.nodes[inputs[0]], consumers)
    hidden = {n: v for n, v in flat.items() if n not in rename}
    nodes = _build_nodes(hidden, edges, input_shape, sem)
    for name, layer in nodes.items():
        for field, tensor in tensor_fields(layer).items():
            if not torch.isfinite(tensor).all():
                raise NIRError(f"node {name!r}: {field} holds NaN or infinity (at dt={sem.dt})")
    if not force:
        _check_decays(nodes, sem)
    return SpikingGraph(nodes, edges, input_shape, delays=_delays(graph, nodes, edges, sem))


MAX_GRAPH_DEPTH = 16  # nested graphs walked when naming a node type nir does not know


def _unknown_node_type(path: Path) -> tuple[str, str] | None:
    """The first node (its path in the graph) whose ``type`` this nir does not define, and
    that type; None when every node's type is known or the file is not laid out as NIR. Run
    only after ``check_hdf5`` has bounded the file."""
    import h5py

    known = {
        name
        for name in nir.ir.__all__
        if isinstance(getattr(nir.ir, name), type)
        and issubclass(getattr(nir.ir, name), nir.NIRNode)
    }

    def walk(group: Any, prefix: str, depth: int) -> tuple[str, str] | None:
        nodes = group.get("nodes")
        if depth > MAX_GRAPH_DEPTH or not isinstance(nodes, h5py.Group):
            return None
        for name, node in nodes.items():
            kind = node.get("type") if isinstance(node, h5py.Group) else None
            if not isinstance(kind, h5py.Dataset) or kind.shape != ():
                continue
            value = kind[()]
            value = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            if value not in known:
                return f"{prefix}{name}", value
            if value == "NIRGraph" and (found := walk(node, f"{prefix}{name}.", depth + 1)):
                return found
        return None

    try:
        with h5py.File(path, "r") as file:
            root = file.get("node")
            return walk(root, "", 0) if isinstance(root, h5py.Group) else None
    except (OSError, ValueError, TypeError):
        return None


def _read_checked(path: Path, type_check: bool) -> nir.NIRGraph:
    """``nir.read``; a file that reads only without nir's type check says so, and one with a
    node type this nir does not define names the node and the type."""
    try:
        return nir.read(str(path), type_check=type_check)
    except Exception as exc:  # h5py and nir raise OSError, KeyError, ValueError, ...
        unknown = _unknown_node_type(path)
        if unknown is not None:
            raise NIRError(
                f"{path}: node {unknown[0]!r} has type {unknown[1]!r}, which NIR "
                f"{nir.__version__} (the reader here) does not define"
            ) from exc
        detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}"
        if type_check:
            try:
                nir.read(str(path), type_check=False)
            except Exception:  # noqa: BLE001 - unreadable either way: report the first error
                pass
            else:
                raise NIRError(
                    f"{path}: fails NIR's type check ({detail}); --no-type-check reads it anyway"
                ) from exc
        raise NIRError(f"{path}: not a readable NIR (HDF5) file ({detail})") from exc


def read_nir(
    path: str | Path,
    dt: float | None = None,
    semantics: NirSemantics | None = None,
    type_check: bool = True,
    force: bool = False,
) -> SpikingGraph:
    """Read an NIR HDF5 file; any problem is an NIRError naming the file."""
    return read_nir_with_time(path, dt, semantics, type_check, force)[0]


def read_nir_with_time(
    path: str | Path,
    dt: float | None = None,
    semantics: NirSemantics | None = None,
    type_check: bool = True,
    force: bool = False,
) -> tuple[SpikingGraph, dict[str, Any] | None]:
    """``read_nir``, and the graph's ``ganglion_time`` metadata (how a Ganglion export runs
    over time: a JSON object, checked by the caller's ``SpikingTime``) or None without it."""
    from ganglion.converters.hdf5_guard import check_hdf5

    path = Path(path)
    if (problem := file_problem(path)) is not None:
        raise NIRError(f"{path}: {problem}")
    check_hdf5(path)  # no other file, plugin, loop or oversized dataset before nir reads it
    graph = _read_checked(path, type_check)
    try:
        return from_nir(graph, dt, semantics, force), _time_note(graph)
    except NIRError as exc:
        raise NIRError(f"{path}: {exc}") from exc
    except Exception as exc:
        raise NIRError(f"{path}: malformed NIR graph ({type(exc).__name__}: {exc})") from exc


def _time_note(graph: nir.NIRGraph) -> dict[str, Any] | None:
    """The ``ganglion_time`` metadata as a dict, None when absent; NIRError when it is not a
    JSON object (at most ``MAX_TIME_NOTE`` characters)."""
    stored = metadata(graph).get(TIME_KEY)
    if stored is None:
        return None
    if not isinstance(stored, str) or len(stored) > MAX_TIME_NOTE:
        raise NIRError(f"{TIME_KEY} must be a JSON object of at most {MAX_TIME_NOTE} characters")
    try:
        note = json.loads(stored)
    except ValueError as exc:
        raise NIRError(f"{TIME_KEY} is not valid JSON ({exc})") from exc
    if not isinstance(note, dict):
        raise NIRError(f"{TIME_KEY} must be a JSON object, got {type(note).__name__}")
    return note

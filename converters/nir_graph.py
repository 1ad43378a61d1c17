"""Translate between our SpikingGraph and NIR (the Neuromorphic Intermediate Representation).

Discretization (NIR is continuous-time and carries no dt; we use forward Euler at ``dt``):
  LIF  τ dv/dt = (v_leak − v) + R·I   →  v ← (1 − dt/τ)·v + (dt/τ)·v_leak + (dt·R/τ)·I
  IF   dv/dt = R·I                    →  v ← v + dt·R·I
spike when v > v_threshold (strict), then v ← v_reset. snnTorch writes Leaky(β) as
τ = dt/(1−β), R = τ/dt, which gives back v ← β·v + I at dt = 1e-4.

Our converted networks reset by subtraction and start at v_init; NIR has neither, so both
travel in the node's ``metadata`` ("reset", "v_init"), which other tools ignore.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch

from ganglion.models.errors import NIRError
from ganglion.models.manifest import DEFAULT_DT
from ganglion.models.spiking.graph import INPUT, OUTPUT, SpikingGraph
from ganglion.models.spiking.layers import (
    Affine,
    AvgPool2d,
    Conv2d,
    Flatten,
    Neuron,
    Scale,
    SumPool2d,
    tensor_fields,
)

IMPORTABLE = "Input, Output, Affine, Linear, Conv2d, Flatten, Scale, AvgPool2d, SumPool2d, IF, LIF"
_UNIT_GAIN_TOLERANCE = 1e-5  # exporters compute R = τ/dt in float32


def _f32(a: Any) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64).astype(np.float32))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _neuron_to_nir(n: Neuron, dt: float) -> nir.NIRNode:
    meta = {"reset": n.reset, "v_init": _np(n.v_init)}
    decay = n.decay.double().numpy()
    gain, bias = n.gain.double().numpy(), n.bias.double().numpy()
    if np.all(decay == 1.0):
        if np.any(bias != 0.0):
            raise NIRError("an IF neuron with a bias cannot be written to NIR (IF has no v_leak)")
        return nir.IF(
            r=gain / dt, v_threshold=_np(n.threshold), v_reset=_np(n.v_reset), metadata=meta
        )
    if np.any(decay >= 1.0):
        raise NIRError("a neuron mixes leaky and non-leaky elements; NIR cannot express it")
    tau = dt / (1.0 - decay)
    return nir.LIF(
        tau=tau,
        r=gain / (1.0 - decay),
        v_leak=bias / (1.0 - decay),
        v_threshold=_np(n.threshold),
        v_reset=_np(n.v_reset),
        metadata=meta,
    )


def to_nir(graph: SpikingGraph, dt: float = DEFAULT_DT) -> nir.NIRGraph:
    """Our graph as an NIRGraph (per-neuron parameter arrays, explicit Input/Output types)."""
    nodes: dict[str, nir.NIRNode] = {
        INPUT: nir.Input(input_type={"input": np.array(graph.input_shape)}),
        OUTPUT: nir.Output(output_type={"output": np.array(graph.output_shape)}),
    }
    for name, layer in graph.nodes.items():
        in_shape = graph.shapes[graph.predecessors(name)[0]]
        if isinstance(layer, Neuron):
            nodes[name] = _neuron_to_nir(layer, dt)
        elif isinstance(layer, Affine):
            nodes[name] = nir.Affine(weight=_np(layer.weight), bias=_np(layer.bias))
        elif isinstance(layer, Conv2d):
            nodes[name] = nir.Conv2d(
                input_shape=tuple(in_shape[1:]),
                weight=_np(layer.weight),
                bias=_np(layer.bias),
                stride=layer.stride,
                padding=layer.padding,
                dilation=layer.dilation,
                groups=layer.groups,
            )
        elif isinstance(layer, SumPool2d | AvgPool2d):
            cls = nir.SumPool2d if isinstance(layer, SumPool2d) else nir.AvgPool2d
            nodes[name] = cls(
                kernel_size=np.array(layer.kernel_size),
                stride=np.array(layer.stride),
                padding=np.array(layer.padding),
            )
        elif isinstance(layer, Flatten):
            nodes[name] = nir.Flatten(
                input_type={"input": np.array(in_shape)}, start_dim=0, end_dim=-1
            )
        elif isinstance(layer, Scale):
            nodes[name] = nir.Scale(scale=_np(layer.scale.expand(in_shape)))
        else:
            raise NIRError(f"node {name!r} of type {type(layer).__name__} has no NIR form")
    return nir.NIRGraph(nodes=nodes, edges=list(graph.edges))


def _neuron_from_nir(name: str, node: nir.NIRNode, dt: float) -> Neuron:
    threshold = np.asarray(node.v_threshold, dtype=np.float64)
    shape = threshold.shape
    meta = getattr(node, "metadata", None) or {}

    def full(value: Any) -> np.ndarray:
        arr = np.broadcast_to(np.asarray(value, dtype=np.float64), shape)
        return np.array(arr)

    if isinstance(node, nir.LIF):
        tau = full(node.tau)
        if np.any(tau <= 0):
            raise NIRError(f"LIF node {name!r} has a non-positive tau")
        decay, gain, bias = 1.0 - dt / tau, dt * full(node.r) / tau, dt * full(node.v_leak) / tau
        model = "lif"
    else:
        decay, gain, bias = np.ones(shape), dt * full(node.r), np.zeros(shape)
        model = "if"
    gain = np.where(np.abs(gain - 1.0) < _UNIT_GAIN_TOLERANCE, 1.0, gain)
    v_reset = full(node.v_reset)
    v_init = full(meta["v_init"]) if "v_init" in meta else np.zeros(shape)
    reset = str(meta.get("reset", "zero"))
    if isinstance(meta.get("reset"), bytes):
        reset = meta["reset"].decode()
    return Neuron(
        decay=_f32(decay),
        gain=_f32(gain),
        bias=_f32(bias),
        threshold=_f32(threshold),
        v_reset=_f32(v_reset),
        v_init=_f32(v_init),
        reset=reset,
        model=model,
    )


def _flatten_from_nir(name: str, node: nir.Flatten) -> Flatten:
    in_type = node.input_type.get("input") if node.input_type else None
    out_type = node.output_type.get("output") if node.output_type else None
    if in_type is not None and out_type is not None and len(np.atleast_1d(out_type)) != 1:
        raise NIRError(f"Flatten node {name!r} keeps {len(out_type)} axes; only a full flatten")
    return Flatten()


def _layer_from_nir(name: str, node: nir.NIRNode, dt: float) -> Any:  # noqa: C901 - one per type
    if isinstance(node, nir.IF | nir.LIF):
        return _neuron_from_nir(name, node, dt)
    if isinstance(node, nir.Affine):
        return Affine(_f32(node.weight), _f32(node.bias))
    if isinstance(node, nir.Linear):
        return Affine(_f32(node.weight), torch.zeros(np.asarray(node.weight).shape[0]))
    if isinstance(node, nir.Conv2d):
        weight = _f32(node.weight)
        bias = node.bias if np.ndim(node.bias) else np.zeros(weight.shape[0])
        padding = node.padding
        if isinstance(padding, str):
            raise NIRError(f"Conv2d node {name!r} uses padding={padding!r}; give explicit padding")
        return Conv2d(
            weight,
            _f32(bias),
            tuple(int(s) for s in np.broadcast_to(node.stride, 2)),
            tuple(int(p) for p in np.broadcast_to(padding, 2)),
            tuple(int(d) for d in np.broadcast_to(node.dilation, 2)),
            int(node.groups),
        )
    if isinstance(node, nir.AvgPool2d | nir.SumPool2d):
        cls = SumPool2d if isinstance(node, nir.SumPool2d) else AvgPool2d
        pair = lambda v: tuple(int(x) for x in np.broadcast_to(np.asarray(v), 2))  # noqa: E731
        return cls(pair(node.kernel_size), pair(node.stride), pair(node.padding))
    if isinstance(node, nir.Flatten):
        return _flatten_from_nir(name, node)
    if isinstance(node, nir.Scale):
        return Scale(_f32(node.scale))
    raise NIRError(
        f"node {name!r} of type {type(node).__name__} is not supported; supported: {IMPORTABLE}"
    )


def from_nir(graph: nir.NIRGraph, dt: float = DEFAULT_DT) -> SpikingGraph:
    """An NIRGraph as our SpikingGraph, discretized at ``dt`` (see module docstring)."""
    if not (isinstance(dt, int | float) and math.isfinite(dt) and dt > 0):
        raise NIRError(f"--dt must be a positive finite number of seconds, got {dt!r}")
    inputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NIRError(f"the graph needs one Input and one Output node, has {inputs} and {outputs}")
    rename = {inputs[0]: INPUT, outputs[0]: OUTPUT}
    nodes = {}
    for name, node in graph.nodes.items():
        if name in rename:
            continue
        if isinstance(node, nir.NIRGraph):
            raise NIRError(f"node {name!r} is a nested (e.g. recurrent) subgraph: not supported")
        if name in (INPUT, OUTPUT):
            raise NIRError(f"a hidden node may not be called {name!r}")
        nodes[name] = _layer_from_nir(name, node, dt)
        for field, tensor in tensor_fields(nodes[name]).items():
            if not torch.isfinite(tensor).all():
                raise NIRError(f"node {name!r}: {field} holds NaN or infinity (at dt={dt})")
    in_type = graph.nodes[inputs[0]].input_type["input"]
    edges = [(rename.get(a, a), rename.get(b, b)) for a, b in graph.edges]
    return SpikingGraph(nodes, edges, tuple(int(d) for d in np.atleast_1d(in_type)))


def read_nir(path: str | Path, dt: float = DEFAULT_DT) -> SpikingGraph:
    """Read an NIR HDF5 file; any problem is an NIRError naming the file."""
    from ganglion.converters.hdf5_guard import check_hdf5

    path = Path(path)
    if not path.is_file():
        raise NIRError(f"{path}: no such file")
    check_hdf5(path)  # no other file, plugin, loop or oversized dataset before nir reads it
    try:
        graph = nir.read(str(path))
    except NIRError:
        raise
    except Exception as exc:  # h5py and nir raise OSError, KeyError, ValueError, ...
        raise NIRError(
            f"{path}: not a readable NIR (HDF5) file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})"
        ) from exc
    try:
        return from_nir(graph, dt)
    except NIRError as exc:
        raise NIRError(f"{path}: {exc}") from exc
    except Exception as exc:
        raise NIRError(f"{path}: malformed NIR graph ({type(exc).__name__}: {exc})") from exc


def write_nir(graph: SpikingGraph, path: str | Path, dt: float = DEFAULT_DT) -> None:
    """Write our graph to an NIR HDF5 file."""
    nir.write(str(path), to_nir(graph, dt))

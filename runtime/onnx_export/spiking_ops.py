"""ONNX ops of one spiking-graph node for one timestep (or, stateless, for many rows at once),
in the reference's order of operations (``models/spiking/neuron.py``, ``layers.py``), so ONNX
Runtime reproduces torch's floats.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto

from ganglion.models.errors import ShapeError
from ganglion.models.spiking.layers import (
    Affine,
    AvgPool2d,
    Conv1d,
    Conv2d,
    Delay,
    Flatten,
    Scale,
    SumPool2d,
    Threshold,
    tensor_fields,
)
from ganglion.models.spiking.network import CURRENT, DELAY_BUFFER, MEMBRANE, state_name
from ganglion.models.spiking.neuron import Neuron
from ganglion.runtime.onnx_export.builder import GraphBuilder

FLOAT = TensorProto.FLOAT


class Params:
    """A node's tensors as initializers, each added on first use (no unused initializers)."""

    def __init__(self, b: GraphBuilder, node: str, layer: Any) -> None:
        self._b, self._node = b, node
        self._tensors = tensor_fields(layer)
        self._names: dict[str, str] = {}

    def __getitem__(self, field: str) -> str:
        if field not in self._names:
            array = self._tensors[field].detach().cpu().float().numpy()
            self._names[field] = self._b.const(f"{self._node}.{field}", array)
        return self._names[field]


def i64(values: list[int]) -> np.ndarray:
    """An int64 array (shapes, axes, indices)."""
    return np.asarray(values, dtype=np.int64)


def stateless(b: GraphBuilder, layer: Any, x: str, p: Params, out_shape: tuple) -> str:
    """One stateless layer on x [N, ...] (N = batch, or time·batch in the sequence graph)."""
    if isinstance(layer, Affine):
        return b.op("Gemm", [x, p["weight"], p["bias"]], transB=1)
    if isinstance(layer, Conv1d | Conv2d):
        rank = layer.weight.ndim - 2
        pad = [layer.padding] if rank == 1 else list(layer.padding)
        return b.op(
            "Conv",
            [x, p["weight"], p["bias"]],
            strides=[layer.stride] if rank == 1 else list(layer.stride),
            pads=pad + pad,
            dilations=[layer.dilation] if rank == 1 else list(layer.dilation),
            group=layer.groups,
        )
    if isinstance(layer, AvgPool2d):  # SumPool2d too: the reference computes mean · area
        pads = [*layer.padding, *layer.padding]
        y = b.op(
            "AveragePool",
            [x],
            kernel_shape=list(layer.kernel_size),
            strides=list(layer.stride),
            pads=pads,
            count_include_pad=1,
        )
        if isinstance(layer, SumPool2d):
            area = layer.kernel_size[0] * layer.kernel_size[1]
            y = b.op("Mul", [y, b.const("area", np.array(area, dtype=np.float32))])
        return y
    if isinstance(layer, Flatten):
        if layer.full:
            return b.op("Flatten", [x], axis=1)
        return b.op("Reshape", [x, b.const("flat_shape", i64([0, *out_shape]))])
    if isinstance(layer, Scale):
        return b.op("Mul", [x, p["scale"]])
    if isinstance(layer, Threshold):
        return b.op("Cast", [b.op("Greater", [x, p["threshold"]])], to=FLOAT)
    raise ShapeError(f"no ONNX form for layer type {type(layer).__name__}")


def _count(b: GraphBuilder, n: Neuron, p: Params, v: str) -> str:
    """Spikes of membrane v: 0/1, or trunc(v / θ) where it fires ("many")."""
    fired = b.op("Greater" if n.fire == "gt" else "GreaterOrEqual", [v, p["threshold"]])
    if n.spikes == "one":
        return b.op("Cast", [fired], to=FLOAT)
    q = b.op("Div", [v, p["threshold"]])
    trunc = b.op("Mul", [b.op("Sign", [q]), b.op("Floor", [b.op("Abs", [q])])])
    return b.op("Where", [fired, trunc, b.const("zero", np.array(0.0, dtype=np.float32))])


def _reset_to(b: GraphBuilder, p: Params, s: str, v: str) -> str:
    zero = b.const("zero", np.array(0.0, dtype=np.float32))
    return b.op("Where", [b.op("Greater", [s, zero]), p["v_reset"], v])


def neuron_step(
    b: GraphBuilder, n: Neuron, p: Params, x: str, v: str, i: str | None
) -> tuple[str, str, str | None]:
    """x, v (and i) [B, *shape] -> (output, v', i'): ``neuron.neuron_step`` in ONNX."""
    if n.synaptic:
        i = b.op("Add", [b.op("Mul", [p["syn_decay"], i]), b.op("Mul", [p["syn_gain"], x])])
        x = i
    delayed = _count(b, n, p, v) if n.reset_delay and n.spiking else None
    if delayed is not None and n.reset == "zero":
        v = _reset_to(b, p, delayed, v)
    current = b.op("Mul", [x, p["gain"]])
    v = b.op("Add", [b.op("Add", [b.op("Mul", [p["decay"], v]), p["bias"]]), current])
    if not n.spiking:
        v = _bounded(b, n, p, v)
        return v, v, i
    if delayed is not None and n.reset == "subtract":
        v = b.op("Sub", [v, b.op("Mul", [delayed, p["threshold"]])])
    s = _count(b, n, p, v)
    if not n.reset_delay:
        if n.reset == "subtract":
            v = b.op("Sub", [v, b.op("Mul", [s, p["threshold"]])])
        else:
            v = _reset_to(b, p, s, v)
    return s, _bounded(b, n, p, v), i


def _bounded(b: GraphBuilder, n: Neuron, p: Params, v: str) -> str:
    if n.v_min is None:
        return v
    return b.op("Add", [b.op("Relu", [b.op("Sub", [v, p["v_min"]])]), p["v_min"]])


def delay_step(b: GraphBuilder, layer: Delay, p: Params, x: str, buffer: str) -> tuple[str, str]:
    """x [B, *shape], buffer [B, D, *shape] (newest first) -> (x delayed, new buffer)."""
    depth = layer.depth
    y = x
    for k in range(1, depth + 1):
        past = b.op("Gather", [buffer, b.const("k", i64([k - 1]))], axis=1)
        past = b.op("Squeeze", [past, b.const("axis", i64([1]))])
        is_k = b.op("Equal", [p["steps"], b.const("k", np.array(k, dtype=np.float32))])
        y = b.op("Where", [is_k, past, y])
    newest = b.op("Unsqueeze", [x, b.const("axis", i64([1]))])
    if depth == 1:
        return y, newest
    kept = b.op(
        "Slice",
        [
            buffer,
            b.const("start", i64([0])),
            b.const("end", i64([depth - 1])),
            b.const("ax", i64([1])),
        ],
    )
    return y, b.op("Concat", [newest, kept], axis=1)


def node_step(
    b: GraphBuilder, name: str, layer: Any, p: Params, x: str, state: dict[str, str],
    out_shape: tuple,
) -> str:  # fmt: skip
    """One node for one step; its state names in ``state`` are replaced by the new values."""
    if isinstance(layer, Neuron):
        v, i = state_name(MEMBRANE, name), state_name(CURRENT, name)
        out, state[v], current = neuron_step(b, layer, p, x, state[v], state.get(i))
        if current is not None:
            state[i] = current
        return out
    if isinstance(layer, Delay):
        if not layer.depth:
            return x
        d = state_name(DELAY_BUFFER, name)
        out, state[d] = delay_step(b, layer, p, x, state[d])
        return out
    return stateless(b, layer, x, p, out_shape)

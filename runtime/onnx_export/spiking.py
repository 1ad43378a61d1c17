"""ONNX graphs of spiking programs, and the host-side input encoding they expect.

Step graph: one timestep; each neuron's membrane is ``state_in.v.<neuron>`` ->
``state_out.v.<neuron>``, the counter ``state_in.t`` -> ``state_out.t`` (t + 1), and with a
declared decoding the running sum ``state_in.decode`` -> ``state_out.decode``; ``output`` is the
timestep's output, or the running decoded output (count, or sum / T for membrane), exactly
like ``SpikingNetwork.step``.

Sequence graph: ``SpikingNetwork.run``'s parallel form. Synaptic layers see all timesteps as
one batch [time·batch, ...]; each neuron is an ONNX ``Scan`` over time, and so is the decoding
sum. Scan rather than unrolling: the graph's size does not grow with T, ``time`` stays
dynamic (imported NIR programs take any T) and the sums run in the reference's order.

Encoding: ``rate`` draws spikes from a generator seeded per timestep, which ONNX cannot
reproduce, so both graphs take the *encoded* input and the host encodes it with the same
numpy encoder as the reference (``SpikingKind.onnx_feeds``): identical spikes everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from ganglion.models.deployable import Deployable
from ganglion.models.errors import ShapeError
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
from ganglion.runtime.onnx_export import naming
from ganglion.runtime.onnx_export.builder import GraphBuilder, make_model


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


def _i64(values: list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def _synapse(b: GraphBuilder, layer: Any, x: str, p: Params) -> str:
    """One stateless layer on x [N, ...] (N = batch, or time·batch in the sequence graph)."""
    if isinstance(layer, Affine):
        return b.op("Gemm", [x, p["weight"], p["bias"]], transB=1)
    if isinstance(layer, Conv2d):
        pads = [*layer.padding, *layer.padding]
        return b.op(
            "Conv",
            [x, p["weight"], p["bias"]],
            strides=list(layer.stride),
            pads=pads,
            dilations=list(layer.dilation),
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
        return b.op("Flatten", [x], axis=1)
    if isinstance(layer, Scale):
        return b.op("Mul", [x, p["scale"]])
    raise ShapeError(f"no ONNX form for layer type {type(layer).__name__}")


def _integrate(b: GraphBuilder, layer: Neuron, p: Params, v: str, current: str) -> tuple[str, str]:
    """v, gain·I -> (spikes, new v), in the reference's order of operations."""
    v = b.op("Add", [b.op("Add", [b.op("Mul", [p["decay"], v]), p["bias"]]), current])
    fired = b.op("Greater", [v, p["threshold"]])
    spikes = b.op("Cast", [fired], to=TensorProto.FLOAT)
    if layer.reset == "subtract":
        return spikes, b.op("Sub", [v, b.op("Mul", [spikes, p["threshold"]])])
    return spikes, b.op("Where", [fired, p["v_reset"], v])


class SpikingOnnx:
    """The ONNX face of one spiking Deployable."""

    def __init__(self, deployable: Deployable) -> None:
        self.graph: SpikingGraph = deployable.module.graph
        self.time = deployable.module.time
        self.state_names = [s.name for s in deployable.manifest.state]

    # ---- graphs -------------------------------------------------------------------------

    def _params(self, b: GraphBuilder) -> dict[str, Params]:
        return {node: Params(b, node, layer) for node, layer in self.graph.nodes.items()}

    def _gather(self, b: GraphBuilder, name: str, values: dict[str, str]) -> str:
        preds = self.graph.predecessors(name)
        total = values[preds[0]]
        for p in preds[1:]:
            total = b.op("Add", [total, values[p]])
        return total

    def step_graph(self, opset: int) -> onnx.ModelProto:
        """One timestep with explicit state (see module docstring)."""
        b = GraphBuilder("ganglion_spiking_step")
        batch = naming.BATCH_DIM
        values = {INPUT: b.input(naming.INPUT, "float32", [batch, *self.graph.input_shape])}
        t_in = b.input(naming.state_input("t"), "int64", [1])
        states: dict[str, tuple[str, list[Any]]] = {}
        for name, neuron in self.graph.neurons().items():
            shape = [batch, *neuron.shape]
            v_in = b.input(naming.state_input(f"v.{name}"), "float32", shape)
            states[f"v.{name}"] = (v_in, shape)
        params = self._params(b)
        out_state: dict[str, str] = {"t": b.op("Add", [t_in, b.const("one", _i64([1]))])}
        for name, layer in self.graph.nodes.items():
            x = self._gather(b, name, values)
            if isinstance(layer, Neuron):
                current = b.op("Mul", [x, params[name]["gain"]])
                v_in = states[f"v.{name}"][0]
                values[name], out_state[f"v.{name}"] = _integrate(
                    b, layer, params[name], v_in, current
                )
            else:
                values[name] = _synapse(b, layer, x, params[name])
        out = self._gather(b, OUTPUT, values)
        out_shape = [batch, *self.graph.output_shape]
        if self.time.decoding != "none":
            d_in = b.input(naming.state_input("decode"), "float32", out_shape)
            out_state["decode"] = b.op("Add", [d_in, out])
            states["decode"] = (d_in, out_shape)
            out = self._scale_decoded(b, out_state["decode"])
        b.output(naming.OUTPUT, out, "float32", out_shape)
        b.output(naming.state_output("t"), out_state["t"], "int64", [1])
        for name in (n for n in self.state_names if n != "t"):
            b.output(naming.state_output(name), out_state[name], "float32", states[name][1])
        return make_model(b.graph(), opset, "Ganglion spiking step graph")

    def _scale_decoded(self, b: GraphBuilder, total: str) -> str:
        if self.time.decoding != "membrane":
            return b.op("Identity", [total])
        steps = b.const("timesteps", np.array(self.time.timesteps, dtype=np.float32))
        return b.op("Div", [total, steps])

    def sequence_graph(self, opset: int) -> onnx.ModelProto:
        """The whole encoded input [time, batch, ...] -> ``run``'s output, from v_init."""
        b = GraphBuilder("ganglion_spiking_sequence")
        x = b.input(
            naming.INPUT, "float32", [naming.TIME_DIM, naming.BATCH_DIM, *self.graph.input_shape]
        )
        time_batch = b.op("Shape", [x], start=0, end=2)  # [T, B]
        batch = b.op("Shape", [x], start=1, end=2)  # [B]
        params = self._params(b)
        minus_one = b.const("minus_one", _i64([-1]))
        values = {
            INPUT: b.op(
                "Reshape",
                [
                    x,
                    b.op(
                        "Concat",
                        [minus_one, b.const("in_shape", _i64(list(self.graph.input_shape)))],
                        axis=0,
                    ),
                ],
            )
        }
        for name, layer in self.graph.nodes.items():
            h = self._gather(b, name, values)
            if isinstance(layer, Neuron):
                shape = b.const(f"{name}.shape", _i64(list(layer.shape)))
                current = b.op("Reshape", [h, b.op("Concat", [time_batch, shape], axis=0)])
                current = b.op("Mul", [current, params[name]["gain"]])
                v_shape = b.op("Concat", [batch, shape], axis=0)
                v0 = b.op("Expand", [params[name]["v_init"], v_shape])
                body = _neuron_body(layer, params[name], len(layer.shape), name)
                _, spikes = b.ops("Scan", [v0, current], 2, body=body, num_scan_inputs=1)
                values[name] = b.op("Reshape", [spikes, b.op("Concat", [minus_one, shape], axis=0)])
            else:
                values[name] = _synapse(b, layer, h, params[name])
        out_shape = b.const("out_shape", _i64(list(self.graph.output_shape)))
        out = b.op(
            "Reshape",
            [self._gather(b, OUTPUT, values), b.op("Concat", [time_batch, out_shape], axis=0)],
        )
        dims: list[Any] = [naming.TIME_DIM, naming.BATCH_DIM, *self.graph.output_shape]
        if self.time.decoding != "none":
            zeros = b.op(
                "ConstantOfShape",
                [b.op("Concat", [batch, out_shape], axis=0)],
                value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
            )
            body = _sum_body(len(self.graph.output_shape))
            (total,) = b.ops("Scan", [zeros, out], 1, body=body, num_scan_inputs=1)
            out, dims = self._scale_decoded(b, total), dims[1:]
        b.output(naming.OUTPUT, out, "float32", dims)
        return make_model(b.graph(), opset, "Ganglion spiking sequence graph")


def _neuron_body(layer: Neuron, p: Params, rank: int, name: str) -> onnx.GraphProto:
    """Scan body: (v [B, *shape], gain·I_t [B, *shape]) -> (v', spikes_t)."""
    b = GraphBuilder(f"scan_{name}", prefix=f"scan_{name}.")
    dims = [naming.BATCH_DIM, *[f"d{i}" for i in range(rank)]]
    v = b.input(b.fresh("v"), "float32", dims)
    current = b.input(b.fresh("current"), "float32", dims)
    spikes, v_new = _integrate(b, layer, p, v, current)
    b.output(b.fresh("v_out"), v_new, "float32", dims)
    b.output(b.fresh("spikes"), spikes, "float32", dims)
    return b.graph()


def _sum_body(rank: int) -> onnx.GraphProto:
    """Scan body: (total, out_t) -> total + out_t (the reference's summation order)."""
    b = GraphBuilder("scan_decode", prefix="scan_decode.")
    dims = [naming.BATCH_DIM, *[f"d{i}" for i in range(rank)]]
    total = b.input(b.fresh("total"), "float32", dims)
    out_t = b.input(b.fresh("out_t"), "float32", dims)
    b.output(b.fresh("total_out"), b.op("Add", [total, out_t]), "float32", dims)
    return b.graph()

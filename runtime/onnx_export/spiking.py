"""ONNX graphs of spiking programs, and the host-side input encoding they expect.

Step graph: one timestep; every node state (``state_in.v.<neuron>``, ``i.<neuron>``,
``d.<delay>``, ``prev.<node>``; names in ``models/spiking/network.py``) -> ``state_out.*``,
the counter ``state_in.t`` -> ``state_out.t`` (t + 1), and with a declared decoding the running
sum ``state_in.decode`` -> ``state_out.decode``; ``output`` is the timestep's output, or the
running decoded output (count, or sum / T for membrane), exactly like ``SpikingNetwork.step``.

Sequence graph: ``SpikingNetwork.run``'s parallel form. Stateless layers see all timesteps as
one batch [time·batch, ...]; each stateful node (neuron, delay) is an ONNX ``Scan`` over time,
and so is each recurrent group (its nodes together in one Scan body) and the decoding sum. A
delay-1 edge outside a recurrent group is the source shifted one step in time. Scan rather than
unrolling: the graph's size does not grow with T, ``time`` stays dynamic (imported NIR
programs take any T) and the sums run in the reference's order.

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
from ganglion.models.spiking.graph import INPUT, OUTPUT, SpikingGraph
from ganglion.models.spiking.layers import STATELESS
from ganglion.models.spiking.network import PREVIOUS, node_state_names, state_name, state_shapes
from ganglion.runtime.onnx_export import naming
from ganglion.runtime.onnx_export.builder import GraphBuilder, make_model
from ganglion.runtime.onnx_export.spiking_ops import Params, i64, node_step


class SpikingOnnx:
    """The ONNX face of one spiking Deployable."""

    def __init__(self, deployable: Deployable) -> None:
        self.graph: SpikingGraph = deployable.module.graph
        self.time = deployable.module.time
        self.state_names = [s.name for s in deployable.manifest.state]
        self.state_shapes = state_shapes(self.graph)

    def _params(self, b: GraphBuilder) -> dict[str, Params]:
        return {node: Params(b, node, layer) for node, layer in self.graph.nodes.items()}

    def _sum(self, b: GraphBuilder, terms: list[str]) -> str:
        total = terms[0]
        for term in terms[1:]:
            total = b.op("Add", [total, term])
        return total

    # ---- step graph ----------------------------------------------------------------------

    def step_graph(self, opset: int) -> onnx.ModelProto:
        """One timestep with explicit state (see module docstring)."""
        b = GraphBuilder("ganglion_spiking_step")
        batch = naming.BATCH_DIM
        values = {INPUT: b.input(naming.INPUT, "float32", [batch, *self.graph.input_shape])}
        t_in = b.input(naming.state_input("t"), "int64", [1])
        state = {
            name: b.input(naming.state_input(name), "float32", [batch, *shape])
            for name, shape in self.state_shapes.items()
        }
        mark = state_name(PREVIOUS, "")
        prev = {n[len(mark) :]: v for n, v in state.items() if n.startswith(mark)}
        params = self._params(b)
        out_state = dict(state)
        for name, layer in self.graph.nodes.items():
            x = self._step_input(b, name, values, prev)
            values[name] = node_step(
                b, name, layer, params[name], x, out_state, self.graph.shapes[name]
            )
        for source in prev:
            out_state[state_name(PREVIOUS, source)] = values[source]
        out = self._step_input(b, OUTPUT, values, prev)
        out_shape = [batch, *self.graph.output_shape]
        out_state["t"] = b.op("Add", [t_in, b.const("one", i64([1]))])
        if self.time.decoding != "none":
            d_in = b.input(naming.state_input("decode"), "float32", out_shape)
            out_state["decode"] = b.op("Add", [d_in, out])
            out = self._scale_decoded(b, out_state["decode"])
        b.output(naming.OUTPUT, out, "float32", out_shape)
        b.output(naming.state_output("t"), out_state["t"], "int64", [1])
        for name in (n for n in self.state_names if n != "t"):
            shape = out_shape if name == "decode" else [batch, *self.state_shapes[name]]
            b.output(naming.state_output(name), out_state[name], "float32", shape)
        return make_model(b.graph(), opset, "Ganglion spiking step graph")

    def _step_input(
        self, b: GraphBuilder, name: str, values: dict[str, str], prev: dict[str, str]
    ) -> str:
        terms = [
            prev[p] if self.graph.delay(p, name) else values[p]
            for p in self.graph.predecessors(name)
        ]
        return self._sum(b, terms)

    def _scale_decoded(self, b: GraphBuilder, total: str) -> str:
        if self.time.decoding != "membrane":
            return b.op("Identity", [total])
        steps = b.const("timesteps", np.array(self.time.timesteps, dtype=np.float32))
        return b.op("Div", [total, steps])

    # ---- sequence graph ------------------------------------------------------------------

    def sequence_graph(self, opset: int) -> onnx.ModelProto:
        """The whole encoded input [time, batch, ...] -> ``run``'s output, from v_init."""
        return _Sequence(self, opset).model()


class _Sequence:
    """Builds one sequence graph: values are [time·batch, *shape] (``flat``) between nodes."""

    def __init__(self, face: SpikingOnnx, opset: int) -> None:
        self.face, self.graph, self.opset = face, face.graph, opset
        self.b = b = GraphBuilder("ganglion_spiking_sequence")
        dims = [naming.TIME_DIM, naming.BATCH_DIM, *self.graph.input_shape]
        self.x = b.input(naming.INPUT, "float32", dims)
        self.time_batch = b.op("Shape", [self.x], start=0, end=2)  # [T, B]
        self.batch = b.op("Shape", [self.x], start=1, end=2)  # [B]
        self.params = face._params(b)

    def _shape(self, name: str) -> tuple[int, ...]:
        return self.graph.input_shape if name == INPUT else self.graph.shapes[name]

    def _flat(self, seq: str, shape: tuple[int, ...]) -> str:
        """[T, B, *shape] -> [T·B, *shape]."""
        return self.b.op("Reshape", [seq, self.b.const("flat", i64([-1, *shape]))])

    def _timed(self, flat: str, shape: tuple[int, ...]) -> str:
        """[T·B, *shape] -> [T, B, *shape]."""
        dims = self.b.op(
            "Concat", [self.time_batch, self.b.const("shape", i64(list(shape)))], axis=0
        )
        return self.b.op("Reshape", [flat, dims])

    def _start(self, state: str) -> str:
        """A state's value at t = 0 [B, *shape]: v_init for membranes, zeros otherwise."""
        b, shape = self.b, self.face.state_shapes[state]
        dims = b.op("Concat", [self.batch, b.const("shape", i64(list(shape)))], axis=0)
        kind, node = state.split(".", 1)
        if kind == "v":
            return b.op("Expand", [self.params[node]["v_init"], dims])
        zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
        return b.op("ConstantOfShape", [dims], value=zero)

    def _shifted(self, flat: str, source: str) -> str:
        """A source's values one step later: step t reads step t − 1 (zeros at t = 0)."""
        b, shape = self.b, self._shape(source)
        seq = self._timed(flat, shape)
        start = self._start(state_name(PREVIOUS, source))
        first = b.op("Unsqueeze", [start, b.const("axis", i64([0]))])
        rest = b.op(
            "Slice",
            [seq, b.const("s", i64([0])), b.const("e", i64([-1])), b.const("a", i64([0]))],
        )
        return self._flat(b.op("Concat", [first, rest], axis=0), shape)

    def model(self) -> onnx.ModelProto:
        b = self.b
        values = {INPUT: self._flat(self.x, self.graph.input_shape)}
        for group in self.graph.groups:
            layer = self.graph.nodes[group[0]]
            if not self.graph.cyclic(group) and isinstance(layer, STATELESS):
                name = group[0]
                terms = [
                    self._shifted(values[p], p) if self.graph.delay(p, name) else values[p]
                    for p in self.graph.predecessors(name)
                ]
                values[name] = node_step(
                    b, name, layer, self.params[name], self.face._sum(b, terms), {},
                    self.graph.shapes[name],
                )  # fmt: skip
            else:
                values.update(self._scan(group, values))
        terms = [
            self._shifted(values[p], p) if self.graph.delay(p, OUTPUT) else values[p]
            for p in self.graph.predecessors(OUTPUT)
        ]
        out = self._timed(self.face._sum(b, terms), self.graph.output_shape)
        dims: list[Any] = [naming.TIME_DIM, naming.BATCH_DIM, *self.graph.output_shape]
        if self.face.time.decoding != "none":
            out_shape = b.const("out_shape", i64(list(self.graph.output_shape)))
            zeros = b.op(
                "ConstantOfShape",
                [b.op("Concat", [self.batch, out_shape], axis=0)],
                value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
            )
            body = _sum_body(len(self.graph.output_shape))
            (total,) = b.ops("Scan", [zeros, out], 1, body=body, num_scan_inputs=1)
            out, dims = self.face._scale_decoded(b, total), dims[1:]
        b.output(naming.OUTPUT, out, "float32", dims)
        return make_model(b.graph(), self.opset, "Ganglion spiking sequence graph")

    def _scan(self, group: list[str], values: dict[str, str]) -> dict[str, str]:
        """One Scan over time running ``group``'s nodes step by step; returns their flat values."""
        members = set(group)
        carried = [s for n in group for s in node_state_names(n, self.graph.nodes[n])]
        inner_prev = sorted({p for n in group for p in self.graph.predecessors(n)
                             if p in members and self.graph.delay(p, n)})  # fmt: skip
        carried += [state_name(PREVIOUS, p) for p in inner_prev]
        feeds: dict[tuple[str, int], str] = {}  # (outside source, delay) -> its [T, B, ...]
        for n in group:
            for p in self.graph.predecessors(n):
                d = self.graph.delay(p, n)
                if p not in members and (p, d) not in feeds:
                    flat = self._shifted(values[p], p) if d else values[p]
                    feeds[(p, d)] = self._timed(flat, self._shape(p))
        body = GraphBuilder(f"scan_{group[0]}", prefix=f"scan_{group[0]}.")
        state = {s: body.input(body.fresh("state"), "float32", self._dims(s)) for s in carried}
        step_in = {key: body.input(body.fresh("x"), "float32", self._dims(key[0], batch_only=True))
                   for key in feeds}  # fmt: skip
        prev = {p: state[state_name(PREVIOUS, p)] for p in inner_prev}
        now: dict[str, str] = {}
        for n in group:
            terms = []
            for p in self.graph.predecessors(n):
                d = self.graph.delay(p, n)
                terms.append(step_in[(p, d)] if p not in members else prev[p] if d else now[p])
            x = self.face._sum(body, terms)
            now[n] = node_step(
                body, n, self.graph.nodes[n], self.params[n], x, state, self.graph.shapes[n]
            )
        for p in inner_prev:
            state[state_name(PREVIOUS, p)] = now[p]
        for s in carried:
            body.output(body.fresh("state_out"), state[s], "float32", self._dims(s))
        for n in group:
            body.output(body.fresh("out"), now[n], "float32", self._dims(n, batch_only=True))
        outs = self.b.ops(
            "Scan",
            [self._start(s) for s in carried] + list(feeds.values()),
            len(carried) + len(group),
            body=body.graph(),
            num_scan_inputs=len(feeds),
        )
        seqs = outs[len(carried) :]
        return {
            n: self._flat(seq, self.graph.shapes[n]) for n, seq in zip(group, seqs, strict=True)
        }

    def _dims(self, name: str, batch_only: bool = False) -> list[Any]:
        """Dims of a state (``name``) or, with ``batch_only``, a node value."""
        shape = self._shape(name) if batch_only else self.face.state_shapes[name]
        return [naming.BATCH_DIM, *shape]


def _sum_body(rank: int) -> onnx.GraphProto:
    """Scan body: (total, out_t) -> total + out_t (the reference's summation order)."""
    b = GraphBuilder("scan_decode", prefix="scan_decode.")
    dims = [naming.BATCH_DIM, *[f"d{i}" for i in range(rank)]]
    total = b.input(b.fresh("total"), "float32", dims)
    out_t = b.input(b.fresh("out_t"), "float32", dims)
    b.output(b.fresh("total_out"), b.op("Add", [total, out_t]), "float32", dims)
    return b.graph()

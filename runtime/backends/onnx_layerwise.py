"""A spiking program's whole-sequence ``run`` on ONNX Runtime, layer by layer.

The sequence graph (``model.sequence.onnx``) runs each neuron layer as an ONNX ``Scan``: a
subgraph call per timestep, 0.3-0.8x torch's speed on the digits networks. Here that graph is
cut at its neurons: each stateless segment between two neurons (Gemm, Conv, pooling,
flattening: the bundle's own ops and initializers, cut with ``onnx.utils.Extractor``) becomes
a small ONNX Runtime session that runs all of a chunk's timestep-sample rows in one call, and
each neuron and the output decoding run through the compiled loops of the torch backend's CPU
fast path (``kernels.scan_loops``: ``float_scan_loop``, ``time_sum_loop``; ``scale_decoded``). A
neuron whose spikes only a 2x2 average pool of stride 2 reads pools them in its scan
(``float_scan_pool_loop``), and the next segment starts after the pool: the means of 0/1 spikes
are exact in any order, so they are the graph's bits, and the spikes are never stored. A
segment that is one 2-D convolution over the spikes of the neuron before it, feeding a pooling
neuron, runs in that neuron's pass (``kernels.conv.scan_pool.conv_scan_pool_loop``) where the
compiled loop gives the segment's bits (checked at build on probe rows, ``_lone_conv``): its
output is never stored either. The bundle format does not change.

It takes what ``models/spiking/cpu_fast_path.py`` takes, read from the sequence graph and
``config.json``, a little stricter: a chain (input -> node -> ... -> output, each node read by
the next one only, through a delay-0 edge: MLPs and CNNs as converted), every neuron plain (one
spike on v > threshold, immediate subtract or zero reset, no synaptic current, no lower bound;
its Scan body checked op by op), no rate encoding, no output delay, at least one neuron, and
the CPU execution provider alone. ``LayerwiseRun.build`` gives None for anything else, and the
caller keeps the sequence graph; ``run`` gives None while compiled kernels are turned off
(``GANGLION_KERNELS=0``).

Time goes in chunks (``CHUNK_BYTES``), membranes carried across; a direct input's first
segment runs once on the batch and is read at every step, as the torch path does.

Arithmetic: the neuron and decode loops are torch's, so spikes and sums match it wherever the
segments do. The segments are ONNX Runtime's kernels (MLAS), as in the Scan graph: the outputs
equal the sequence graph's bit for bit (tested; the session also checks it at load on a probe
input, and keeps the sequence graph where they differ: a bundle whose config.json, manifest and
graph disagree, or an ONNX Runtime that rounds a row differently with the rows per call), and
torch's within float rounding (on the digits networks ONNX Runtime's Conv and hidden Gemm gave
torch's bits, spikes were equal, and the read-out Gemm differed in the last bits: at most 6e-6
on the decoded output).

Nothing here imports torch: the loops and the kernel switch are torch-free modules (numba, a
dependency of Ganglion, compiles the loops).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ganglion.kernels.conv.scan_pool import conv_scan_pool_loop, fits
from ganglion.kernels.scan_loops import float_scan_loop, float_scan_pool_loop, time_sum_loop
from ganglion.kernels.switch import cpu_scan_available
from ganglion.models.manifest import SpikingTime
from ganglion.models.spiking.decoding import scale_decoded
from ganglion.runtime.program import Program

Arrays = dict[str, np.ndarray]

# rows (timestep·sample) per segment call: as many as keep the widest layer's values of a chunk
# within about 8 MiB (a pooling neuron's spikes and a fused convolution's output are never
# stored, so what a chunk holds is a few times less). Measured on the digits networks
# (2026-12-05, one thread, median of 15 calls) at 2 / 4 / 8 MiB: CNN T=32 batch 256 18.2 /
# 16.3 / 16.4 ms, T=128 batch 16 3.7 / 3.8-4.0 / 3.6-3.7 ms; MLP T=32 batch 256 2.10 / 2.00 /
# 1.93 ms. A segment's rows do not depend on the chunk (MLAS computes each row alone), so
# neither do the outputs
CHUNK_BYTES = 8 << 20
MIN_CHUNK_ROWS = 64
# the ops a stateless segment of the sequence graph may hold (``onnx_export.spiking_ops``)
SEGMENT_OPS = frozenset(
    {"Gemm", "Conv", "AveragePool", "Mul", "Flatten", "Reshape", "Greater", "Cast"}
)
# a plain neuron's Scan body (``onnx_export.spiking_ops.neuron_step``), per reset
PLAIN_BODIES = {
    "subtract": ("Mul", "Mul", "Add", "Add", "Greater", "Cast", "Mul", "Sub", "Identity",
                 "Identity"),
    "zero": ("Mul", "Mul", "Add", "Add", "Greater", "Cast", "Greater", "Where", "Identity",
             "Identity"),
}  # fmt: skip
# the AveragePool a neuron's scan takes over (2x2, stride 2, no padding), and ONNX's defaults
POOL_DEFAULTS = {"strides": [1, 1], "pads": [0, 0, 0, 0], "ceil_mode": 0, "dilations": [1, 1],
                 "auto_pad": b"NOTSET"}  # fmt: skip
SQUARE_POOL = {**POOL_DEFAULTS, "kernel_shape": [2, 2], "strides": [2, 2]}
NEURON_FIELDS = ("gain", "decay", "threshold", "bias", "v_reset")  # ``float_scan_loop``'s order
_PARAM_NAME = re.compile(r"^(?P<node>.+)\.(?P<field>[a-z_]+)_[0-9]+$")  # ``Params``' names


@dataclass(frozen=True)
class _Conv:
    """A segment that is one 2-D convolution the compiled loop computes with ONNX Runtime's
    bits (checked at build, ``_lone_conv``): its weights laid out for the loop."""

    flipped: np.ndarray = field(repr=False)  # ``kernels.conv.cpu.flip_weight``
    bias: np.ndarray = field(repr=False)  # [O]
    pads: tuple[int, int]
    in_shape: tuple[int, int, int]  # (C, H, W)
    out_hw: tuple[int, int]


@dataclass(frozen=True)
class _Segment:
    """Stateless layers between two neurons: an ONNX Runtime session (None: no layers)."""

    session: Any
    input_name: str
    output_name: str
    out_shape: tuple[int, ...]  # per sample
    conv: _Conv | None = None  # where the segment is one convolution the loop may compute

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """[rows, *in_shape] -> [rows, *out_shape]."""
        if self.session is None:
            return rows
        return self.session.run([self.output_name], {self.input_name: rows})[0]


@dataclass(frozen=True)
class _Neuron:
    """A plain neuron: the compiled scan's parameters (flat fp32 [N]), v_init and its shape."""

    name: str
    params: tuple[np.ndarray, ...] = field(repr=False)  # gain, decay, threshold, bias, v_reset
    v_init: np.ndarray = field(repr=False)  # [N]
    shape: tuple[int, ...]
    zero_reset: bool
    pool: bool = False  # its spikes [C, H, W] 2x2-average-pooled in the scan (the next op's)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """What the scan gives per sample: the spikes, or their 2x2 means."""
        if not self.pool:
            return self.shape
        channels, height, width = self.shape
        return channels, height // 2, width // 2


class LayerwiseRun:
    """``run`` of a suitable spiking program (module docstring) on ONNX Runtime sessions of its
    stateless segments and the compiled CPU loops. ``LayerwiseRun.build(...)`` makes one."""

    def __init__(
        self,
        time: SpikingTime,
        segments: list[_Segment],
        neurons: list[_Neuron],
        output_name: str = "output",
    ) -> None:
        self.time = time
        self.segments = segments  # len(neurons) + 1: before each neuron, then to the output
        self.neurons = neurons
        self.output_name = output_name
        sizes = [int(np.prod(s.out_shape)) for s in segments]
        self._out_size = sizes[-1]  # values per sample of the output
        widest = max([n.v_init.size for n in neurons] + sizes)
        self.rows_per_chunk = max(MIN_CHUNK_ROWS, CHUNK_BYTES // (4 * widest))
        self._starts: tuple[int, list[np.ndarray]] | None = None  # (batch, each neuron's v0)
        # per neuron, the convolution before it computed in its own pass (``conv_scan_pool_loop``):
        # a segment that is one convolution (``_lone_conv``: in a shape the pass takes) over the
        # spikes of the neuron before, whose output is this neuron, whose spikes only its 2x2
        # pool reads
        self._fused = [
            segment.conv
            if k > 0
            and neuron.pool
            and segment.conv is not None
            and neuron.shape == (segment.conv.bias.size, *segment.conv.out_hw)
            else None
            for k, (segment, neuron) in enumerate(zip(segments, neurons, strict=False))
        ]

    # ---- building ------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        program: Program,
        options: Any,
        providers: list[str],
        sequence_graph: bytes | None = None,
    ) -> LayerwiseRun | None:
        """The layer-wise run of ``program`` (a float spiking program), its segments opened with
        ONNX Runtime ``options`` (an ``ort.SessionOptions``) on ``providers``; None where the
        program does not suit (module docstring). ``sequence_graph``: the serialized sequence
        graph where the caller has it already, else read (or exported) here."""
        manifest = program.manifest
        time = manifest.time
        if (
            manifest.kind != "spiking"
            or manifest.architecture != "spiking_graph"
            or not isinstance(time, SpikingTime)
            or time.encoding == "rate"
            or time.delay
            or list(providers) != ["CPUExecutionProvider"]
        ):
            return None
        if sequence_graph is None:
            from ganglion.runtime.onnx_export.export import bundle_graph

            sequence_graph = bundle_graph(program, "sequence", required=False)
        if sequence_graph is None:
            return None
        try:
            parts = _parts(program, sequence_graph, options, providers)
        except Exception:  # noqa: BLE001 - config.json or a graph the cut does not understand
            return None  # (a malformed field, an unexpected node): the sequence graph runs it
        if parts is None:
            return None
        return cls(time, *parts, manifest.outputs[0].name)

    # ---- running -------------------------------------------------------------------------------

    def run(self, inputs: Arrays) -> Arrays | None:
        """``inputs`` as the session's ``_run`` takes them (``input``: raw features [B, ...] for
        a direct encoding, else time-major [T, B, ...]) -> ``{"output": ...}`` as the sequence
        graph gives it; None while compiled kernels are off (``GANGLION_KERNELS=0``)."""
        if not cpu_scan_available():
            return None
        ((_, x),) = inputs.items()
        x = np.asarray(x, dtype=np.float32)
        time_major = self.time.time_major
        steps, batch = x.shape[:2] if time_major else (self.time.timesteps, x.shape[0])
        chunk = max(1, self.rows_per_chunk // batch)
        membranes = self._start(batch)  # read, never written, by the scans (they copy)
        constant = None  # a direct input's first segment [1, B, ...], computed once
        last = self.segments[-1]
        decoding = self.time.decoding != "none"
        total = np.zeros((batch, self._out_size), np.float32) if decoding else None
        outs = []
        for t in range(0, steps, chunk):
            size = min(chunk, steps - t)
            if time_major:
                rows = x[t : t + size].reshape(size * batch, *x.shape[2:])
                current, t_step = self.segments[0](np.ascontiguousarray(rows)), 1
            else:
                if constant is None:
                    constant = self.segments[0](np.ascontiguousarray(x))
                current, t_step = constant, 0
            for k, neuron in enumerate(self.neurons):
                conv = self._fused[k]
                if conv is not None:  # ``current``: the spikes before its convolution
                    spikes, membranes[k] = conv_scan_pool_loop(
                        current.reshape(size, batch, *conv.in_shape), conv.flipped, conv.bias,
                        *conv.pads, conv.out_hw, neuron.params[0], membranes[k],
                        *neuron.params[1:], neuron.zero_reset,
                    )  # fmt: skip
                else:
                    spikes, membranes[k] = self._scan(
                        neuron, current, t_step, size, batch, membranes[k]
                    )
                current, t_step = spikes.reshape(size * batch, *neuron.out_shape), 1
                if k + 1 == len(self.neurons) or self._fused[k + 1] is None:
                    current = self.segments[k + 1](current)
            rows_out = np.ascontiguousarray(current).reshape(size, batch, -1)
            if total is not None:
                time_sum_loop(rows_out, 1, size, total)
            else:
                outs.append(rows_out.reshape(size, batch, *last.out_shape))
        if total is not None:
            out = scale_decoded(total.reshape(batch, *last.out_shape), self.time)
        elif not outs:  # a time-major input of no timesteps
            out = np.zeros((0, batch, *last.out_shape), np.float32)
        else:
            out = outs[0] if len(outs) == 1 else np.concatenate(outs)
        return {self.output_name: out}

    def _start(self, batch: int) -> list[np.ndarray]:
        """Each neuron's membrane at t = 0, [batch, N] (v_init), kept for the last batch size."""
        if self._starts is None or self._starts[0] != batch:
            starts = [np.repeat(n.v_init[None], batch, axis=0) for n in self.neurons]
            self._starts = (batch, starts)
        return list(self._starts[1])

    def _scan(
        self,
        neuron: _Neuron,
        current: np.ndarray,
        t_step: int,
        steps: int,
        batch: int,
        v0: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``steps`` timesteps of one neuron layer from membrane ``v0`` [B, N] (kept): current
        [S·B or B, ...] (step t reads row block t·t_step) -> (spikes [steps, B, N], final
        membrane [B, N]); a pooling neuron's spikes come 2x2-averaged (``out_shape``)."""
        gain, *rest = neuron.params
        args = (
            np.ascontiguousarray(current).reshape(-1, batch, neuron.v_init.size),
            t_step,
            steps,
            gain,
            v0,
            *rest,
            neuron.zero_reset,
        )
        if neuron.pool:
            return float_scan_pool_loop(*args, neuron.shape)
        return float_scan_loop(*args)


# ---- reading the program -----------------------------------------------------------------------


def _parts(
    program: Program, sequence_graph: bytes, options: Any, providers: list[str]
) -> tuple[list[_Segment], list[_Neuron]] | None:
    """The segments and neurons of ``program``'s sequence graph, or None where they do not
    make a plain chain (module docstring)."""
    chain = _chain(program.config())
    if chain is None:
        return None
    import onnx

    model = onnx.load_from_string(sequence_graph)
    cut = _cut(model, chain)
    if cut is None:
        return None
    bounds, neurons = cut
    segments = _segments(model, bounds, options, providers)
    return None if segments is None else (segments, neurons)


@dataclass(frozen=True)
class _ChainNode:
    name: str
    type: str
    spec: dict[str, Any]


def _chain(config: dict[str, Any]) -> list[_ChainNode] | None:
    """config.json's nodes in chain order (input → each node → output, one delay-0 edge into
    each), or None for any other graph or a neuron config.json says is not plain (a synaptic
    neuron's current is a tensor, not in its spec: ``_neuron``'s body check refuses it)."""
    try:
        nodes = {str(spec["name"]): spec for spec in config["nodes"]}
        edges = [(str(e[0]), str(e[1]), int(e[2]) if len(e) > 2 else 0) for e in config["edges"]]
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    if any(d for *_, d in edges):
        return None
    successor: dict[str, str] = {}
    incoming: dict[str, int] = {}
    for a, b, _ in edges:
        if a in successor:  # a node read by two nodes (or by a node and the output)
            return None
        successor[a] = b
        incoming[b] = incoming.get(b, 0) + 1
    order, node = [], "input"
    while node != "output":
        node = successor.get(node, "")
        if node != "output":
            if node not in nodes or node in order:
                return None
            order.append(node)
    if len(order) != len(nodes) or any(incoming.get(n) != 1 for n in (*order, "output")):
        return None
    chain = []
    for name in order:
        spec = nodes[name]
        kind = str(spec.get("type"))
        if kind == "Delay":
            return None
        if kind == "Neuron" and not (
            spec.get("fire", "gt") == "gt"
            and spec.get("spikes", "one") == "one"
            and int(spec.get("reset_delay", 0)) == 0
            and spec.get("reset", "subtract") in PLAIN_BODIES
            and spec.get("syn_decay") is None
            and spec.get("syn_gain") is None
            and spec.get("v_min") is None
        ):
            return None
        chain.append(_ChainNode(name, kind, spec))
    return chain


def _cut(model: Any, chain: list[_ChainNode]) -> tuple[list[tuple[str, str]], list[_Neuron]] | None:
    """The sequence graph's segment bounds (flat value in, flat value out; equal for an empty
    segment) and its neurons, checked against ``chain``; None where the graph is not the one
    the exporter writes for such a chain."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    scans = [n for n in graph.node if n.op_type == "Scan"]
    neurons_wanted = [c for c in chain if c.type == "Neuron"]
    decoding_scans = len(scans) - len(neurons_wanted)
    if not neurons_wanted or decoding_scans not in (0, 1) or len(graph.input) != 1:
        return None

    def flat_after(value: str) -> str | None:
        """The ``_flat`` Reshape of ``value`` (shape an initializer) -> its output."""
        found = [
            n for n in consumers.get(value, [])
            if n.op_type == "Reshape" and n.input[0] == value and n.input[1] in inits
        ]  # fmt: skip
        return found[0].output[0] if len(found) == 1 else None

    def timed_source(value: str) -> str | None:
        """The flat value a ``_timed`` Reshape (shape [T, B, ...] made at run time) reads."""
        node = producer.get(value)
        if node is None or node.op_type != "Reshape" or node.input[1] in inits:
            return None
        return node.input[0]

    def pool_after(value: str) -> str | None:
        """The output of a 2x2 AveragePool of stride 2, no padding, that alone reads ``value``
        (spikes, whose means are exact in any order: ``float_scan_pool_loop`` gives its bits)."""
        readers = consumers.get(value, [])
        if len(readers) != 1 or readers[0].op_type != "AveragePool":
            return None
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in readers[0].attribute}
        attributes.pop("count_include_pad", None)  # without padding it counts nothing
        if {**POOL_DEFAULTS, **attributes} != SQUARE_POOL:
            return None
        return readers[0].output[0]

    start = flat_after(graph.input[0].name)
    bounds: list[tuple[str, str]] = []
    neurons: list[_Neuron] = []
    for scan, wanted in zip(scans, neurons_wanted, strict=False):
        if len(scan.input) != 2 or len(scan.output) != 2 or start is None:
            return None
        end = timed_source(scan.input[1])
        neuron = _neuron(scan, wanted, inits, producer, numpy_helper)
        if end is None or neuron is None:
            return None
        bounds.append((start, end))
        start = flat_after(scan.output[1])
        pooled = None if start is None or len(neuron.shape) != 3 else pool_after(start)
        if pooled is not None:  # the scan pools its spikes; the next segment starts after
            start, neuron = pooled, dataclasses.replace(neuron, pool=True)
        neurons.append(neuron)
    # the output: Identity (<- Div) <- decode Scan <- _timed Reshape, or Identity <- _timed
    node = producer.get(graph.output[0].name)
    while node is not None and node.op_type in ("Identity", "Div"):
        node = producer.get(node.input[0])
    if decoding_scans:
        if node is None or node is not scans[-1] or len(node.input) != 2:
            return None
        end = timed_source(node.input[1])
    else:
        end = None if node is None else timed_source(node.output[0])
    if start is None or end is None:
        return None
    bounds.append((start, end))
    return bounds, neurons


def _neuron(
    scan: Any,
    wanted: _ChainNode,
    inits: dict[str, Any],
    producer: dict[str, Any],
    numpy_helper: Any,
) -> _Neuron | None:
    """A plain neuron's parameters from its Scan (body checked op by op), or None."""
    body = next((a.g for a in scan.attribute if a.name == "body"), None)
    reset = str(wanted.spec.get("reset", "subtract"))
    if body is None or tuple(n.op_type for n in body.node) != PLAIN_BODIES[reset]:
        return None
    fields: dict[str, np.ndarray] = {}
    for node in body.node:
        for name in node.input:
            match = _PARAM_NAME.match(name) if name in inits else None
            if match is not None:
                if match["node"] != wanted.name:
                    return None
                fields[match["field"]] = numpy_helper.to_array(inits[name])
    expand = producer.get(scan.input[0])  # the membrane's start: Expand(v_init, [B, *shape])
    if expand is None or expand.op_type != "Expand" or expand.input[0] not in inits:
        return None
    match = _PARAM_NAME.match(expand.input[0])
    if match is None or match["node"] != wanted.name or match["field"] != "v_init":
        return None
    v_init = numpy_helper.to_array(inits[expand.input[0]])
    shape = tuple(int(d) for d in v_init.shape)
    if reset == "subtract":
        fields.setdefault("v_reset", np.zeros(shape, np.float32))  # unread by the loop
    if set(fields) != set(NEURON_FIELDS):
        return None
    arrays = [fields[f] for f in NEURON_FIELDS] + [v_init]
    if any(a.dtype != np.float32 or a.shape != shape for a in arrays):
        return None
    flat = [np.ascontiguousarray(a.reshape(-1)) for a in arrays]
    return _Neuron(wanted.name, tuple(flat[:-1]), flat[-1], shape, reset == "zero")


def _segments(
    model: Any, bounds: list[tuple[str, str]], options: Any, providers: list[str]
) -> list[_Segment] | None:
    """An ONNX Runtime session per segment (cut with ``onnx.utils.Extractor``), or None where
    a segment holds other ops than stateless layers."""
    import onnx
    import onnxruntime as ort
    from onnx.utils import Extractor

    extractor = Extractor(onnx.shape_inference.infer_shapes(model))
    shapes = {v.name: v for v in (*extractor.graph.value_info, *extractor.graph.output)}
    segments = []
    for start, end in bounds:
        info = shapes.get(end)
        if info is None:
            return None
        dims = info.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in dims[1:]):
            return None
        out_shape = tuple(int(d.dim_value) for d in dims[1:])
        if start == end:
            segments.append(_Segment(None, start, end, out_shape))
            continue
        cut = extractor.extract_model([start], [end])
        if any(n.op_type not in SEGMENT_OPS for n in cut.graph.node):
            return None
        cut.doc_string = "Ganglion spiking sequence graph: one stateless segment"
        try:
            onnx.checker.check_model(cut)
            session = ort.InferenceSession(cut.SerializeToString(), options, providers=providers)
        except Exception:  # a segment that does not stand alone: keep the sequence graph
            return None
        conv = _lone_conv(cut.graph, session, out_shape)
        segments.append(_Segment(session, start, end, out_shape, conv))
    return segments


def _lone_conv(graph: Any, session: Any, out_shape: tuple[int, ...]) -> _Conv | None:
    """The segment ``graph`` (run by ``session``) as a ``_Conv`` where it is one 2-D
    convolution (weights and bias initializers; stride 1, dilation 1, one group, symmetric
    padding) whose output the compiled loop gives bit for bit on ``probe_inputs``; else
    None."""
    import onnx
    from onnx import numpy_helper

    from ganglion.kernels.conv.cpu import conv2d_loop, flip_weight, probe_fits, probe_inputs

    if len(graph.node) != 1 or graph.node[0].op_type != "Conv" or len(graph.node[0].input) != 3:
        return None
    node, inits = graph.node[0], {t.name: t for t in graph.initializer}
    if node.input[1] not in inits or node.input[2] not in inits:
        return None
    weight = numpy_helper.to_array(inits[node.input[1]])
    bias = numpy_helper.to_array(inits[node.input[2]])
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    pads = list(attributes.get("pads", [0, 0, 0, 0]))
    if (
        weight.dtype != np.float32
        or weight.ndim != 4
        or bias.shape != (weight.shape[0],)
        or list(attributes.get("strides", [1, 1])) != [1, 1]
        or list(attributes.get("dilations", [1, 1])) != [1, 1]
        or attributes.get("group", 1) != 1
        or attributes.get("auto_pad", b"NOTSET") != b"NOTSET"
        or len(pads) != 4
        or pads[:2] != pads[2:]
        or not (np.isfinite(weight).all() and np.isfinite(bias).all())
    ):
        return None
    dims = session.get_inputs()[0].shape[1:]
    if len(dims) != 3 or not all(isinstance(d, int) and d > 0 for d in dims):
        return None
    in_shape = (int(dims[0]), int(dims[1]), int(dims[2]))
    out_hw = (in_shape[1] + 2 * pads[0] - weight.shape[2] + 1,
              in_shape[2] + 2 * pads[1] - weight.shape[3] + 1)  # fmt: skip
    if in_shape[0] != weight.shape[1] or out_shape != (weight.shape[0], *out_hw):
        return None
    if not fits(weight.shape[0], *out_hw):  # the one pass could not take it: no probe
        return None
    if not probe_fits(in_shape, out_shape):  # shapes from the file: no probe beyond the bound
        return None
    conv = _Conv(flip_weight(weight), bias.astype(np.float32), (pads[0], pads[1]), in_shape, out_hw)
    for x in probe_inputs(in_shape):
        want = session.run(None, {session.get_inputs()[0].name: x})[0]
        got = np.empty((x.shape[0], *out_shape), np.float32)
        scratch = np.empty(int(np.prod(out_shape)), np.float32)
        conv2d_loop(x, conv.flipped, conv.bias, *conv.pads, got, scratch)
        if not np.array_equal(got, want):
            return None
    return conv

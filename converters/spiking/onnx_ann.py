"""Read a trained ANN saved as ONNX into the AnnGraph that ``ann_graph.read_ann`` builds
from a torch.export program, for the same layers.

Supported nodes: Gemm, MatMul (+ a constant Add as its bias), Conv, AveragePool, Flatten,
Reshape to [batch, features], Relu, Add of two layer outputs (residual), BatchNormalization
(folded into the Gemm/MatMul/Conv before it), Dropout and Identity (dropped), and the
constant and shape nodes that compute a reshape target (Constant, Shape, Gather, Unsqueeze,
Concat). Anything else raises ConversionError naming the node, its op type and this set.

The file is read with ``converters.onnx_file.load_onnx`` (size-checked, no external data).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from ganglion.converters.onnx_file import check_self_contained, load_onnx
from ganglion.converters.spiking.ann_graph import INPUT, AnnGraph, AnnOp
from ganglion.models.errors import ConversionError, ShapeError
from ganglion.models.spiking.layers import Affine, AvgPool2d, Conv2d, Flatten

SUPPORTED_ONNX = (
    "Gemm, MatMul (+ Add), Conv, AveragePool, Flatten, Reshape to [batch, features], Relu, "
    "Add, BatchNormalization (after Gemm/MatMul/Conv), Dropout, Identity"
)
_BATCH = "batch"  # the batch entry of a shape computed inside the graph


def _sanitize(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", text).strip("_") or "node"


def _pair(values: Any, default: int) -> tuple[int, int]:
    values = list(values) if values is not None else [default, default]
    if len(values) != 2:
        raise ValueError(f"expected 2 values, got {values}")
    return int(values[0]), int(values[1])


class _OnnxReader:
    """Walks the ONNX graph once (nodes are topologically sorted), building AnnOps."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.graph = graph
        self.constants: dict[str, np.ndarray] = {}
        for tensor in graph.initializer:
            try:
                self.constants[tensor.name] = numpy_helper.to_array(tensor)
            except (ValueError, TypeError) as exc:  # data that does not fill its dims
                raise ConversionError(f"initializer {tensor.name!r} is malformed ({exc})") from exc
        inputs = [i for i in graph.input if i.name not in self.constants]
        if len(inputs) != 1:
            raise ConversionError(
                f"the model must take one input tensor, it takes {[i.name for i in inputs]}"
            )
        dims = inputs[0].type.tensor_type.shape.dim
        features = [d.dim_value if d.HasField("dim_value") else None for d in dims[1:]]
        if not dims or None in features:
            raise ConversionError(
                f"input {inputs[0].name!r} must be [batch, ...features] with fixed features"
            )
        self.input_shape = tuple(int(d) for d in features)
        self.alias: dict[str, str] = {inputs[0].name: INPUT}  # value name -> op name
        self.shapes: dict[str, tuple[int, ...]] = {INPUT: self.input_shape}  # per sample
        self.ops: dict[str, AnnOp] = {}
        self.counts: dict[str, int] = {}
        self.outputs = {o.name for o in graph.output}
        self.readers = Counter(name for node in graph.node for name in node.input)
        if graph.sparse_initializer:
            raise ConversionError("sparse initializers are not supported")

    # -- values ------------------------------------------------------------------------------

    def constant(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        """The constant at input ``index`` (None if the input is absent)."""
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.constants:
            raise self.unsupported(node, f"input {name!r} must be a constant")
        return self.constants[name]

    def source(self, node: onnx.NodeProto, index: int = 0) -> str:
        name = node.input[index] if index < len(node.input) else ""
        if name not in self.alias:
            raise self.unsupported(node, "operand is not the output of a supported layer")
        return self.alias[name]

    def unsupported(self, node: onnx.NodeProto, why: str = "") -> ConversionError:
        detail = f" ({why})" if why else ""
        return ConversionError(
            f"ONNX node {node.name or '<unnamed>'!r} ({node.op_type}) is not supported{detail}; "
            f"supported: {SUPPORTED_ONNX}"
        )

    def add(self, node: onnx.NodeProto, kind: str, inputs: list[str], layer: Any = None) -> str:
        path = node.name or node.output[0]
        base = f"{kind}_{_sanitize(path)}"
        self.counts[base] = self.counts.get(base, 0) + 1
        name = base if self.counts[base] == 1 else f"{base}_{self.counts[base]}"
        in_shape = self.shapes[inputs[0]]
        if not _fits(layer, in_shape):
            raise self.unsupported(node, f"its weights do not fit its input of shape {in_shape}")
        self.shapes[name] = in_shape if layer is None else tuple(layer.out_shape(in_shape))
        self.ops[name] = AnnOp(name, kind, inputs, path, layer)
        for i in inputs:
            if i in self.ops:
                self.ops[i].consumers.append(name)
        self.alias[node.output[0]] = name
        return name

    def foldable(self, node: onnx.NodeProto, value: str) -> AnnOp:
        """The Gemm/MatMul/Conv op that computes ``value``, which only ``node`` reads."""
        prev = self.ops.get(self.alias.get(value, ""))
        if prev is None or prev.kind not in ("affine", "conv") or prev.consumers:
            raise self.unsupported(node, "it must directly follow a Gemm, MatMul or Conv")
        if value in self.outputs or self.readers[value] > 1:
            raise self.unsupported(node, "the layer before it has another reader")
        return prev

    # -- nodes -------------------------------------------------------------------------------

    def read(self) -> AnnGraph:
        handlers = {
            "Gemm": self.gemm,
            "MatMul": self.matmul,
            "Conv": self.conv,
            "AveragePool": self.average_pool,
            "Flatten": self.flatten,
            "Reshape": self.reshape,
            "Relu": lambda n: self.add(n, "relu", [self.source(n)]),
            "Add": self.add_node,
            "BatchNormalization": self.batch_norm,
            "Dropout": self.dropout,
            "Identity": self.identity,
            "Constant": self.constant_node,
            "Shape": self.shape_node,
            "Gather": self.shape_arithmetic,
            "Unsqueeze": self.shape_arithmetic,
            "Concat": self.shape_arithmetic,
        }
        for node in self.graph.node:
            if node.domain not in ("", "ai.onnx") or node.op_type not in handlers:
                raise self.unsupported(node)
            try:
                handlers[node.op_type](node)
            except (ValueError, TypeError, IndexError, KeyError, ShapeError) as exc:
                raise self.unsupported(node, str(exc).splitlines()[0]) from exc
        if len(self.graph.output) != 1:
            raise ConversionError(
                f"the model must return one tensor, it returns {len(self.outputs)}"
            )
        output = self.alias.get(self.graph.output[0].name)
        if output is None or output == INPUT:
            raise ConversionError("the model has no layer to convert")
        return AnnGraph(self.ops, output, self.input_shape)

    def gemm(self, node: onnx.NodeProto) -> None:
        a = _attributes(node)
        if a.get("transA", 0):
            raise self.unsupported(node, "transA=1")
        b = self.constant(node, 1)
        c = self.constant(node, 2)
        weight = a.get("alpha", 1.0) * (b if a.get("transB", 0) else b.T)
        bias = np.zeros(weight.shape[0]) if c is None else a.get("beta", 1.0) * c
        bias = np.broadcast_to(bias, (1, weight.shape[0])).reshape(-1)
        self.add(node, "affine", [self.source(node)], Affine(_f32(weight), _f32(bias)))

    def matmul(self, node: onnx.NodeProto) -> None:
        b = self.constant(node, 1)
        if b.ndim != 2:
            raise self.unsupported(node, "only a matrix of weights [in, out]")
        layer = Affine(_f32(b.T), torch.zeros(b.shape[1]))
        self.add(node, "affine", [self.source(node)], layer)

    def conv(self, node: onnx.NodeProto) -> None:
        a = _attributes(node)
        weight, bias = self.constant(node, 1), self.constant(node, 2)
        if weight.ndim != 4:
            raise self.unsupported(node, "only 2-D convolutions")
        layer = Conv2d(
            _f32(weight),
            _f32(bias if bias is not None else np.zeros(weight.shape[0])),
            stride=_pair(a.get("strides"), 1),
            padding=self.padding(node, a),
            dilation=_pair(a.get("dilations"), 1),
            groups=int(a.get("group", 1)),
        )
        self.add(node, "conv", [self.source(node)], layer)

    def padding(self, node: onnx.NodeProto, a: dict[str, Any]) -> tuple[int, int]:
        auto_pad = a.get("auto_pad", b"NOTSET")
        if auto_pad not in (b"NOTSET", b"VALID"):
            raise self.unsupported(node, f"auto_pad={auto_pad.decode()}; give explicit pads")
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if len(pads) != 4 or pads[:2] != pads[2:]:
            raise self.unsupported(node, f"pads {pads} are not symmetric")
        return int(pads[0]), int(pads[1])

    def average_pool(self, node: onnx.NodeProto) -> None:
        a = _attributes(node)
        padding = self.padding(node, a)
        if a.get("ceil_mode", 0):
            raise self.unsupported(node, "ceil_mode=1")
        if padding != (0, 0) and not a.get("count_include_pad", 0):
            raise self.unsupported(node, "count_include_pad=0 with padding")
        if _pair(a.get("dilations"), 1) != (1, 1):
            raise self.unsupported(node, "dilations")
        layer = AvgPool2d(_pair(a["kernel_shape"], 1), _pair(a.get("strides"), 1), padding)
        self.add(node, "avgpool", [self.source(node)], layer)

    def flatten(self, node: onnx.NodeProto) -> None:
        axis = next((attr.i for attr in node.attribute if attr.name == "axis"), 1)
        if axis != 1:
            raise self.unsupported(node, f"axis={axis}; only axis=1 (keep the batch)")
        self.add(node, "flatten", [self.source(node)], Flatten())

    def reshape(self, node: onnx.NodeProto) -> None:
        """A reshape to [batch, features]: the batch entry is the input's batch (a computed
        shape), 0 (copy it), a batch fixed at export, or -1 beside explicit features."""
        src = self.source(node)
        target = list(self.constant(node, 1).reshape(-1))
        copies_zero = not any(attr.name == "allowzero" and attr.i for attr in node.attribute)
        features = int(np.prod(self.shapes[src]))
        batch, width = target if len(target) == 2 else (None, None)
        keeps_batch = (
            (isinstance(batch, str) and batch == _BATCH)
            or (batch == 0 and copies_zero)
            or (isinstance(batch, int | np.integer) and batch > 0)
            or (batch == -1 and width == features)
        )
        if not keeps_batch or width not in (-1, features):
            raise self.unsupported(node, f"reshape to {target}, not [batch, {features}]")
        self.add(node, "flatten", [src], Flatten())

    def add_node(self, node: onnx.NodeProto) -> None:
        """A residual sum of two layer outputs, or a constant bias of the layer before."""
        if all(name in self.alias for name in node.input[:2]):
            self.add(node, "add", [self.source(node, 0), self.source(node, 1)])
            return
        value, const = node.input[0], self.constants.get(node.input[1])
        if const is None:
            value, const = node.input[1], self.constants.get(node.input[0])
        if const is None or value not in self.alias:
            raise self.unsupported(node, "operands are not a layer output and a constant")
        prev = self.foldable(node, value)
        shape = self.shapes[prev.name]  # per sample: (out,) or (channels, h, w)
        full = np.broadcast_to(const, (1, *shape)).reshape(shape[0], -1)
        if not np.all(full == full[:, :1]):
            raise self.unsupported(node, "a constant that varies within a channel")
        prev.layer.bias = prev.layer.bias + _f32(full[:, 0])
        self.alias[node.output[0]] = prev.name

    def batch_norm(self, node: onnx.NodeProto) -> None:
        a = _attributes(node)
        if a.get("training_mode", 0) or any(len(o) for o in node.output[1:]):
            raise self.unsupported(node, "training mode")
        prev = self.foldable(node, node.input[0])
        gamma, beta, mean, var = (_f32(self.constant(node, i)) for i in range(1, 5))
        scale = gamma / torch.sqrt(var + float(a.get("epsilon", 1e-5)))
        layer = prev.layer
        layer.weight = layer.weight * scale.reshape((-1,) + (1,) * (layer.weight.ndim - 1))
        layer.bias = (layer.bias - mean) * scale + beta
        self.alias[node.output[0]] = prev.name

    def dropout(self, node: onnx.NodeProto) -> None:
        if len(node.output) > 1 and node.output[1] and self.readers[node.output[1]]:
            raise self.unsupported(node, "its mask is used")
        training = self.constant(node, 2)
        if training is not None and bool(training):
            raise self.unsupported(node, "training mode")
        self.alias[node.output[0]] = self.source(node)

    def identity(self, node: onnx.NodeProto) -> None:
        if node.input[0] in self.constants:
            self.constants[node.output[0]] = self.constants[node.input[0]]
        else:
            self.alias[node.output[0]] = self.source(node)

    def constant_node(self, node: onnx.NodeProto) -> None:
        attr = node.attribute[0] if len(node.attribute) == 1 else None
        if attr is None or attr.name not in (
            "value",
            "value_float",
            "value_floats",
            "value_int",
            "value_ints",
        ):
            raise self.unsupported(node, "only dense tensor or number constants")
        value = onnx.helper.get_attribute_value(attr)
        array = numpy_helper.to_array(value) if attr.name == "value" else np.asarray(value)
        self.constants[node.output[0]] = array

    def shape_node(self, node: onnx.NodeProto) -> None:
        a = _attributes(node)
        shape = np.array([_BATCH, *self.shapes[self.source(node)]], dtype=object)
        self.constants[node.output[0]] = shape[a.get("start", 0) : a.get("end", None)]

    def shape_arithmetic(self, node: onnx.NodeProto) -> None:
        """Gather, Unsqueeze and Concat on constants and shapes (a reshape's target)."""
        a = _attributes(node)
        if node.op_type == "Gather":
            data, index = self.constant(node, 0), self.constant(node, 1)
            result = np.take(data, index.astype(np.int64), axis=int(a.get("axis", 0)))
        elif node.op_type == "Unsqueeze":
            axes = a.get("axes")
            axes = axes if axes is not None else self.constant(node, 1).reshape(-1)
            result = np.expand_dims(self.constant(node, 0), tuple(int(x) for x in axes))
        else:
            parts = [self.constant(node, i) for i in range(len(node.input))]
            result = np.concatenate([p.astype(object) for p in parts], axis=int(a["axis"]))
        self.constants[node.output[0]] = result


def _fits(layer: Any, in_shape: tuple[int, ...]) -> bool:
    """Whether a layer's weights take a per-sample input of ``in_shape``."""
    if isinstance(layer, Affine):
        return len(in_shape) == 1 and layer.weight.shape[1] == in_shape[0]
    if isinstance(layer, Conv2d):
        return len(in_shape) == 3 and layer.weight.shape[1] * layer.groups == in_shape[0]
    if isinstance(layer, AvgPool2d):
        return len(in_shape) == 3
    return True


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    return {attr.name: onnx.helper.get_attribute_value(attr) for attr in node.attribute}


def _f32(a: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(a, dtype=np.float32))


def read_ann_onnx(model: str | Path | onnx.ModelProto) -> AnnGraph:
    """Parse an ONNX ANN into an AnnGraph (BatchNorm folded, Dropout dropped).

    model: a path (loaded with ``load_onnx``: size-checked, no external data) or a loaded
    ModelProto. Raises ConversionError naming the first unsupported node.
    """
    if isinstance(model, onnx.ModelProto):
        check_self_contained(model, "the ONNX model")
        return _OnnxReader(model).read()
    source = str(model)
    try:
        return _OnnxReader(load_onnx(model)).read()
    except (ConversionError, ShapeError) as exc:  # name the file once, first
        text = str(exc)
        raise ConversionError(text if text.startswith(source) else f"{source}: {text}") from exc

"""Reading an ONNX model that nothing else vouches for: size-bounded, self-contained.

``onnx.load`` follows a tensor's external-data reference to another file; a model read here
must hold all its tensors itself, so no local file can be pulled into it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from ganglion.models.errors import ConversionError, file_problem, first_line

MAX_ONNX_BYTES = 1 << 30  # protobuf cannot hold more than 2 GiB anyway


def _tensors(nodes: Any, initializers: Any = ()) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every dense tensor among initializers and node attributes, subgraphs included."""
    for tensor in initializers:
        yield tensor.name, tensor
    for node in nodes:
        label = f"{node.name or node.op_type}.{{}}"
        for attr in node.attribute:
            for tensor in [attr.t, *attr.tensors]:
                yield label.format(attr.name), tensor
            for sparse in [attr.sparse_tensor, *attr.sparse_tensors]:
                yield label.format(attr.name), sparse.values
            for sub in [attr.g, *attr.graphs]:
                yield from _tensors(
                    sub.node, [*sub.initializer, *(s.values for s in sub.sparse_initializer)]
                )


def _model_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every dense tensor of a model: initializers, node attributes (Constant values),
    subgraphs and functions."""
    graph = model.graph
    return _tensors(
        [*graph.node, *(n for f in model.functions for n in f.node)],
        [*graph.initializer, *(s.values for s in graph.sparse_initializer)],
    )


def ort_message(exc: Exception) -> str:
    """The first line of an ONNX Runtime error, without its ``[ONNXRuntimeError] : 1 : FAIL :``
    prefix."""
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", first_line(exc))


def check_self_contained(model: onnx.ModelProto, label: str) -> None:
    """Refuse a model with any tensor that refers to external data: reading it would open
    another file (onnx.numpy_helper.to_array follows the reference)."""
    for name, tensor in _model_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            raise ConversionError(
                f"{label}: tensor {name or tensor.name!r} refers to external data (another "
                "file); save the model self-contained (torch.onnx.export(..., "
                "external_data=False))"
            )


_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.DOUBLE,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
}


def check_no_nan(model: onnx.ModelProto, label: str) -> None:
    """Refuse a model whose float tensors (initializers, Constant values, subgraphs') hold NaN:
    a trained model's weights are numbers, and a NaN would pass through calibration and
    conversion as a plausible result. (Infinity is allowed: attention masks hold -inf.) Call
    ``check_self_contained`` first: reading a tensor follows an external-data reference."""
    for name, tensor in _model_tensors(model):
        if tensor.data_type not in _FLOAT_TYPES:
            continue
        try:
            values = numpy_helper.to_array(tensor)
        except (ValueError, TypeError) as exc:
            raise ConversionError(f"{label}: tensor {name!r} is malformed ({exc})") from None
        nan = np.isnan(values)
        if nan.any():
            index = tuple(int(i) for i in np.argwhere(nan)[0])
            raise ConversionError(f"{label}: tensor {name!r} holds NaN at index {index}")


def load_onnx(path: str | Path, max_bytes: int = MAX_ONNX_BYTES) -> onnx.ModelProto:
    """``onnx.load`` a file of at most ``max_bytes`` without its external data, and refuse
    it if it refers to any or a float initializer holds NaN; a one-line ConversionError for
    every problem."""
    path = Path(path)
    if (problem := file_problem(path)) is not None:
        raise ConversionError(f"{path}: {problem}")
    size = path.stat().st_size
    if size > max_bytes:
        raise ConversionError(f"{path}: {size} bytes, more than the {max_bytes} allowed")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError) as exc:
        raise ConversionError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from exc
    check_self_contained(model, str(path))
    check_no_nan(model, str(path))
    return model

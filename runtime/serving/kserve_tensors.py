"""Tensors on the KServe v2 wire: datatype names, request inputs to numpy and numpy to
response outputs (and the client's mirror image).

Tensors travel as ``raw_input_contents`` / ``raw_output_contents``: row-major, little-endian
bytes without padding, one entry per tensor in order (BOOL one byte per element). The typed
``contents`` fields (``fp32_contents``, ``int64_contents``, ...) are accepted too; FP16 only
travels raw, as the protocol says. BYTES (strings) and the datatypes no program declares are
refused with a message naming what is supported. Every size is checked before anything is
allocated: a shape has at most ``MAX_RANK`` axes, each in [0, ``MAX_DIM``] (the bounds of a
manifest's shapes), its nonempty axes within ``MAX_MESSAGE_BYTES`` (an empty axis makes a
tensor hold nothing, but numpy still sizes the others), and a tensor's byte count must equal
its shape times its element size. Triton's per-tensor options this server does not implement
(shared memory, ``classification``) are refused, never ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ganglion.models.errors import GanglionError
from ganglion.models.manifest import MAX_DIM, MAX_RANK, TensorSpec
from ganglion.runtime.tensors import tensor_bytes

# KServe v2 datatype <-> numpy dtype name, for every dtype a manifest may declare.
DATATYPES: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}
DATATYPE_OF: dict[str, str] = {dtype: name for name, dtype in DATATYPES.items()}
KNOWN_DATATYPES = (
    "BOOL UINT8 UINT16 UINT32 UINT64 INT8 INT16 INT32 INT64 FP16 FP32 FP64 BF16 BYTES".split()
)
# The typed ``InferTensorContents`` field holding each datatype (FP16 has none: raw only).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "INT8": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
MAX_MESSAGE_BYTES = (1 << 31) - 1  # gRPC's int32 limit on one message: no tensor travels larger


# request parameters a coordinator reads (a request's own budgets); a node refuses them
BUDGET_PARAMETERS = ("energy_budget_j", "latency_budget_ms")


class WireError(GanglionError):
    """A tensor on the wire that cannot be read (the node answers INVALID_ARGUMENT)."""


def datatype_of(dtype: np.dtype | str) -> str:
    """The KServe datatype of a numpy dtype (WireError for one programs never use)."""
    name = np.dtype(dtype).name
    if name not in DATATYPE_OF:
        raise WireError(f"dtype {name} has no KServe datatype here; supported: {supported()}")
    return DATATYPE_OF[name]


def supported() -> str:
    """The datatypes the node reads and writes, for messages."""
    return ", ".join(DATATYPES)


def check_datatype(name: str, datatype: str, role: str = "input") -> str:
    """The numpy dtype name of ``datatype`` for tensor ``name``; WireError otherwise."""
    if datatype == "BYTES":
        raise WireError(
            f"{role} {name!r}: BYTES tensors are not supported (programs take numeric tensors; "
            f"send token ids as INT64); supported: {supported()}"
        )
    if datatype not in DATATYPES:
        what = "is not supported" if datatype in KNOWN_DATATYPES else "is not a KServe datatype"
        raise WireError(f"{role} {name!r}: datatype {datatype!r} {what}; supported: {supported()}")
    return DATATYPES[datatype]


def check_datatypes(model: str, specs: Sequence[TensorSpec], tensors: Any) -> None:
    """Each request tensor's datatype against the one ``specs`` declare, before any decoding
    (Triton's wording); names the specs do not know are left to the Session's check."""
    declared = {spec.name: DATATYPE_OF[spec.dtype] for spec in specs}
    for tensor in tensors:
        check_datatype(tensor.name, tensor.datatype)
        want = declared.get(tensor.name)
        if want is not None and tensor.datatype != want:
            raise WireError(
                f"inference input {tensor.name!r} data-type is '{tensor.datatype}', "
                f"but model {model!r} expects '{want}'"
            )


def check_parameters(tensor: Any, role: str) -> None:
    """WireError for a Triton per-tensor option this server does not implement."""
    for key in tensor.parameters:
        if key.startswith("shared_memory"):
            where = "the request" if role == "input" else "the response"
            raise WireError(
                f"{role} {tensor.name!r}: shared memory is not supported (parameter {key!r}); "
                f"the data travels in {where}"
            )
        if key == "classification":
            raise WireError(
                f"{role} {tensor.name!r}: classification (class_count) is not supported; "
                "ask for the output itself and take its top classes"
            )


def requested_outputs(request: Any) -> list[str]:
    """The output names a ``ModelInferRequest`` asks for (empty: all), options checked; an
    output asked for twice is refused, as Triton refuses it."""
    names: list[str] = []
    seen: set[str] = set()
    for output in request.outputs:
        check_parameters(output, "output")
        if output.name in seen:
            raise WireError(f"output '{output.name}' already exists in request")
        names.append(output.name)
        seen.add(output.name)
    return names


def element_count(
    name: str, shape: Sequence[int], dtype: np.dtype | str, role: str = "input"
) -> int:
    """Elements of ``shape`` of ``dtype`` values, checked before any array of it exists (the
    module docstring's bounds); WireError naming the tensor otherwise."""
    dims = [int(d) for d in shape[: MAX_RANK + 1]]
    if len(dims) > MAX_RANK:
        raise WireError(f"{role} {name!r}: {len(shape)} dimensions (at most {MAX_RANK})")
    if any(d < 0 for d in dims):
        raise WireError(f"{role} {name!r}: shape {dims} has a negative dimension")
    if any(d > MAX_DIM for d in dims):
        raise WireError(f"{role} {name!r}: shape {dims} has a dimension above {MAX_DIM}")
    if tensor_bytes([d for d in dims if d], dtype) > MAX_MESSAGE_BYTES:
        raise WireError(
            f"{role} {name!r}: shape {dims} {np.dtype(dtype).name} describes more than the "
            f"{MAX_MESSAGE_BYTES} bytes one message can hold, even with an empty axis"
        )
    return math.prod(dims)


def array_from_raw(
    name: str, datatype: str, shape: Sequence[int], raw: bytes, role: str = "input"
) -> np.ndarray:
    """``raw`` as a writable array of ``shape`` and ``datatype`` (checked byte count)."""
    dtype = np.dtype(check_datatype(name, datatype, role)).newbyteorder("<")
    expected = element_count(name, shape, dtype, role) * dtype.itemsize
    if len(raw) != expected:
        raise WireError(
            f"{role} {name!r}: {len(raw)} bytes for shape {list(shape)} {datatype} "
            f"(expects {expected})"
        )
    if dtype.kind == "b":
        return (np.frombuffer(raw, np.uint8) != 0).reshape(shape)
    return np.frombuffer(raw, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def array_from_contents(
    name: str, datatype: str, shape: Sequence[int], contents: Any
) -> np.ndarray:
    """An array from the typed ``InferTensorContents`` fields (count and range checked)."""
    dtype = check_datatype(name, datatype)
    count = element_count(name, shape, dtype)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise WireError(f"input {name!r}: {datatype} travels only in raw_input_contents")
    others = [f.name for f, _ in contents.ListFields() if f.name != field]
    if others:
        raise WireError(f"input {name!r}: {datatype} data belongs in {field}, got {others[0]}")
    values = getattr(contents, field)
    if len(values) != count:
        raise WireError(
            f"input {name!r}: {len(values)} values in {field} for shape {list(shape)} "
            f"(expects {count})"
        )
    wide = np.asarray(values, dtype=np.float64 if dtype.startswith("float") else None)
    if wide.size and np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        if int(wide.min()) < info.min or int(wide.max()) > info.max:
            raise WireError(f"input {name!r}: {field} holds values outside {datatype}")
    return wide.astype(dtype).reshape(shape)


def request_arrays(request: Any) -> dict[str, np.ndarray]:
    """The named arrays of a ``ModelInferRequest`` (raw contents or typed contents)."""
    for tensor in request.inputs:
        check_parameters(tensor, "input")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise WireError(
            f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs"
        )
    arrays: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in arrays:
            raise WireError(f"input {tensor.name!r} appears twice")
        shape = list(tensor.shape)
        if raw:
            if tensor.HasField("contents"):
                raise WireError(
                    f"input {tensor.name!r}: data in both contents and raw_input_contents"
                )
            arrays[tensor.name] = array_from_raw(tensor.name, tensor.datatype, shape, raw[index])
        else:
            arrays[tensor.name] = array_from_contents(
                tensor.name, tensor.datatype, shape, tensor.contents
            )
    return arrays


def raw_bytes(array: np.ndarray) -> bytes:
    """Row-major little-endian bytes of ``array`` (BOOL: one byte per element)."""
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array.tobytes()


def fill_tensors(
    tensors: Any, raw_contents: Any, arrays: Mapping[str, np.ndarray], only: Sequence[str] = ()
) -> None:
    """Append ``arrays`` (those named in ``only``, in that order, when given) to a message's
    repeated tensor field and its raw contents: outputs of a response, inputs of a request."""
    for name in only or list(arrays):
        array = arrays[name]
        tensors.add(name=name, datatype=datatype_of(array.dtype), shape=array.shape)
        raw_contents.append(raw_bytes(array))


def response_arrays(response: Any) -> dict[str, np.ndarray]:
    """The named arrays of a ``ModelInferResponse`` (what a client reads back)."""
    raw = response.raw_output_contents
    if len(raw) != len(response.outputs):
        raise WireError(f"response holds {len(raw)} raw tensors for {len(response.outputs)}")
    return {
        t.name: array_from_raw(t.name, t.datatype, list(t.shape), raw[i], "output")
        for i, t in enumerate(response.outputs)
    }

"""Any trained network as a ``dense`` program: a ``torch.export`` archive or an ONNX model.

The converter reads the network's named inputs and outputs (names, dtypes, shapes with a
dynamic batch), exports the ONNX graph every backend but torch runs (``model.onnx``), and
checks it against the source on calibration data when given. ``precision="int8"`` adds an
ONNX Runtime static quantization (QDQ) calibrated on that data (``model.int8.onnx``), with the
accuracy change in the report.

Only ATen operators are accepted in a ``torch.export`` graph, and none that touch files
(``aten::from_file``): running the program must not read or write anything but its tensors.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch.utils._pytree import tree_flatten

from ganglion.converters.exported_archive import check_graph_ops
from ganglion.converters.onnx_file import check_self_contained, ort_message
from ganglion.converters.torch_onnx import name_first_axis, quietly, torch_to_onnx
from ganglion.models.dense import DenseProgram
from ganglion.models.deployable import Deployable
from ganglion.models.errors import ConversionError, first_line
from ganglion.models.manifest import DTYPES, Manifest, TensorSpec

ARCHITECTURE_EXPORTED = "exported"  # a torch.export program (model.pt2 + model.onnx)
ARCHITECTURE_ONNX = "onnx"  # an ONNX model only (no torch face)
OPSET = 18
BATCH_AXIS = "batch"  # the name of the dynamic batch axis, in the export and the ONNX graph
DYNAMIC_BATCH_MAX = 1 << 20  # the bound of a batch axis ``dynamic_batch`` makes dynamic
ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.BOOL: "bool",
}


# ---- torch.export sources -----------------------------------------------------------------


def _tensor_spec(name: str, value: Any, where: str) -> TensorSpec:
    if not isinstance(value, torch.Tensor):
        raise ConversionError(f"{where} {name!r} is not a tensor ({type(value).__name__})")
    dtype = str(value.dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        raise ConversionError(f"{where} {name!r} has dtype {dtype}; supported: {DTYPES}")
    shape = [d if isinstance(d, int) else -1 for d in value.shape]
    return TensorSpec(name, shape, dtype)


def _output_names(program: torch.export.ExportedProgram, count: int) -> list[str]:
    spec = program.call_spec.out_spec
    context = getattr(spec, "context", None)
    if spec is not None and spec.type is dict and context and len(context) == count:
        return [str(k) for k in context]
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def dynamic_batch(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """The program with a dynamic batch axis on every input (re-exported when it was static)."""
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    user = [n for n in placeholders if n.name in program.graph_signature.user_inputs]
    values = [n.meta.get("val") for n in user]
    if all(
        isinstance(v, torch.Tensor) and v.ndim and not isinstance(v.shape[0], int) for v in values
    ):
        return program
    args = tuple(
        torch.zeros(
            [max(2, int(d)) if i == 0 else int(d) for i, d in enumerate(v.shape)], dtype=v.dtype
        )
        for v in values
    )
    batch = torch.export.Dim(BATCH_AXIS, min=1, max=DYNAMIC_BATCH_MAX)
    try:
        return torch.export.export(
            program.module(check_guards=False),
            args,
            dynamic_shapes=tuple({0: batch} for _ in args),
        )
    except Exception:  # noqa: BLE001 - a network that hard-codes its batch keeps it
        return program


def batch_bound(program: torch.export.ExportedProgram) -> int | None:
    """The largest batch ``program`` takes where its user exported it with a bounded batch axis
    (``Dim("batch", max=64)``: torch's guards refuse more), else None (no bound, or the one
    ``dynamic_batch`` sets, which is the session's own limit)."""
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    user = [n for n in placeholders if n.name in program.graph_signature.user_inputs]
    bounds = set()
    for node in user:
        value = node.meta.get("val")
        if not isinstance(value, torch.Tensor) or not value.ndim or isinstance(value.shape[0], int):
            continue
        limits = program.range_constraints.get(value.shape[0].node.expr)
        upper = None if limits is None else limits.upper
        if upper is not None and bool(upper < DYNAMIC_BATCH_MAX):  # int_oo: no bound
            bounds.add(int(upper))
    return min(bounds) if bounds else None


# ops that hand an integer tensor's values on unchanged (argument 0), and the embeddings whose
# indices (argument 1) index their table (argument 0)
_SAME_VALUES = (
    "aten.to.dtype", "aten._to_copy.default", "aten.reshape.default", "aten.view.default",
    "aten.flatten.using_ints", "aten.unsqueeze.default", "aten.squeeze.dim", "aten.clone.default",
    "aten.contiguous.default", "aten.permute.default", "aten.transpose.int", "aten.alias.default",
)  # fmt: skip
_EMBEDDINGS = (
    "aten.embedding.default", "aten.embedding_bag.default", "aten.embedding_bag.padding_idx",
    "aten._embedding_bag.default", "aten._embedding_bag_forward_only.default",
)  # fmt: skip


def embedding_ranges(program: torch.export.ExportedProgram) -> dict[str, list[int]]:
    """Integer inputs whose values index an embedding's table (directly, or through casts to
    another integer type and reshapes) -> [0, rows - 1] of the smallest such table: torch
    refuses other indices, ONNX's Gather reads a negative one from the table's end, so the
    manifest keeps the range and every session checks it."""
    readers: dict[str, list[Any]] = {}
    for node in program.graph.nodes:
        for arg in node.all_input_nodes:
            readers.setdefault(arg.name, []).append(node)

    def integer(node: Any) -> bool:
        value = node.meta.get("val")
        return isinstance(value, torch.Tensor) and not value.is_floating_point()

    ranges = {}
    for name in program.graph_signature.user_inputs:
        same, frontier, rows = {name}, [name], []
        while frontier:
            for node in readers.get(frontier.pop(), []):
                target = str(node.target)
                source = node.args[0] if node.args else None
                if target in _SAME_VALUES and getattr(source, "name", None) in same:
                    if integer(node) and node.name not in same:
                        same.add(node.name)
                        frontier.append(node.name)
                elif target in _EMBEDDINGS and getattr(node.args[1], "name", None) in same:
                    table = node.args[0].meta.get("val")
                    if isinstance(table, torch.Tensor) and isinstance(table.shape[0], int):
                        rows.append(int(table.shape[0]))
        if rows:
            ranges[name] = [0, min(rows) - 1]
    return ranges


Specs = tuple[DenseProgram, list[TensorSpec], list[TensorSpec]]


def dense_from_exported(program: torch.export.ExportedProgram) -> Specs:
    """A DenseProgram over a ``torch.export`` program (ops checked, batch made dynamic), with
    its input and output specs."""
    check_graph_ops(program)
    program = dynamic_batch(program)
    inputs = list(program.graph_signature.user_inputs)
    values = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    specs = [_tensor_spec(name, values[name], "input") for name in inputs]
    out_node = next(n for n in program.graph.nodes if n.op == "output")
    leaves, _ = tree_flatten(out_node.args[0])
    outputs = _output_names(program, len(leaves))
    out_specs = [
        _tensor_spec(n, v.meta.get("val"), "output") for n, v in zip(outputs, leaves, strict=True)
    ]
    module = DenseProgram(program.module(), inputs, outputs, exported=program)
    model = torch_to_onnx(program, (), inputs, outputs, opset=OPSET)
    name_first_axis(model, BATCH_AXIS)  # torch's symbol for the dynamic batch (s77) renamed
    module.onnx_models["fp32"] = model.SerializeToString()
    return module, specs, out_specs


# ---- ONNX sources -------------------------------------------------------------------------


def _onnx_spec(value: onnx.ValueInfoProto, needs_shape: bool = False) -> TensorSpec:
    tensor = value.type.tensor_type
    dtype = ONNX_DTYPES.get(tensor.elem_type)
    if dtype is None:
        raise ConversionError(
            f"ONNX tensor {value.name!r}: element type {tensor.elem_type} is not supported"
        )
    if needs_shape and not tensor.HasField("shape"):
        raise ConversionError(
            f"ONNX tensor {value.name!r} has no shape (not even its rank): export the model "
            "with one (a name such as 'batch' for an axis of any size)"
        )
    shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    return TensorSpec(value.name, shape, dtype)


def dense_from_onnx(model: onnx.ModelProto) -> Specs:
    """A DenseProgram over an ONNX model (no torch face: ONNX Runtime and TensorRT run it),
    with its input and output specs."""
    check_self_contained(model, "the ONNX model")
    initializers = {t.name for t in model.graph.initializer}
    inputs = [_onnx_spec(v, True) for v in model.graph.input if v.name not in initializers]
    outputs = [_onnx_spec(v) for v in model.graph.output]
    names = ([s.name for s in inputs], [s.name for s in outputs])
    module = DenseProgram(
        torch.nn.Identity(), *names, onnx_models={"fp32": model.SerializeToString()}
    )
    return module, inputs, outputs


# ---- calibration, int8, the deployable -----------------------------------------------------


def _calibration_inputs(
    calib: dict[str, np.ndarray], names: list[str], specs: list[TensorSpec]
) -> dict[str, np.ndarray]:
    if len(names) == 1 and names[0] not in calib and "x" in calib:
        calib = {names[0]: calib["x"], **{k: v for k, v in calib.items() if k != "x"}}
    missing = [n for n in names if n not in calib]
    if missing:
        raise ConversionError(f"calibration data lacks input {missing[0]!r} (has {sorted(calib)})")
    out = {}
    for spec in specs:
        array = np.asarray(calib[spec.name])
        if array.dtype.kind not in "fiub":
            raise ConversionError(f"calibration input {spec.name!r} is not numeric ({array.dtype})")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ConversionError(f"calibration input {spec.name!r} holds NaN or infinity")
        out[spec.name] = array.astype(spec.dtype)
    return out


def _ort_session(model: bytes) -> Any:
    """A CPU ONNX Runtime session of ``model``; ConversionError in one line if it cannot load
    (an operator of an unknown domain, a graph shape inference rejects)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # a failure is raised below as one line, not also logged
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own types (Fail, InvalidGraph, ...), multi-line
        raise ConversionError(f"ONNX Runtime cannot load the graph: {ort_message(exc)}") from exc


def _ort_outputs(
    model: bytes, inputs: dict[str, np.ndarray], names: list[str]
) -> dict[str, np.ndarray]:
    session = _ort_session(model)
    try:
        return dict(zip(names, session.run(names, inputs), strict=True))
    except Exception as exc:  # ORT raises its own types (Fail, InvalidArgument, ...), multi-line
        raise ConversionError(f"ONNX Runtime cannot run the graph: {ort_message(exc)}") from exc


def _labels(labels: Any, count: int, outputs: list[TensorSpec]) -> np.ndarray | None:
    """The calibration labels ``y`` (None: none), checked: ``count`` integers, each a class
    of the first output where its last axis is fixed (ConversionError otherwise: a label out of
    range scored accuracy 0, a NaN one dropped the check without a word)."""
    if labels is None:
        return None
    labels = np.asarray(labels)
    classes = outputs[0].shape[-1] if outputs and outputs[0].shape else -1
    top = f"[0, {classes})" if classes > 0 else "[0, ...)"
    if labels.shape != (count,) or labels.dtype.kind not in "iu":
        raise ConversionError(
            f"the calibration labels 'y' must be {count} integers in {top} (one per sample), "
            f"got {labels.dtype} {list(labels.shape)}"
        )
    if labels.size and (labels.min() < 0 or (classes > 0 and labels.max() >= classes)):
        raise ConversionError(
            f"the calibration labels 'y' must be in {top}, got {labels.min()}..{labels.max()}"
        )
    return labels


def _compare(
    reference: dict[str, np.ndarray], got: dict[str, np.ndarray], labels: np.ndarray | None
) -> dict[str, Any]:
    check: dict[str, Any] = {}
    for name, ref in reference.items():
        diff = np.abs(got[name].astype(np.float64) - ref.astype(np.float64))
        check[f"{name}_max_abs_diff"] = float(diff.max()) if diff.size else 0.0
    first = next(iter(reference))
    ref, out = reference[first], got[first]
    if ref.ndim == 2 and ref.shape[1] > 1:
        check["argmax_agreement"] = float((ref.argmax(-1) == out.argmax(-1)).mean())
        if labels is not None:  # checked (``_labels``)
            check["source_accuracy"] = float((ref.argmax(-1) == labels).mean())
            check["accuracy"] = float((out.argmax(-1) == labels).mean())
    return check


def _quantize_int8(model: bytes, calib: dict[str, np.ndarray], batch: int = 16) -> bytes:
    """ONNX Runtime static quantization (QDQ, per-channel weights) calibrated on ``calib``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            count = len(next(iter(calib.values())))
            self.batches = iter(
                [{k: v[i : i + batch] for k, v in calib.items()} for i in range(0, count, batch)]
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(model)
        try:
            quietly(
                quantize_static,
                str(source),
                str(target),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
            )
        except Exception as exc:
            first = first_line(exc)
            raise ConversionError(f"int8 quantization failed: {first}") from exc
        return target.read_bytes()


def convert_dense(
    source: torch.export.ExportedProgram | onnx.ModelProto,
    calib: dict[str, np.ndarray] | None = None,
    precision: str = "fp32",
) -> Deployable:
    """A ``dense`` Deployable of a trained network.

    source: a ``torch.export`` program or an ONNX model. calib: calibration inputs by name
    (``x`` for a single input; ``y``, when present, holds integer labels) for the accuracy
    check against the source and for int8. precision: "fp32", or "int8" to add ONNX
    Runtime's static QDQ quantization (needs ``calib``).
    """
    if precision not in ("fp32", "int8"):
        raise ConversionError(f"--precision must be fp32 or int8, got {precision!r}")
    if precision == "int8" and calib is None:
        raise ConversionError("int8 needs calibration data (--calib CALIB.npz)")
    exported = isinstance(source, torch.export.ExportedProgram)
    module, inputs, outputs = dense_from_exported(source) if exported else dense_from_onnx(source)
    report: dict[str, Any] = {}
    if calib is not None:
        x = _calibration_inputs(calib, module.input_names, inputs)
        labels = _labels(calib.get("y"), len(next(iter(x.values()))), outputs)
        fp32 = _ort_outputs(module.onnx_models["fp32"], x, module.output_names)
        if exported:
            with torch.no_grad():
                ref = module.run({k: torch.from_numpy(v) for k, v in x.items()})
            ref_np = {k: v.detach().numpy() for k, v in ref.items()}
            report["accuracy_check"] = {"onnx_vs_torch": _compare(ref_np, fp32, labels)}
        if precision == "int8":
            module.onnx_models["int8"] = _quantize_int8(module.onnx_models["fp32"], x)
            int8 = _ort_outputs(module.onnx_models["int8"], x, module.output_names)
            report.setdefault("accuracy_check", {})["int8_vs_fp32"] = _compare(fp32, int8, labels)
        report["calibration_samples"] = int(len(next(iter(x.values()))))
    else:  # nothing to run it on: at least check ONNX Runtime can load what the bundle holds
        _ort_session(module.onnx_models["fp32"])
    digest = hashlib.sha256(module.onnx_models["fp32"]).hexdigest()
    manifest = Manifest(
        kind="dense",
        architecture=ARCHITECTURE_EXPORTED if exported else ARCHITECTURE_ONNX,
        inputs=inputs,
        outputs=outputs,
        report=report,
        max_batch=batch_bound(module.exported) if exported else None,
        value_ranges=embedding_ranges(module.exported) if exported else {},
        provenance={
            "converter": "ganglion.converters.dense",
            "source_onnx_sha256": digest,
            "precisions": sorted(module.onnx_models),
            "opset": OPSET,
        },
    )
    config = {"input_names": module.input_names, "output_names": module.output_names}
    return Deployable(module, manifest, config)

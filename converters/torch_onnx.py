"""torch -> ONNX, one way for every program: self-contained (no external data file), at opset
18, with dynamic axes, checked against torch before it is kept.

A module is first exported with torch's TorchScript-based exporter (milliseconds), then the
graph is run on ONNX Runtime on a second batch size and compared with torch; if that exporter
fails, or the graph disagrees (a shape baked in by tracing), torch's ``dynamo`` exporter
(seconds, but exact about dynamic shapes) makes it instead. ``torch.export`` programs always
go through the ``dynamo`` exporter.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import onnx
import torch
from torch.utils._pytree import tree_flatten

from ganglion.converters.onnx_file import check_self_contained
from ganglion.models.errors import ConversionError, first_line

MIN_OPSET = 18  # the dynamo exporter's floor; the TorchScript exporter writes it too
AGREEMENT_ATOL = 1e-4


def quietly(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` with exporters' progress prints, warnings and logs hidden (torch's C++ side
    prints its IR to the process's stdout at some opsets, so file descriptor 1 is silenced
    too)."""
    loggers = [logging.getLogger(), logging.getLogger("torch")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            _silenced_fd(1),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


@contextlib.contextmanager
def _silenced_fd(fd: int) -> Iterator[None]:
    """File descriptor ``fd`` points at the null device inside the block."""
    sys.stdout.flush()
    saved = os.dup(fd)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(null)


def _axes(dynamic_shapes: Any, input_names: Sequence[str]) -> list[dict[int, str]]:
    """Per flattened input: axis -> name, from ``dynamic_shapes`` ({axis: Dim} per input)."""
    specs, _ = tree_flatten(dynamic_shapes, is_leaf=lambda x: isinstance(x, dict))
    specs = specs or [{}] * len(input_names)
    return [{axis: dim.__name__ for axis, dim in (spec or {}).items()} for spec in specs]


def _second_batch(args: tuple[Any, ...], axes: list[dict[int, str]]) -> tuple[Any, ...]:
    """``args`` with one more sample on every batch axis (axis 0 named like the first input's)."""
    leaves, spec = tree_flatten(args)
    batch = axes[0].get(0) if axes else None
    grown = [
        torch.cat([a, a[:1]]) if isinstance(a, torch.Tensor) and ax.get(0) == batch else a
        for a, ax in zip(leaves, axes, strict=False)
    ]
    return spec.unflatten(grown + leaves[len(grown) :])


def _agrees(
    model: onnx.ModelProto, module: torch.nn.Module, args: tuple[Any, ...], names: Sequence[str]
) -> bool:
    """The ONNX graph gives torch's outputs on ``args`` (within AGREEMENT_ATOL)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    leaves, _ = tree_flatten(args)
    feeds = {n: t.numpy() for n, t in zip(names, leaves, strict=True)}
    with torch.no_grad():
        expected, _ = tree_flatten(module(*args))
    try:
        got = session.run(None, feeds)
    except Exception:  # noqa: BLE001 - the graph refuses these inputs (a size fixed in it)
        return False
    return len(got) == len(expected) and all(
        g.shape == tuple(e.shape)
        and np.allclose(g, e.numpy(), atol=AGREEMENT_ATOL, rtol=1e-4, equal_nan=True)
        for g, e in zip(got, expected, strict=True)
    )


def _torchscript(
    module: torch.nn.Module,
    args: tuple[Any, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    axes: list[dict[int, str]],
    opset: int,
) -> onnx.ModelProto | None:
    dynamic = {n: a for n, a in zip(input_names, axes, strict=False) if a}
    batch = axes[0].get(0, "batch") if axes else "batch"
    for out in output_names:  # a state output mirrors its input; others share the batch axis
        mirror = out.replace("state_out.", "state_in.")
        dynamic[out] = dynamic.get(mirror) or {0: batch}
    buffer = io.BytesIO()
    try:
        with torch.no_grad():
            quietly(
                torch.onnx.export,
                module,
                args,
                buffer,
                dynamo=False,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=dynamic,
                opset_version=max(opset, MIN_OPSET),
            )
        model = onnx.load_from_string(buffer.getvalue())
        if _agrees(model, module, _second_batch(args, axes), input_names):
            return model
    except Exception:  # noqa: BLE001 - any failure means: use the dynamo exporter instead
        return None
    return None


def torch_to_onnx(
    model: torch.nn.Module | torch.export.ExportedProgram,
    args: tuple[Any, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_shapes: Any = None,
    opset: int = MIN_OPSET,
) -> onnx.ModelProto:
    """The ONNX model of ``model`` called on ``args``; ConversionError naming the first reason
    the exporters give when neither can."""
    if isinstance(model, torch.nn.Module):
        axes = _axes(dynamic_shapes, input_names)
        fast = _torchscript(model.eval(), args, input_names, output_names, axes, opset)
        if fast is not None:
            check_self_contained(fast, "the exported ONNX graph")
            return fast
    try:
        program = quietly(
            torch.onnx.export,
            model,
            args,
            dynamo=True,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_shapes=dynamic_shapes,
            opset_version=max(opset, MIN_OPSET),
            external_data=False,
        )
    except Exception as exc:
        first = first_line(exc)
        raise ConversionError(f"the network does not export to ONNX: {first}") from exc
    check_self_contained(program.model_proto, "the exported ONNX graph")
    axes = _axes(dynamic_shapes, input_names)
    if axes and axes[0].get(0) is not None:  # a dynamic batch: the graph must take another
        module = model if isinstance(model, torch.nn.Module) else model.module()
        try:
            agrees = _agrees(program.model_proto, module, _second_batch(args, axes), input_names)
        except Exception as exc:  # ONNX Runtime refuses the graph itself
            first = first_line(exc)
            raise ConversionError(f"ONNX Runtime cannot run the exported graph: {first}") from exc
        if not agrees:
            raise ConversionError(
                "the exported ONNX graph does not give torch's outputs at another batch size "
                "(the exporter fixed a size the program declares dynamic)"
            )
        name_first_axis(program.model_proto, axes[0][0])
    return program.model_proto


def name_first_axis(model: onnx.ModelProto, name: str) -> None:
    """Rename the symbol the dynamo exporter gave the first input's first axis (``s77``) to
    ``name`` wherever the graph's inputs, outputs and value infos use it, as the TorchScript
    exporter names it: a peer reading the graph sees ``batch``."""
    graph = model.graph
    first = graph.input[0].type.tensor_type.shape.dim if graph.input else []
    symbol = first[0].dim_param if first else ""
    if not symbol or symbol == name:
        return
    for value in (*graph.input, *graph.output, *graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == symbol:
                dim.dim_param = name

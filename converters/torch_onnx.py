"""torch -> ONNX, one way for every program: torch's exporter (``dynamo=True``), quietly,
self-contained (no external data file), at opset 18 or later."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import onnx
import torch

from ganglion.converters.onnx_file import check_self_contained
from ganglion.models.errors import ConversionError

MIN_OPSET = 18  # the exporter's own floor


def quietly(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` with exporters' progress prints, warnings and logs hidden."""
    loggers = [logging.getLogger(), logging.getLogger("torch")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


def torch_to_onnx(
    model: torch.nn.Module | torch.export.ExportedProgram,
    args: tuple[Any, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_shapes: Any = None,
    opset: int = MIN_OPSET,
) -> onnx.ModelProto:
    """The ONNX model of ``model`` called on ``args``; ConversionError naming the first reason
    the exporter gives when it cannot."""
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
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(f"the network does not export to ONNX: {first}") from exc
    check_self_contained(program.model_proto, "the exported ONNX graph")
    return program.model_proto

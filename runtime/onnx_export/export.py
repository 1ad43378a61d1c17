"""Export a Deployable to ONNX through its kind's ONNX face, check it, write it, read it back.

A kind's ONNX face (``ProgramKind.onnx_face``) builds the step graph and, where the kind has a
parallel form, the whole-sequence graph (``None`` otherwise). Graph inputs and outputs are
named after the manifest's tensors (``naming``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import onnx

from ganglion.converters.onnx_file import check_no_nan, check_self_contained
from ganglion.models.deployable import Deployable
from ganglion.models.errors import BackendUnavailable, BundleError
from ganglion.runtime.atomic import atomic_file
from ganglion.runtime.kinds import kind_of
from ganglion.runtime.onnx_export import naming
from ganglion.runtime.program import Program

GRAPHS = ("step", "sequence")


class OnnxFace(Protocol):
    """The ONNX graphs of one program."""

    def step_graph(self, opset: int) -> onnx.ModelProto:
        """One timestep or token with explicit state (the whole program when it has no steps)."""

    def sequence_graph(self, opset: int) -> onnx.ModelProto | None:
        """The whole input at once (the kind's parallel form), or None."""


def onnx_face(deployable: Deployable) -> OnnxFace:
    """The ONNX face of ``deployable``, or BundleError saying why it has none."""
    return kind_of(deployable.manifest).onnx_face(deployable)


def check_opset(opset: int) -> int:
    """``opset`` if Ganglion's graphs can be written at it, else BundleError."""
    newest = onnx.defs.onnx_opset_version()
    if not naming.MIN_OPSET <= opset <= newest:
        raise BundleError(f"--opset must be in [{naming.MIN_OPSET}, {newest}], got {opset}")
    return opset


def export_graph(
    deployable: Deployable, graph: str = "step", opset: int = naming.DEFAULT_OPSET
) -> onnx.ModelProto | None:
    """The program's ``graph`` ("step" or "sequence") at ``opset``, checked with full checks;
    None when the program has no such graph."""
    if graph not in GRAPHS:
        raise BundleError(f"--graph must be one of {GRAPHS}, got {graph!r}")
    face = onnx_face(deployable)
    check_opset(opset)
    model = face.step_graph(opset) if graph == "step" else face.sequence_graph(opset)
    if model is not None:
        onnx.checker.check_model(model, full_check=True)
    return model


def graph_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset ``model`` is written at."""
    versions = (o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return next(versions, naming.DEFAULT_OPSET)


def write_onnx(
    deployable: Deployable, path: Path, graph: str, opset: int | None, force: bool = False
) -> int:
    """Write the program's ``graph`` to ``path`` atomically and return the opset written
    (BundleError if it has none; an existing file is replaced only with ``force``). Without
    ``opset``, the graph as made (a dense program's stays at its exporter's opset); asked for
    another opset than it is made at, the graph is converted, or refused with nothing written
    when it does not convert."""
    model = export_graph(deployable, graph, naming.DEFAULT_OPSET if opset is None else opset)
    if model is None:
        raise BundleError(f"this {deployable.manifest.kind} program has no ONNX {graph} graph")
    made = graph_opset(model)
    if opset is not None and made != opset:
        from onnx import version_converter

        try:
            model = version_converter.convert_version(model, opset)
            onnx.checker.check_model(model, full_check=True)
        except Exception as exc:  # the converter asserts in C++ with its source location
            reason = str(exc).strip().splitlines()[0].split("failed: ")[-1] if str(exc) else ""
            raise BundleError(
                f"--opset {opset}: this program's {graph} graph is made at opset {made} and "
                f"does not convert to {opset} ({reason or type(exc).__name__})"
            ) from exc
    with atomic_file(path, force) as tmp:
        onnx.save_model(model, str(tmp))
    return made if opset is None else opset


def write_bundle_graph(deployable: Deployable, path: Path, graph: str) -> None:
    """Bundle writer: ``graph`` at the default opset (or the opset a dense program's graph is
    made at), recorded in the manifest's provenance; writes nothing for a program without
    that graph."""
    model = export_graph(deployable, graph, naming.DEFAULT_OPSET)
    if model is None:
        return
    onnx.save_model(model, str(path))
    record = deployable.manifest.provenance.setdefault(
        "onnx", {"opset": graph_opset(model), "graphs": {}}
    )
    record["graphs"][graph] = naming.GRAPH_FILES[graph]


def checked_graph_file(program: Program, file_name: str) -> bytes:
    """The bytes of the bundle's ONNX file ``file_name`` (checksum verified at open), refused
    when a tensor refers to external data (it would read another file) or a float initializer
    holds NaN (as in weights.safetensors)."""
    data = program.artifact(file_name)
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's decode errors
        raise BundleError(f"{program.name}/{file_name}: not a readable ONNX model") from exc
    check_self_contained(model, f"{program.name}/{file_name}")  # reads no other file
    check_no_nan(model, f"{program.name}/{file_name}")
    return data


def bundle_graph(program: Program, graph: str, required: bool = True) -> bytes | None:
    """Serialized ``graph`` from the bundle when it holds one (checksum verified at open; a
    tensor referring to external data, or a float initializer holding NaN as in
    weights.safetensors, refused), else exported in memory for an in-memory program; None (or
    BackendUnavailable when ``required``) when the program has none."""
    file_name = naming.GRAPH_FILES[graph]
    if program.has_artifact(file_name):
        return checked_graph_file(program, file_name)
    model = None
    if program.folder is None:
        try:
            model = export_graph(program.deployable(), graph)
        except BundleError as exc:
            raise BackendUnavailable(str(exc)) from exc
    if model is None and required:
        raise BackendUnavailable(f"{program.name}: the program has no ONNX {graph} graph")
    return None if model is None else model.SerializeToString()

"""Export a Deployable to ONNX: the registry of program kinds, checking, and bundle writers.

Each program kind registers a factory of its ONNX face (``OnnxProgram``): the step graph,
the whole-sequence graph and the host-side input preparation both graphs expect. Later
program kinds add theirs to ``ONNX_PROGRAMS``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx

from ganglion.models.deployable import Deployable
from ganglion.models.errors import BundleError
from ganglion.runtime.onnx_export import naming
from ganglion.runtime.onnx_export.spiking import SpikingOnnx

GRAPHS = ("step", "sequence")


class OnnxProgram(Protocol):
    """The ONNX face of a program kind."""

    state_names: list[str]

    @property
    def batch_axis(self) -> int:
        """The batch axis of ``Session.run``'s input."""

    def step_graph(self, opset: int) -> onnx.ModelProto:
        """One timestep or token with explicit state."""

    def sequence_graph(self, opset: int) -> onnx.ModelProto:
        """The whole input at once (the kind's parallel form)."""

    def step_input(self, x_t: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
        """The step graph's ``input`` for the session's raw input ``x_t`` in ``state``."""

    def sequence_input(self, x: np.ndarray) -> np.ndarray:
        """The sequence graph's ``input`` for ``Session.run``'s input."""

    def step_inputs(self, x: np.ndarray) -> list[np.ndarray]:
        """``Session.run``'s input as the raw inputs of repeated ``step`` calls."""

    def collect(self, outputs: list[np.ndarray]) -> np.ndarray:
        """``Session.run``'s output from the outputs of repeated ``step`` calls."""


ONNX_PROGRAMS: dict[str, Callable[[Deployable], OnnxProgram]] = {"spiking": SpikingOnnx}


def unexportable_reason(deployable: Deployable) -> str | None:
    """Why ``deployable`` has no ONNX form (its kind or numerics), or None when it has one."""
    manifest = deployable.manifest
    if manifest.kind not in ONNX_PROGRAMS:
        return (
            f"no ONNX export for {manifest.kind!r} programs; exportable kinds: "
            f"{', '.join(sorted(ONNX_PROGRAMS))}"
        )
    if manifest.numerics != "float32":
        return f"no ONNX export for {manifest.numerics!r} numerics (float32 programs only)"
    return None


def onnx_program(deployable: Deployable) -> OnnxProgram:
    """The ONNX face of ``deployable``, or BundleError saying why it has none."""
    reason = unexportable_reason(deployable)
    if reason is not None:
        raise BundleError(reason)
    return ONNX_PROGRAMS[deployable.manifest.kind](deployable)


def check_opset(opset: int) -> int:
    """``opset`` if Ganglion's graphs can be written at it, else BundleError."""
    newest = onnx.defs.onnx_opset_version()
    if not naming.MIN_OPSET <= opset <= newest:
        raise BundleError(f"--opset must be in [{naming.MIN_OPSET}, {newest}], got {opset}")
    return opset


def export_graph(
    deployable: Deployable, graph: str = "step", opset: int = naming.DEFAULT_OPSET
) -> onnx.ModelProto:
    """The program's ``graph`` ("step" or "sequence") at ``opset``, checked with full checks."""
    if graph not in GRAPHS:
        raise BundleError(f"--graph must be one of {GRAPHS}, got {graph!r}")
    program = onnx_program(deployable)
    check_opset(opset)
    model = program.step_graph(opset) if graph == "step" else program.sequence_graph(opset)
    onnx.checker.check_model(model, full_check=True)
    return model


def write_onnx(deployable: Deployable, path: Path, graph: str, opset: int) -> None:
    """Write the program's ``graph`` at ``opset`` to ``path``."""
    onnx.save_model(export_graph(deployable, graph, opset), str(path))


def onnx_provenance(opset: int, graphs: list[str]) -> dict[str, object]:
    """What the manifest records about a bundle's ONNX graphs (``provenance["onnx"]``)."""
    return {
        "opset": opset,
        "graphs": {g: naming.GRAPH_FILES[g] for g in graphs},
        "inputs": f"{naming.INPUT} (encoded), {naming.STATE_IN_PREFIX}<state>",
        "outputs": f"{naming.OUTPUT}, {naming.STATE_OUT_PREFIX}<state>",
    }


def write_bundle_graph(deployable: Deployable, path: Path, graph: str) -> None:
    """Bundle writer: ``graph`` at the default opset, recorded in the manifest's provenance;
    writes nothing for a program without an ONNX form (e.g. Loihi fixed-point numerics)."""
    if unexportable_reason(deployable) is not None:
        return
    write_onnx(deployable, path, graph, naming.DEFAULT_OPSET)
    record = deployable.manifest.provenance.setdefault(
        "onnx", onnx_provenance(naming.DEFAULT_OPSET, [])
    )
    record["graphs"][graph] = naming.GRAPH_FILES[graph]


def read_bundle_graph(deployable: Deployable, folder: Path | None, graph: str) -> bytes:
    """Serialized ``graph`` from the bundle when it holds one (checksum verified at load),
    else exported in memory (an in-memory program, or a bundle written before ONNX export)."""
    file_name = naming.GRAPH_FILES[graph]
    if folder is not None and file_name in deployable.manifest.artifacts:
        return (folder / file_name).read_bytes()
    return export_graph(deployable, graph).SerializeToString()

"""ONNX graphs of Ganglion programs: the step graph and the whole-sequence graph.

Naming convention: ``ganglion.runtime.onnx_export.naming``. ``onnx`` itself is imported only when a
graph is built (``ganglion.runtime.onnx_export.export``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ganglion.models.deployable import Deployable
from ganglion.runtime.onnx_export.naming import SEQUENCE_FILE, STEP_FILE


def _bundle_writer(graph: str) -> Callable[[Deployable, Path], None]:
    def write(deployable: Deployable, path: Path) -> None:
        from ganglion.runtime.onnx_export.export import write_bundle_graph

        write_bundle_graph(deployable, path, graph)

    return write


def onnx_artifact_writers() -> dict[str, Callable[[Deployable, Path], None]]:
    """Bundle artifact writers of the step graph (model.onnx) and the sequence graph."""
    return {STEP_FILE: _bundle_writer("step"), SEQUENCE_FILE: _bundle_writer("sequence")}

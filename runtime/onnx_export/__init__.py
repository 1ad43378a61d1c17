"""ONNX graphs of Ganglion programs: the step graph and the whole-sequence graph.

Naming convention: ``ganglion.runtime.onnx_export.naming``. ``onnx`` itself is imported only when a
graph is built (``ganglion.runtime.onnx_export.export``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ganglion.models.deployable import Deployable
from ganglion.runtime.onnx_export.naming import GRAPH_FILES


def _bundle_writer(graph: str) -> Callable[[Deployable, Path], None]:
    def write(deployable: Deployable, path: Path) -> None:
        from ganglion.runtime.onnx_export.export import write_bundle_graph

        write_bundle_graph(deployable, path, graph)

    return write


def onnx_artifact_writers(
    graphs: tuple[str, ...] = ("step", "sequence"),
) -> dict[str, Callable[[Deployable, Path], None]]:
    """Bundle artifact writers of the step graph (model.onnx) and the sequence graph."""
    return {GRAPH_FILES[g]: _bundle_writer(g) for g in graphs}

"""``ganglion import-nir`` and ``ganglion export``: NIR graphs in and out of bundles."""

from __future__ import annotations

from pathlib import Path

import typer

from ganglion.models.errors import BundleError
from ganglion.models.manifest import DEFAULT_DT
from ganglion.runtime.atomic import atomic_file, check_target
from ganglion.runtime.onnx_export.naming import DEFAULT_OPSET


def import_nir(
    graph: Path = typer.Argument(..., help="NIR graph (HDF5), e.g. from snnTorch's export_to_nir."),
    output: Path = typer.Option(..., "-o", "--output", help="Bundle folder (or .tar) to write."),
    dt: float = typer.Option(DEFAULT_DT, "--dt", help="Seconds per timestep used to discretize."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle at -o."),
) -> None:
    """Import an NIR graph as a spiking bundle (inputs time-major [T, batch, ...])."""
    from ganglion.converters.nir_program import import_nir_program
    from ganglion.runtime.bundle import save_bundle

    check_target(output, force)
    deployable = import_nir_program(graph, dt)
    typer.echo(f"bundle written to {save_bundle(deployable, output, force)}")


def export(
    bundle: Path = typer.Argument(..., help="Bundle folder or .tar."),
    nir: Path | None = typer.Option(
        None, "--nir", help="Write the spiking graph to this NIR file."
    ),
    onnx: Path | None = typer.Option(None, "--onnx", help="Write an ONNX graph to this file."),
    force: bool = typer.Option(False, "--force", help="Replace existing output files."),
    graph: str = typer.Option("step", "--graph", help="ONNX graph: step | sequence."),
    opset: int = typer.Option(DEFAULT_OPSET, "--opset", help="ONNX opset of the graph."),
) -> None:
    """Export a bundle's program to an interchange format (NIR, ONNX)."""
    if nir is None and onnx is None:
        raise BundleError("nothing to export: give --nir OUT.nir and/or --onnx OUT.onnx")
    for path in (nir, onnx):
        if path is not None:
            check_target(path, force)
            if bundle.is_dir() and path.resolve().parent == bundle.resolve():
                raise BundleError(f"{path} is inside the bundle; write exports elsewhere")
    from ganglion.converters.nir_graph import write_nir
    from ganglion.runtime.bundle import load_bundle

    deployable = load_bundle(bundle)
    if nir is not None:
        if deployable.manifest.kind != "spiking":
            raise BundleError(
                f"--nir needs a spiking program, this bundle is {deployable.manifest.kind!r}"
            )
        with atomic_file(nir, force) as tmp:
            write_nir(deployable.module.graph, tmp, deployable.manifest.time.dt)
        typer.echo(f"NIR graph written to {nir}")
    if onnx is not None:
        from ganglion.runtime.onnx_export.export import write_onnx

        write_onnx(deployable, onnx, graph, opset, force)
        typer.echo(f"ONNX {graph} graph (opset {opset}) written to {onnx}")


def register(app: typer.Typer) -> None:
    """Add ``import-nir`` and ``export`` to the CLI."""
    app.command("import-nir")(import_nir)
    app.command("export")(export)

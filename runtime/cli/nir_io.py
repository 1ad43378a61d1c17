"""``ganglion import-nir`` and ``ganglion export``: NIR graphs in and out of bundles."""

from __future__ import annotations

from pathlib import Path

import typer

from ganglion.converters.nir_graph import DEFAULT_DT, read_nir, write_nir
from ganglion.converters.spiking import spiking_manifest
from ganglion.models.deployable import Deployable
from ganglion.models.errors import BundleError
from ganglion.models.manifest import TimeSemantics
from ganglion.models.spiking.network import SpikingNetwork
from ganglion.runtime.bundle import load_bundle, save_bundle, sha256_file
from ganglion.runtime.onnx_export.naming import DEFAULT_OPSET


def import_nir(
    graph: Path = typer.Argument(..., help="NIR graph (HDF5), e.g. from snnTorch's export_to_nir."),
    output: Path = typer.Option(..., "-o", "--output", help="Bundle folder (or .tar) to write."),
    dt: float = typer.Option(DEFAULT_DT, "--dt", help="Seconds per timestep used to discretize."),
) -> None:
    """Import an NIR graph as a spiking bundle (inputs time-major [T, batch, ...])."""
    spiking_graph = read_nir(graph, dt)
    time = TimeSemantics(timesteps=1, dt=dt, encoding="none", decoding="none")
    manifest = spiking_manifest(spiking_graph, time)
    manifest.provenance = {
        "source_file": graph.name,
        "source_sha256": sha256_file(graph),
        "converter": "ganglion.converters.nir_graph",
        "dt": dt,
    }
    deployable = Deployable(
        SpikingNetwork(spiking_graph, time), manifest, spiking_graph.to_config()
    )
    typer.echo(f"bundle written to {save_bundle(deployable, output)}")


def export(
    bundle: Path = typer.Argument(..., help="Bundle folder or .tar."),
    nir: Path | None = typer.Option(
        None, "--nir", help="Write the spiking graph to this NIR file."
    ),
    onnx: Path | None = typer.Option(None, "--onnx", help="Write an ONNX graph to this file."),
    graph: str = typer.Option("step", "--graph", help="ONNX graph: step | sequence."),
    opset: int = typer.Option(DEFAULT_OPSET, "--opset", help="ONNX opset of the graph."),
) -> None:
    """Export a bundle's program to an interchange format (NIR, ONNX)."""
    if nir is None and onnx is None:
        raise BundleError("nothing to export: give --nir OUT.nir and/or --onnx OUT.onnx")
    deployable = load_bundle(bundle)
    if nir is not None:
        if deployable.manifest.kind != "spiking":
            raise BundleError(
                f"--nir needs a spiking program, this bundle is {deployable.manifest.kind!r}"
            )
        write_nir(deployable.module.graph, nir, deployable.manifest.time.dt)
        typer.echo(f"NIR graph written to {nir}")
    if onnx is not None:
        from ganglion.runtime.onnx_export.export import write_onnx

        write_onnx(deployable, onnx, graph, opset)
        typer.echo(f"ONNX {graph} graph (opset {opset}) written to {onnx}")


def register(app: typer.Typer) -> None:
    """Add ``import-nir`` and ``export`` to the CLI."""
    app.command("import-nir")(import_nir)
    app.command("export")(export)

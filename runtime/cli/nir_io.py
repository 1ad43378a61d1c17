"""``ganglion import-nir`` and ``ganglion export``: NIR graphs in and out of bundles."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ganglion.models.errors import BundleError, NIRError, first_line
from ganglion.runtime.atomic import atomic_file, check_target
from ganglion.runtime.onnx_export.naming import DEFAULT_OPSET

if TYPE_CHECKING:
    from ganglion.models.deployable import Deployable

LIKE_HELP = (
    "Simulation conventions of the graph's writer: nir|snntorch|norse|sinabs|spikingjelly|lava."
)


def import_nir(
    graph: Path = typer.Argument(..., help="NIR graph (HDF5), e.g. from snnTorch's export_to_nir."),
    output: Path = typer.Option(..., "-o", "--output", help="Bundle folder (or .tar) to write."),
    like: str = typer.Option("nir", "--like", help=LIKE_HELP),
    dt: float | None = typer.Option(None, "--dt", help="Seconds per timestep (default: --like's)."),
    decay: str | None = typer.Option(None, "--decay", help="euler | exact (exp(-dt/tau))."),
    reset: str | None = typer.Option(None, "--reset", help="zero | subtract."),
    reset_delay: int | None = typer.Option(
        None, "--reset-delay", help="1: reset lands a step late."
    ),
    fire: str | None = typer.Option(
        None, "--fire", help="gt (v > threshold) | ge (v >= threshold)."
    ),
    v_init: str | None = typer.Option(None, "--v-init", help="zero | leak | reset."),
    spikes_per_step: str | None = typer.Option(None, "--spikes-per-step", help="one | many."),
    synaptic_delay: int | None = typer.Option(None, "--synaptic-delay", help="0 | 1 step."),
    lower_bound: str | None = typer.Option(None, "--lower-bound", help="none | threshold."),
    synaptic_input: str | None = typer.Option(None, "--synaptic-input", help="euler | jump."),
    no_type_check: bool = typer.Option(False, "--no-type-check", help="Skip nir's type check."),
    force_dt: bool = typer.Option(False, "--force-dt", help="Keep an Euler decay outside [0, 1]."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle at -o."),
) -> None:
    """Import an NIR graph as a spiking bundle: inputs time-major [T, batch, ...], unless the
    graph says how it runs (Ganglion's exports: its T, encoding and decoding are kept)."""
    from ganglion.converters.nir_program import import_nir_program, silence_warning
    from ganglion.converters.nir_semantics import semantics_for
    from ganglion.runtime.bundle import save_bundle

    check_target(output, force, reads=(graph,))
    semantics = semantics_for(
        like,
        dt=dt,
        decay=decay,
        reset=reset,
        reset_delay=reset_delay,
        fire=fire,
        v_init=v_init,
        spikes_per_step=spikes_per_step,
        synaptic_delay=synaptic_delay,
        lower_bound=lower_bound,
        synaptic_input=synaptic_input,
    )
    deployable = import_nir_program(
        graph, dt=dt, semantics=semantics, type_check=not no_type_check, force=force_dt
    )
    try:
        warning = silence_warning(deployable)  # runs the program once on a probe
    except RuntimeError as exc:  # torch's shape errors: layers that do not fit together
        raise NIRError(
            f"{graph}: the graph does not run ({first_line(exc, 160)}); its layers' shapes "
            "disagree (import without --no-type-check to have them checked)"
        ) from exc
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"bundle written to {save_bundle(deployable, output, force)}")


def export(
    bundle: Path = typer.Argument(..., help="Bundle folder or .tar."),
    nir: Path | None = typer.Option(
        None,
        "--nir",
        help="Write the spiking graph (SpikeGPT: LIFs, projections) to this NIR file.",
    ),
    onnx: Path | None = typer.Option(None, "--onnx", help="Write an ONNX graph to this file."),
    force: bool = typer.Option(False, "--force", help="Replace existing output files."),
    graph: str = typer.Option("step", "--graph", help="ONNX graph: step | sequence."),
    opset: int | None = typer.Option(
        None,
        "--opset",
        help=f"ONNX opset of the graph (default: {DEFAULT_OPSET}, or the opset a stored graph "
        "was made at).",
    ),
) -> None:
    """Export a bundle's program to an interchange format (NIR, ONNX)."""
    if nir is None and onnx is None:
        raise BundleError("nothing to export: give --nir OUT.nir and/or --onnx OUT.onnx")
    if nir is not None and onnx is not None and nir.resolve() == onnx.resolve():
        raise BundleError(f"--nir and --onnx both name {nir}; give each its own file")
    for path in (nir, onnx):
        if path is not None:
            check_target(path, force, reads=(bundle,))
            if bundle.is_dir() and path.resolve().parent == bundle.resolve():
                raise BundleError(f"{path} is inside the bundle; write exports elsewhere")
    from ganglion.converters.nir_graph import write_nir
    from ganglion.runtime.bundle import load_bundle
    from ganglion.runtime.kinds.spiking import SpikingKind, nir_time

    deployable = load_bundle(bundle)
    if nir is not None and deployable.manifest.kind == "sequence":
        _export_sequence_nir(deployable, nir, force)
    elif nir is not None:
        if deployable.manifest.kind != "spiking":
            raise BundleError(
                f"--nir needs a spiking program, this bundle is {deployable.manifest.kind!r}"
            )
        SpikingKind.check_nir_export(deployable)
        time = deployable.manifest.time
        with atomic_file(nir, force) as tmp:
            write_nir(
                deployable.module.graph,
                tmp,
                time.dt,
                time.semantics.get("dt_leaky"),
                nir_time(deployable.manifest),
            )
        typer.echo(f"NIR graph written to {nir}")
    if onnx is not None:
        from ganglion.runtime.onnx_export.export import write_onnx

        written = write_onnx(deployable, onnx, graph, opset, force)
        typer.echo(f"ONNX {graph} graph (opset {written}) written to {onnx}")


def _export_sequence_nir(deployable: Deployable, path: Path, force: bool) -> None:
    """A SpikeGPT bundle's LIF neurons and projections as NIR (other token models: refused)."""
    import nir as nir_format

    from ganglion.converters.spikegpt_nir import outside_parts, spikegpt_to_nir

    graph = spikegpt_to_nir(deployable.module)  # one-line BundleError for non-spiking models
    with atomic_file(path, force) as tmp:
        nir_format.write(str(tmp), graph)
    parts = outside_parts(graph)
    typer.echo(
        f"NIR graph of the LIF neurons and projections written to {path}; "
        f"{len(parts)} parts outside NIR (WKV, LayerNorm, token shift, ...) are its boundary, "
        "listed in the graph's metadata"
    )


def register(app: typer.Typer) -> None:
    """Add ``import-nir`` and ``export`` to the CLI."""
    app.command("import-nir")(import_nir)
    app.command("export")(export)

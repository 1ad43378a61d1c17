"""``ganglion run``: a bundle on a backend, arrays in (.npy/.npz), arrays out (.npy/.npz)."""

from __future__ import annotations

from pathlib import Path

import typer

from ganglion.models.errors import OptionError, ShapeError
from ganglion.models.events.program_input import program_frames, read_event_input
from ganglion.runtime.cli.arrays import (
    check_output_path,
    describe_outputs,
    input_paths,
    load_calibration,
    read_inputs,
    write_outputs,
)
from ganglion.runtime.session import load


def run(
    bundle: Path = typer.Argument(..., help="Bundle folder or .tar."),
    inputs: list[str] = typer.Option(
        ...,
        "--input",
        help="IN.npy (one input), IN.npz (inputs by name) or NAME=IN.npy (repeat); shaped as "
        "`ganglion inspect` states. A program with input encoding 'events' also takes an event "
        "stream: a structured .npy/.npz (x, y, t in µs, p), .aedat4, .raw (EVT2/EVT3) or .dat.",
    ),
    output: Path = typer.Option(
        ..., "--output", help="OUT.npy (one output) or OUT.npz (outputs by name)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file."),
    allow_nonfinite: bool = typer.Option(
        False, "--allow-nonfinite", help="Pass NaN and infinity through instead of refusing them."
    ),
    backend: str = typer.Option("torch", "--backend", help="torch | onnxruntime | tensorrt | lava"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda | loihi2 (lava)"),
    providers: str | None = typer.Option(
        None, "--providers", help="onnxruntime: providers in order, e.g. tensorrt,cuda,cpu."
    ),
    threads: int | None = typer.Option(None, "--threads", help="onnxruntime: intra-op threads."),
    precision: str | None = typer.Option(
        None, "--precision", help="tensorrt: fp32 (default) | fp16 | int8 | auto."
    ),
    calib: Path | None = typer.Option(
        None, "--calib", help="tensorrt int8: calibration .npz (array x shaped like --input)."
    ),
    max_batch: int | None = typer.Option(None, "--max-batch", help="tensorrt: largest batch."),
    workspace_mb: int | None = typer.Option(None, "--workspace-mb", help="tensorrt: workspace."),
    dla_core: int | None = typer.Option(None, "--dla-core", help="tensorrt: Jetson DLA core."),
    engine_cache: Path | None = typer.Option(
        None, "--engine-cache", help="tensorrt: engine cache folder."
    ),
    lava_precision: str | None = typer.Option(
        None,
        "--lava-precision",
        help="lava: fixed_pt (default for loihi2-fixed bundles) | floating_pt (default otherwise).",
    ),
) -> None:
    """Run a bundle on input arrays, or on an event stream, and save the outputs."""
    events = read_event_input(inputs)  # an event file or structured (x, y, t, p) array
    x = read_inputs(inputs) if events is None else None
    flags = {
        "providers": providers,
        "threads": threads,
        "precision": precision,
        "max_batch": max_batch,
        "workspace_mb": workspace_mb,
        "dla_core": dla_core,
        "engine_cache": engine_cache,
    }
    options: dict[str, object] = {k: v for k, v in flags.items() if v is not None}
    if calib is not None:
        options["calibration"] = load_calibration(calib)[0]
    if lava_precision is not None:
        if backend != "lava":
            raise OptionError(f"--lava-precision applies to --backend lava, not {backend}")
        options["precision"] = lava_precision
    check_output_path(output, force, reads=(bundle, calib, *input_paths(inputs)))
    session = load(
        bundle, backend=backend, device=device, allow_nonfinite=allow_nonfinite, **options
    )
    with session:
        if events is not None:  # binned as the program's manifest says, batch of one
            try:
                x = program_frames(session.manifest, events)
            except ShapeError as exc:
                raise ShapeError(f"{inputs[0]}: {exc}") from None
        names = [spec.name for spec in session.manifest.inputs]
        if not isinstance(x, dict) and len(names) > 1:
            raise ShapeError(
                f"{inputs[0]}: this program takes several inputs ({', '.join(names)}): give "
                "each as --input NAME=IN.npy, or all in one IN.npz"
            )
        try:
            y = session.run(x)
        except ShapeError as exc:  # a shape, dtype or non-finite value: name the input file
            raise ShapeError(f"{', '.join(inputs)}: {exc}") from None
    if not isinstance(y, dict):  # one unnamed input gives one array: name it as the program does
        y = {session.manifest.outputs[0].name: y}
    write_outputs(y, output, force)
    typer.echo(f"{describe_outputs(y)} written to {output}")


def register(app: typer.Typer) -> None:
    """Add ``run`` to the CLI."""
    app.command("run")(run)

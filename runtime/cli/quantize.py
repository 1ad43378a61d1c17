"""``ganglion quantize``: a float spiking bundle -> a Loihi 2 fixed-point bundle, with its error."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ganglion.models.errors import ConversionError, ShapeError
from ganglion.runtime.atomic import check_target
from ganglion.runtime.cli.arrays import load_calibration

TARGETS = ("loihi2",)


def quantize(
    bundle: Annotated[Path, typer.Argument(help="Float spiking bundle (folder or .tar).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Quantized bundle to write.")],
    target: Annotated[str, typer.Option("--target", help="Fixed-point target: loihi2.")] = "loihi2",
    calib: Annotated[
        Path | None,
        typer.Option(
            "--calib",
            help="NPZ with inputs 'x' (labels 'y' optional): sets the input scale and "
            "threshold scale, and scores the accuracy change.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing bundle at -o.")
    ] = False,
) -> None:
    """Map a spiking program onto Loihi 2's fixed-point formats and report the error."""
    if target not in TARGETS:
        raise ConversionError(f"--target must be one of {TARGETS}, got {target!r}")
    from ganglion.converters.loihi_quantize import quantize_loihi2
    from ganglion.runtime.bundle import load_bundle, save_bundle

    check_target(output, force, reads=(bundle, calib))
    x, y = load_calibration(calib) if calib is not None else (None, None)
    program = load_bundle(bundle)
    try:
        quantized = quantize_loihi2(program, x, y)
    except ShapeError as exc:  # the calibration inputs do not fit the program: name the file
        raise ShapeError(f"{calib}: {exc}" if calib is not None else str(exc)) from None
    path = save_bundle(quantized, output, force)
    report = quantized.manifest.report["loihi2"]
    console = Console(highlight=False)
    table = Table("layer", "vth / weight exp", "weight RMS error", "bias max error", "dv")
    for name, layer in report["layers"].items():
        if "vth" in layer:
            table.add_row(
                name, f"vth {layer['vth']}", "", f"{layer['bias_max_error']:.2e}", str(layer["dv"])
            )
        else:
            table.add_row(
                name,
                f"exp {layer['weight_exp']}",
                f"{100 * layer['weight_rms_error']:.2f} %",
                "",
                "",
            )
    console.print(table)
    console.print(
        f"reset: {report['reset']}; threshold scale α = {report['threshold_scale']} "
        f"(thresholds are exact: folded into the weights)"
    )
    accuracy = report.get("accuracy", {})
    if "fixed" in accuracy:
        console.print(
            f"accuracy on {calib}: float {accuracy['float']:.4f} -> fixed "
            f"{accuracy['fixed']:.4f} ({accuracy['change_points']:+.2f} points)"
        )
    elif "agreement" in accuracy:
        console.print(f"agreement with the float program on {calib}: {accuracy['agreement']:.4f}")
    console.print(f"loihi2-fixed bundle written to {path}")


def register(app: typer.Typer) -> None:
    """Add ``quantize`` to the CLI."""
    app.command("quantize")(quantize)

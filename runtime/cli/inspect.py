"""``ganglion inspect``: what a bundle is and how to feed it."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ganglion.runtime.bundle import load_bundle
from ganglion.runtime.cli.chip_fit import show_chip_fit
from ganglion.runtime.describe import describe


def inspect(
    bundle: Path = typer.Argument(..., help="Bundle folder or .tar."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    target: str | None = typer.Option(None, "--target", help="loihi2: chip-fit report instead."),
    chips: int = typer.Option(1, "--chips", help="With --target loihi2: chips available."),
) -> None:
    """Show kind, inputs/outputs (and their shape convention), timesteps, layers, checksums."""
    if target is not None:
        show_chip_fit(load_bundle(bundle), target, chips, as_json)
        return
    info = describe(load_bundle(bundle))
    if as_json:
        typer.echo(json.dumps(info, indent=1))
        return
    console = Console(highlight=False, soft_wrap=True)
    console.print(
        f"[bold]{bundle}[/]: {info['kind']} program ({info['architecture']}, "
        f"{info['numerics']}), {info['parameters']:,} parameters"
    )
    console.print(f"input:  {info['shapes']['input']}", markup=False)
    console.print(f"output: {info['shapes']['output']}", markup=False)
    if info["kind"] == "spiking":
        t = info["time"]
        console.print(
            f"time:   T={t['timesteps']}, dt={t['dt']}, encoding={t['encoding']}, "
            f"decoding={t['decoding']}"
        )
    if info["layers"]:
        table = Table("layer", "type", "shape", "parameters", "inputs")
        for layer in info["layers"]:
            table.add_row(
                layer["name"],
                layer["type"],
                str(layer["shape"]),
                f"{layer['parameters']:,}",
                ", ".join(layer["inputs"]),
            )
        console.print(table)
    report = info["report"]
    if "ann_accuracy" in report:
        console.print(
            f"calibration accuracy: ANN {report['ann_accuracy']:.4f}, "
            f"SNN {report['snn_accuracy']:.4f}"
        )
    for name, digest in info["checksums"].items():
        console.print(f"sha256 {digest}  {name}", markup=False)


def register(app: typer.Typer) -> None:
    """Add ``inspect`` to the CLI."""
    app.command("inspect")(inspect)

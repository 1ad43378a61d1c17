"""``ganglion demo``: train, convert and run the digits networks; print ANN vs SNN accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ganglion.runtime.demo import NETWORKS, accuracy_sweep, train_network, write_demo_bundle


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Where bundles and data go."),
    timesteps: str = typer.Option(
        "4,8,16,32,64", "--timesteps", help="Timestep budgets to compare."
    ),
    bundle_timesteps: int = typer.Option(32, "--bundle-timesteps", help="T of the saved bundles."),
    as_json: bool = typer.Option(False, "--json", help="Also print one JSON line per row."),
) -> None:
    """Train the digits MLP and CNN, convert them to spiking programs and compare accuracy."""
    steps = [int(s) for s in timesteps.split(",") if s.strip()]
    console = Console()
    table = Table(
        "network",
        "T",
        "ANN acc",
        "SNN acc",
        "gap (points)",
        "SNN run (s)",
        title="digits test split: ANN vs converted SNN (torch backend, this CPU, measured)",
    )
    for name in NETWORKS:
        with console.status(f"training the digits {name}"):
            model, data = train_network(name)
        for row in accuracy_sweep(name, model, data, steps):
            table.add_row(
                name,
                str(row.timesteps),
                f"{row.ann_accuracy:.4f}",
                f"{row.snn_accuracy:.4f}",
                f"{row.gap_points:+.2f}",
                f"{row.seconds:.3f}",
            )
            if as_json:
                typer.echo(json.dumps({**vars(row), "gap_points": row.gap_points}))
        path = write_demo_bundle(name, model, data, out, bundle_timesteps)
        console.print(
            f"{name}: bundle {path}  (model {out / (name + '.pt2')}, "
            f"calibration {out / (name + '-calib.npz')})"
        )
    console.print(table)
    console.print(f"next: ganglion inspect {out}/cnn-snn-T{bundle_timesteps}")


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the CLI."""
    app.command("demo")(demo)

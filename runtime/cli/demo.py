"""``ganglion demo``: train, convert and run the digits networks; print ANN vs SNN accuracy,
then take the MLP to every backend and target (ONNX Runtime, Loihi 2 via Lava, energy)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Where bundles and data go."),
    timesteps: str = typer.Option(
        "4,8,16,32,64", "--timesteps", help="Timestep budgets to compare."
    ),
    bundle_timesteps: int = typer.Option(32, "--bundle-timesteps", help="T of the saved bundles."),
    lava_samples: int = typer.Option(8, "--lava-samples", help="Test samples run on Lava."),
    as_json: bool = typer.Option(False, "--json", help="Also print one JSON line per row."),
) -> None:
    """Train the digits MLP and CNN, convert them to spiking programs and deploy them."""
    from ganglion.runtime.demo import NETWORKS, accuracy_sweep, train_network, write_demo_bundle
    from ganglion.runtime.demo_tour import deployment_tour

    steps = [int(s) for s in timesteps.split(",") if s.strip()]
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
    table = Table(
        "network", "T", "ANN acc", "SNN acc", "gap (points)", "SNN run (s)",
        title="digits test split: ANN vs converted SNN (torch backend, this CPU, measured)",
    )  # fmt: skip
    bundles = {}
    for name in NETWORKS:
        with console.status(f"training the digits {name}"):
            model, data = train_network(name)
        for row in accuracy_sweep(name, model, data, steps):
            table.add_row(name, str(row.timesteps), f"{row.ann_accuracy:.4f}",
                          f"{row.snn_accuracy:.4f}", f"{row.gap_points:+.2f}",
                          f"{row.seconds:.3f}")  # fmt: skip
            if as_json:
                typer.echo(json.dumps({**vars(row), "gap_points": row.gap_points}))
        bundles[name] = (write_demo_bundle(name, model, data, out, bundle_timesteps), data)
        console.print(f"{name}: bundle {bundles[name][0]}  (model {out / (name + '.pt2')}, "
                      f"calibration {out / (name + '-calib.npz')})")  # fmt: skip
    console.print(table)
    path, data = bundles["mlp"]
    with console.status("deploying the MLP: onnxruntime, Loihi 2 quantization, Lava"):
        tour = deployment_tour(path, data, lava_samples)
    tour_table = Table(
        "target", "test acc", "agreement", "ms / sample", "mJ / inference", "how",
        title=f"{path.name} on every backend and target",
    )  # fmt: skip
    for row in tour:
        tour_table.add_row(row.target, _fmt(row.accuracy, ".4f"), row.agreement,
                           _fmt(row.latency_ms, ".3f"), _fmt(row.energy_mj, ".4f"),
                           row.how)  # fmt: skip
        if as_json:
            typer.echo(json.dumps({"tour": vars(row)}))
    console.print(tour_table)
    console.print(f"next: ganglion inspect {out}/cnn-snn-T{bundle_timesteps}  ·  "
                  f"ganglion profile {path} --device auto --device loihi2")  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the CLI."""
    app.command("demo")(demo)

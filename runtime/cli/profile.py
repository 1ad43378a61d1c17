"""``ganglion profile``: latency and energy of a bundle, measured here or simulated elsewhere.

The device that is this machine (``auto``: the detected Jetson board, else ``cpu``) is measured:
latency from the wall clock, energy from the first meter that works (NVML, Jetson rails, RAPL)
or, with ``--simulate`` or without one, the profile's power integrated over the measured run.
Any other device is predicted by the roofline model. Every figure is marked measured/simulated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

if TYPE_CHECKING:
    from ganglion.runtime.profiling import ProfileResult

PROGRESS_FROM_RUNS = 20


def profile(
    bundle: Path = typer.Argument(..., help="Bundle folder or .tar."),
    devices: list[str] = typer.Option(["auto"], "--device", help="Profile name or auto; repeat."),
    backend: str = typer.Option("torch", "--backend", help="Backend that runs the bundle here."),
    backend_device: str | None = typer.Option(
        None,
        "--backend-device",
        help="Where the backend runs here: cpu | cuda (default: cuda for tensorrt, else cpu).",
    ),
    runs: int = typer.Option(100, "--runs", min=1, help="Timed runs."),
    warmup: int = typer.Option(10, "--warmup", min=0, help="Untimed runs first."),
    batch: int = typer.Option(1, "--batch", min=1, help="Samples per run."),
    simulate: bool = typer.Option(False, "--simulate", help="Model energy even where measurable."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    plot: Path | None = typer.Option(None, "--plot", help="Latency vs energy PNG (Pareto view)."),
    root: Path = typer.Option(Path("/"), "--root", help="Filesystem root holding sys/ proc/ etc/."),
    device_files: list[Path] = typer.Option([], "--devices", help="Extra device profile file."),
) -> None:
    """Measure or predict latency (trtexec-style percentiles), throughput and energy."""
    from ganglion.runtime.profiling import ProfileRequest, profile_bundle

    request = ProfileRequest(
        devices, backend, backend_device, runs, warmup, batch, simulate, str(root), device_files
    )
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=runs < PROGRESS_FROM_RUNS,
    )
    tasks: dict[str, int] = {}

    def on_run(device: str, total: int) -> None:
        if total >= 0:
            tasks[device] = progress.add_task(f"{device}/{backend}", total=total)
        else:
            progress.advance(tasks[device])

    with progress:
        payload = profile_bundle(bundle, request, on_run)
    results: list[ProfileResult] = payload["results"]
    payload["results"] = [r.to_dict() for r in results]
    if plot is not None:
        _plot(results, plot)
    if as_json:
        typer.echo(json.dumps(payload, allow_nan=False))
        return
    _print(results, payload, Console())
    if plot is not None:
        Console().print(f"plot written to {plot}")


def _print(results: list[ProfileResult], payload: dict, console: Console) -> None:
    for r in results:
        s = r.latency
        t = Table(
            "figure",
            "value",
            "how",
            title=f"{payload['bundle']} on {r.device} "
            f"({r.mode}) / {r.backend}, batch {r.batch}, {r.runs} runs",
        )
        lat = r.latency_kind
        t.add_row(
            "latency min / mean / max",
            f"{s.min * 1e3:.3f} / {s.mean * 1e3:.3f} / {s.max * 1e3:.3f} ms",
            lat,
        )
        t.add_row(
            "latency p50 / p90 / p95 / p99",
            f"{s.p50 * 1e3:.3f} / {s.p90 * 1e3:.3f} / {s.p95 * 1e3:.3f} / {s.p99 * 1e3:.3f} ms",
            lat,
        )
        t.add_row("throughput", f"{r.throughput_per_s:.1f} inferences/s", lat)
        t.add_row("energy per inference", f"{r.energy_per_inference_j:.4g} J", r.energy_kind)
        t.add_row("average power", f"{r.average_power_w:.3g} W", r.energy_kind)
        t.add_row("energy source", r.energy_source, r.energy_kind)
        p = r.prediction
        t.add_row(
            "roofline prediction",
            f"{p['latency_s'] * 1e3:.4g} ms, {p['energy_j']:.4g} J ({p['bound']}-bound)",
            "simulated",
        )
        console.print(t)
        if payload["kind"] == "spiking" and r.layers:
            console.print(_layer_table(r))
        for note in r.notes:
            console.print(f"  note: {note}")


def _layer_table(r: ProfileResult) -> Table:
    t = Table(
        "layer",
        "spike rate",
        "synops",
        "MACs",
        "energy (J, simulated)",
        title=f"per layer, per inference, on {r.device}",
    )
    for row in r.layers:
        rate = "" if row["spike_rate"] is None else f"{row['spike_rate']:.3f}"
        t.add_row(
            row["layer"],
            rate,
            f"{row['synops']:.4g}",
            f"{row['macs']:.4g}",
            f"{row['energy_j']:.3g}",
        )
    return t


def _plot(results: list[ProfileResult], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    points = [(r.latency.mean * 1e3 / r.batch, r.energy_per_inference_j * 1e3, r) for r in results]
    for lat, energy, r in points:
        measured = r.latency_kind == "measured" and r.energy_kind == "measured"
        ax.scatter(lat, energy, marker="o" if measured else "x", s=50)
        where = r.device if r.latency_kind == "simulated" else f"{r.device}/{r.backend}"
        ax.annotate(
            f"{where}\n({r.latency_kind} latency, {r.energy_kind} energy)",
            (lat, energy),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    from ganglion.runtime.profiling import pareto_front

    front = pareto_front([(lat, energy) for lat, energy, _ in points])
    if len(front) > 1:
        ax.step(
            *zip(*front, strict=True),
            where="post",
            linestyle="--",
            color="grey",
            label="Pareto front",
        )
        ax.legend(fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.margins(0.3)  # room for the labels
    ax.set_xlabel("latency per inference (ms)")
    ax.set_ylabel("energy per inference (mJ)")
    ax.set_title("latency vs energy (o measured, x simulated)")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def register(app: typer.Typer) -> None:
    """Add ``profile`` to the CLI."""
    app.command("profile")(profile)

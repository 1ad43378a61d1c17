"""``ganglion sweep``: convert at several timestep budgets, score each on labelled test data and
profile it, then show accuracy against latency and energy per device (the Pareto picture)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from ganglion.models.errors import ConversionError, ShapeError
from ganglion.runtime.cli.plots import check_plot_target, save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ganglion.runtime.sweep import SweepPoint, SweepResult

MARKERS = {"measured": "o", "simulated": "x"}


def sweep(
    model: Path = typer.Argument(
        ..., help="Trained ReLU network: torch.export.save archive (.pt2) or ONNX (.onnx)."
    ),
    calib: Path = typer.Option(
        ..., "--calib", help="NPZ with calibration inputs 'x' (labels 'y' optional)."
    ),
    data: Path = typer.Option(
        ..., "--data", help="NPZ with test inputs 'x' and integer labels 'y'."
    ),
    timesteps: str = typer.Option(
        "4,8,16,32,64", "--timesteps", help="Timestep budgets T, comma separated."
    ),
    method: str = typer.Option(
        "percentile", "--method", help="percentile | mse | calibrated | burst (convert spiking)."
    ),
    devices: list[str] = typer.Option(
        ["auto"],
        "--device",
        help="auto (this machine, measured) or a device profile (simulated); repeat.",
    ),
    batch: int = typer.Option(1, "--batch", min=1, help="Samples per timed call here."),
    runs: int = typer.Option(
        20, "--runs", min=1, max=10**6, help="Timed calls per T here (p50 reported)."
    ),
    warmup: int = typer.Option(3, "--warmup", min=0, max=10**4, help="Untimed calls first."),
    plot: Path | None = typer.Option(
        None, "--plot", help="PNG, SVG or PDF: accuracy vs latency and vs energy per device."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --plot file."),
    root: Path = typer.Option(Path("/"), "--root", help="Filesystem root holding sys/ proc/ etc/."),
    device_files: list[Path] = typer.Option([], "--devices", help="Extra device profile file."),
) -> None:
    """Accuracy, latency and energy of a spiking conversion at each timestep budget."""
    from ganglion.converters.exported_archive import load_exported
    from ganglion.converters.spiking import SpikingOptions
    from ganglion.converters.spiking.ann_graph import read_ann
    from ganglion.converters.spiking.onnx_ann import read_ann_onnx
    from ganglion.runtime.cli.arrays import load_calibration, read_npz
    from ganglion.runtime.sweep import SweepRequest, parse_timesteps, resolve_devices, run_sweep

    grid = parse_timesteps(timesteps)
    SpikingOptions(method=method)  # a bad --method is refused before any work
    if plot is not None:
        check_plot_target(plot, force, reads=(model, calib, data, *device_files))
    test = read_npz(data)
    if "x" not in test or "y" not in test:
        raise ShapeError(
            f"{data}: needs test inputs 'x' and integer labels 'y' (has {sorted(test)})"
        )
    ann = read_ann_onnx(model) if model.suffix == ".onnx" else read_ann(load_exported(model))
    request = SweepRequest(grid, method, devices, batch, runs, warmup, str(root), device_files)
    targets = resolve_devices(request)
    stderr = Console(stderr=True)
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    )
    with progress:
        task = progress.add_task("sweep", total=len(grid))

        def on_stage(steps: int, stage: str) -> None:
            if stage == "done":
                progress.advance(task)
            else:
                progress.update(task, description=f"T={steps}: {stage}")

        calibration, labelled = load_calibration(calib), (test["x"], test["y"])
        try:
            result = run_sweep(ann, calibration, labelled, request, on_stage, targets)
        except (ConversionError, ShapeError) as exc:  # name the file the data came from
            raise type(exc)(_naming_data(str(exc), calib, data)) from None
    if plot is not None:
        _plot(result, model.name, plot, force)
    if as_json:
        payload = {
            "model": str(model),
            **result.to_dict(),
            "plot": None if plot is None else str(plot),
        }
        typer.echo(json.dumps(payload, allow_nan=False))
        return
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
    _print(result, console)
    if plot is not None:
        console.print(f"plot written to {plot}")


def _print(result: SweepResult, console: Console) -> None:
    scores = {row.timesteps: row for row in result.grid}
    table = Table(
        "T",
        "accuracy",
        "gap (points)",
        "spikes / sample",
        "device",
        f"latency / call, batch {result.batch} (ms)",
        "energy / inference (mJ)",
        "Pareto",
        title=f"sweep, --method {result.method}: ANN accuracy {result.ann_accuracy:.4f} on "
        f"{result.samples} test samples",
    )
    for p in result.points:
        row = scores[p.timesteps]
        front = [c for c, on in (("latency", p.pareto_latency), ("energy", p.pareto_energy)) if on]
        table.add_row(
            str(p.timesteps),
            f"{row.accuracy:.4f}",
            f"{row.gap_points:+.2f}",
            f"{row.spikes_per_sample:,.0f}",
            p.device,
            f"{p.latency_s * 1e3:.4g} {p.latency_kind}",
            f"{p.energy_j * 1e3:.4g} {p.energy_kind}",
            ", ".join(front) or "-",
        )
    console.print(table)
    console.print(
        "accuracy and spikes: measured here (torch, CPU) on the test data; a simulated device "
        "is assumed to compute the same program"
    )
    sources: dict[tuple[str, str, str], list[int]] = {}
    for p in result.points:
        for what in (f"latency {p.latency_figure}", f"energy {p.energy_source}", *p.notes):
            sources.setdefault((p.device, p.latency_kind, what), []).append(p.timesteps)
    for (device, _, what), steps in sources.items():
        at = "" if len(steps) == len(result.grid) else f" (T={', '.join(map(str, steps))})"
        console.print(f"  {device}{at}: {what}", markup=False)


def _plot(result: SweepResult, model: str, out: Path, force: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    panels = (
        (axes[0], "latency_s", "latency_kind", f"latency per call, batch {result.batch} (ms)"),
        (axes[1], "energy_j", "energy_kind", "energy per inference (mJ)"),
    )
    devices = list(dict.fromkeys(p.device for p in result.points))
    colors = {d: plt.cm.tab10(i % 10) for i, d in enumerate(devices)}
    for ax, cost, kind, label in panels:
        for device in devices:
            pts = [p for p in result.points if p.device == device]
            xs = [getattr(p, cost) * 1e3 for p in pts]
            ys = [100 * p.accuracy for p in pts]
            kinds = sorted({getattr(p, kind) for p in pts})
            ax.plot(xs, ys, color=colors[device], alpha=0.6, label=f"{device} ({'/'.join(kinds)})")
            for p, x, y in zip(pts, xs, ys, strict=True):
                ax.scatter(x, y, marker=MARKERS[getattr(p, kind)], color=colors[device], s=45)
                ax.annotate(f"T={p.timesteps}", (x, y), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
        ax.axhline(100 * result.ann_accuracy, linestyle=":", color="black", label="ANN")
        _frontier(ax, result.points, cost)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        handles += [
            Line2D([], [], marker=m, linestyle="", color="black", label=k)
            for k, m in MARKERS.items()
        ]
        ax.legend(handles=handles, fontsize=7, loc="best")
    axes[0].set_ylabel("test accuracy (%)")
    fig.suptitle(
        f"{model}, --method {result.method}: accuracy vs cost per device "
        f"(ANN {100 * result.ann_accuracy:.2f}% dotted); o measured, x simulated"
    )
    fig.tight_layout()
    save_figure(fig, out, force)
    plt.close(fig)


def _frontier(ax: Axes, points: list[SweepPoint], cost: str) -> None:
    """The Pareto frontier (most accurate for its cost) as a dashed step line."""
    flag = "pareto_latency" if cost == "latency_s" else "pareto_energy"
    front = sorted((getattr(p, cost) * 1e3, 100 * p.accuracy) for p in points if getattr(p, flag))
    if front:
        xs, ys = zip(*front, strict=True)
        ax.step(xs, ys, where="post", linestyle="--", color="grey", label="Pareto frontier")


def register(app: typer.Typer) -> None:
    """Add ``sweep`` to the CLI."""
    app.command("sweep")(sweep)


def _naming_data(message: str, calib: Path, data: Path) -> str:
    """``message`` prefixed with the file its data came from: the calibration file for the
    converter's "calibration ..." errors, the test file for the sweep's "test data ..." ones."""
    for prefix, path in (("calibration", calib), ("test data", data)):
        if message.startswith(prefix):
            return f"{path}: {message}"
    return message

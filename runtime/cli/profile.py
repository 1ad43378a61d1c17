"""``ganglion profile``: latency and energy of a bundle, measured here or simulated elsewhere.

The device that is this machine (``auto``: the detected Jetson board, else ``cpu``) is measured
in its detected power mode: latency from the wall clock, energy from the meter of the chip the
backend runs on (NVML for ``cuda[:N]``, RAPL for ``cpu``, a Jetson's rails for either) or, with
``--simulate`` or without one, the profile's power integrated over the measured run. Any other
device is predicted by the roofline model. Every figure is marked measured/simulated. Text read
from files (profile, device, rail and layer names) is printed as plain text (`plain`), and
drawn as plain text in the plot (no mathtext).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from ganglion.runtime.cli.plots import check_plot_target, save_figure
from ganglion.runtime.cli.terminal import plain

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
    runs: int = typer.Option(
        100,
        "--runs",
        min=1,
        max=10**6,
        help="Timed runs (more, to fill 0.25 s, where a meter counts).",
    ),
    warmup: int = typer.Option(10, "--warmup", min=0, max=10**4, help="Untimed runs first."),
    batch: int = typer.Option(1, "--batch", min=1, max=2**20, help="Samples per run."),
    simulate: bool = typer.Option(False, "--simulate", help="Model energy even where measurable."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    plot: Path | None = typer.Option(None, "--plot", help="Latency vs energy PNG (Pareto view)."),
    root: Path = typer.Option(Path("/"), "--root", help="Filesystem root holding sys/ proc/ etc/."),
    device_files: list[Path] = typer.Option([], "--devices", help="Extra device profile file."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --plot file."),
) -> None:
    """Measure or predict latency (trtexec-style percentiles), throughput and energy."""
    from ganglion.runtime.profiling import ProfileRequest, profile_bundle

    if plot is not None:
        check_plot_target(plot, force, reads=(bundle, *device_files))

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
        disable=runs < PROGRESS_FROM_RUNS or not sys.stderr.isatty(),  # no stray line in logs
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
        _plot(results, plot, force)
    if as_json:
        typer.echo(json.dumps(payload, allow_nan=False))
        return
    _print(results, payload, Console(width=None if sys.stdout.isatty() else 150))
    if plot is not None:
        Console().print(plain(f"plot written to {plot}"))


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def _print(results: list[ProfileResult], payload: dict, console: Console) -> None:
    for r in results:
        title = f"{payload['bundle']} on {r.device} ({r.mode}) / {r.backend}, batch {r.batch}"
        t = Table("figure", "value", "how", title=plain(title))
        if r.latency is not None:
            s = r.latency
            t.add_row(
                "latency per call p50 / p90 / p99",
                f"{_ms(s.p50)} / {_ms(s.p90)} / {_ms(s.p99)} ms ({r.runs} runs, min {_ms(s.min)})",
                "measured",
            )
            t.add_row("spread p99 / p50", f"{s.spread:.2f}x", "measured")
            if r.step_latency is not None:
                st = r.step_latency
                t.add_row(
                    "latency per step (one timestep or token) p50 / p99",
                    f"{_ms(st.p50)} / {_ms(st.p99)} ms",
                    "measured (streaming)",
                )
            t.add_row("throughput", f"{r.throughput_per_s:,.1f} inferences/s", "measured")
        else:
            t.add_row(
                "latency per call", f"{_ms(r.predicted_latency_s)} ms", "simulated (roofline)"
            )
        energy_how = "simulated (roofline)" if r.latency is None else r.energy_source
        t.add_row(
            "energy per inference", f"{r.energy_per_inference_j * 1e3:.4g} mJ", plain(energy_how)
        )
        t.add_row("average power", f"{r.average_power_w:.3g} W", r.energy_kind)
        if r.latency is not None:
            p = r.prediction
            t.add_row(
                "roofline model of this device",
                f"{p['latency_s'] * 1e3:.4g} ms, {p['energy_j'] * 1e3:.4g} mJ per call "
                f"({p['bound']}-bound; only the work done, not the power limit)",
                "simulated",
            )
        console.print(t)
        if payload["kind"] == "spiking" and r.layers:
            console.print(_layer_table(r))
        for note in r.notes:
            console.print(plain(f"  note: {note}"))


def _layer_table(r: ProfileResult) -> Table:
    t = Table(
        "layer",
        "spike rate",
        "synops",
        "MACs",
        "energy (mJ, simulated)",
        title=plain(f"per layer, per inference, on {r.device}"),
    )
    for row in r.layers:
        rate = "" if row["spike_rate"] is None else f"{row['spike_rate']:.3f}"
        t.add_row(
            plain(row["layer"]),
            rate,
            f"{row['synops']:.4g}",
            f"{row['macs']:.4g}",
            f"{row['energy_j'] * 1e3:.3g}",
        )
    return t


def _plot(results: list[ProfileResult], out: Path, force: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    points = [
        (
            (r.latency.p50 if r.latency is not None else r.predicted_latency_s) * 1e3 / r.batch,
            r.energy_per_inference_j * 1e3,
            r,
        )
        for r in results
    ]
    markers = {
        ("measured", "measured"): ("o", "measured latency and energy"),
        ("measured", "simulated"): ("s", "measured latency (p50), simulated energy"),
        ("simulated", "simulated"): ("x", "simulated latency and energy (roofline)"),
    }
    labelled = set()
    for lat, energy, r in points:
        marker, label = markers[(r.latency_kind, r.energy_kind)]
        ax.scatter(
            lat,
            energy,
            marker=marker,
            s=50,
            color="black",
            label=None if label in labelled else label,
        )
        labelled.add(label)
        where = r.device if r.latency_kind == "simulated" else f"{r.device}/{r.backend}"
        ax.annotate(
            f"{where}\n({r.latency_kind} latency, {r.energy_kind} energy)",
            (lat, energy),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
            parse_math=False,  # a $ in a device name is text, not mathtext
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
    ax.set_title(f"latency vs energy per inference, batch {results[0].batch}")
    fig.tight_layout()
    save_figure(fig, out, force)
    plt.close(fig)


def register(app: typer.Typer) -> None:
    """Add ``profile`` to the CLI."""
    app.command("profile")(profile)

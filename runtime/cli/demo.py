"""``ganglion demo``: train, convert and run the digits networks; print ANN vs SNN accuracy,
then take the MLP to every backend and target (ONNX Runtime, Loihi 2 via Lava, energy)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


QUICK = {
    "networks": ("mlp",),
    "timesteps": "8,32",
    "lava_samples": 2,
    "expert_epochs": 10,
    "lm_steps": 20,
    "lm_width": 32,
    "tokens": 24,
    "event_timesteps": (4,),
    "event_epochs": 8,
    "method_networks": ("mlp",),
}
FULL = {
    "networks": ("mlp", "cnn"),
    "timesteps": "4,8,16,32,64",
    "lava_samples": 8,
    "expert_epochs": 30,
    "lm_steps": 150,
    "lm_width": 64,
    "tokens": 48,
    "event_timesteps": (4, 8),
    "event_epochs": 20,
    "method_networks": ("mlp", "cnn"),
}


def demo(
    out: Path = typer.Option(
        Path("runs/demo"),
        "--out",
        help="Where bundles and data go: a new or empty folder, or an earlier demo's.",
    ),
    force: bool = typer.Option(
        False, "--force", help="Write into a folder holding other files (same names replaced)."
    ),
    quick: bool = typer.Option(False, "--quick", help="The short tour (under a minute)."),
    bundle_timesteps: int = typer.Option(
        32, "--bundle-timesteps", min=1, max=1024, help="T of the saved bundles."
    ),
    as_json: bool = typer.Option(False, "--json", help="Also print one JSON line per row."),
    threads: int = typer.Option(
        1,
        "--threads",
        min=1,
        max=256,
        help="torch threads; the demo's models are tiny and train fastest on one.",
    ),
) -> None:
    """Train and deploy: spiking digits networks on every backend and Loihi 2, the same network
    as a dense bundle (fp32, int8), an MoE² ensemble with exact expert selection, and small
    language models (prose, code) with their ensemble generating on torch and ONNX Runtime, and
    a spiking CNN reading an event camera's stream (simulated sensor), conversion for four
    time steps by each threshold method, and the ensemble served by a cluster of loopback nodes
    with a coordinator choosing experts under a budget and surviving a killed node."""
    import torch

    from ganglion.converters.spiking import SpikingOptions
    from ganglion.converters.spiking.ann_to_snn import METHODS
    from ganglion.runtime.demo import (
        NETWORKS,
        accuracy_sweep,
        claim_demo_folder,
        train_network,
        write_demo_bundle,
    )
    from ganglion.runtime.demo_cluster import cluster_tour
    from ganglion.runtime.demo_ensembles import dense_tour, ensemble_tour, selection_at_scale
    from ganglion.runtime.demo_events import event_tour
    from ganglion.runtime.demo_language import language_tour
    from ganglion.runtime.demo_tour import deployment_tour

    claim_demo_folder(out, force)
    torch.set_num_threads(threads)
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    steps = [int(s) for s in plan["timesteps"].split(",")]
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)

    def emit(section: str, row: object) -> None:
        if as_json:
            fields = row if isinstance(row, dict) else vars(row)
            typer.echo(json.dumps({"section": section, **fields}, allow_nan=False))

    table = Table(
        "network",
        "T",
        "ANN acc",
        "SNN acc",
        "gap (points)",
        "SNN run (s)",
        title="1. digits test split: ANN vs converted SNN "
        f"(torch backend, this CPU, {threads} thread(s), measured)",
    )
    bundles, models = {}, {}
    for name in (n for n in NETWORKS if n in plan["networks"]):
        with console.status(f"training the digits {name}"):
            model, data = train_network(name)
        models[name] = (model, data)
        for row in accuracy_sweep(name, model, data, steps):
            table.add_row(
                name,
                str(row.timesteps),
                f"{row.ann_accuracy:.4f}",
                f"{row.snn_accuracy:.4f}",
                f"{row.gap_points:+.2f}",
                f"{row.seconds:.3f}",
            )
            emit("spiking", row)
        bundles[name] = (write_demo_bundle(name, model, data, out, bundle_timesteps), data)
    console.print(table)
    path, data = bundles["mlp"]
    with console.status("deploying the MLP: onnxruntime, Loihi 2 quantization, Lava"):
        tour = deployment_tour(path, data, plan["lava_samples"])
    tour_table = Table(
        "target",
        "test acc",
        "agreement",
        "ms / sample",
        "mJ / inference",
        "how",
        title=f"2. {path.name} on every backend and target",
    )
    for row in tour:
        tour_table.add_row(
            row.target,
            _fmt(row.accuracy, ".4f"),
            row.agreement,
            _fmt(row.latency_ms, ".3f"),
            _fmt(row.energy_mj, ".4f"),
            row.how,
        )
        emit("tour", row)
    console.print(tour_table)
    model, data = models["mlp"]
    with console.status("the MLP as a dense bundle; an MoE² ensemble of digit experts"):
        rows = dense_tour(model, data, out)
        ensemble_rows, notes = ensemble_tour(data, out, plan["expert_epochs"])
    kinds = Table(
        "program",
        "test acc",
        "ms / batch (median of 5)",
        "note",
        title=f"3. dense and ensemble programs (this CPU, {threads} thread(s), measured)",
    )
    for row in [*rows, *ensemble_rows]:
        kinds.add_row(row.what, _fmt(row.accuracy, ".4f"), _fmt(row.ms_per_batch, ".2f"), row.note)
        emit("kinds", row)
    console.print(kinds)
    for note in notes:
        console.print(f"  exact expert selection: {note}")
    with console.status("the exact selection at scale: 16 and 64 synthetic experts"):
        scale = selection_at_scale(limit_s=1.0)
    for row in scale:
        how = (
            f"exact in {row['solve_ms']:.1f} ms"
            if row["exact"]
            else f"best found in {row['solve_ms']:.0f} ms under --time-limit "
            f"{row['time_limit_s']:g} s; the optimum is at most {row['quality'] + row['gap']:.4f}"
        )
        console.print(
            f"  at scale, {row['experts']} synthetic experts (gate unrelated to correctness): "
            f"{row['chosen']}, quality {row['quality']:.4f}, {how} (measured)"
        )
        emit("selection", row)
    with console.status("training byte-level LMs on prose and on code, then their ensemble"):
        lm_rows = language_tour(out, plan["lm_steps"], plan["lm_width"], plan["tokens"])
    lm = Table(
        "model",
        "held-out bpc",
        "prompt",
        "greedy continuation",
        "tok/s torch | ort",
        "same tokens",
        "gate (prose, code)",
        title=f"4. language models ({plan['lm_steps']} training steps each, measured)",
    )
    for row in lm_rows:
        lm.add_row(
            row.model,
            _fmt(row.heldout_bpc, ".2f"),
            repr(row.prompt),
            repr(row.text),
            f"{row.tokens_per_s['torch']:.0f} | {row.tokens_per_s['onnxruntime']:.0f}",
            str(row.same_tokens),
            row.gate or "-",
        )
        emit("language", row)
    console.print(lm)
    with console.status("an event camera (simulated): event digits, a CNN, spiking programs"):
        event_rows, event_run = event_tour(out, list(plan["event_timesteps"]), plan["event_epochs"])
    events = Table(
        "T (time bins)",
        "ANN acc (count image)",
        "SNN acc (binned events)",
        "events / sample",
        "convert + score (s)",
        title="5. event digits from a simulated sensor (saccades), digits test split, measured",
    )
    for row in event_rows:
        events.add_row(
            str(row.timesteps),
            f"{row.ann_accuracy:.4f}",
            f"{row.snn_accuracy:.4f}",
            f"{row.events_per_sample:.0f}",
            f"{row.seconds:.1f}",
        )
        emit("events", row)
    console.print(events)
    console.print(f"  {event_run}")
    methods = Table(
        "network",
        "method",
        "ANN acc",
        "SNN acc at T=4",
        "gap (points)",
        "convert + run (s)",
        title=f"6. low-latency conversion: four time steps (torch, {threads} thread(s), measured)",
    )
    for name in plan["method_networks"]:
        model, data = models[name]
        for method in METHODS:
            with console.status(f"converting the {name} for T=4 by {method}"):
                started_method = time.perf_counter()
                (row,) = accuracy_sweep(name, model, data, [4], SpikingOptions(method=method))
            seconds = time.perf_counter() - started_method
            methods.add_row(
                name,
                method,
                f"{row.ann_accuracy:.4f}",
                f"{row.snn_accuracy:.4f}",
                f"{row.gap_points:+.2f}",
                f"{seconds:.1f}",
            )
            emit("methods", {"method": method, **vars(row)})
    console.print(methods)
    with console.status("a cluster on loopback: two simulated Orin nodes and a coordinator"):
        cluster_rows = cluster_tour(out / "digits-moe", models["mlp"][1], out)
    cluster = Table(
        "request (360 test digits)",
        "experts",
        "answered by",
        "test acc",
        "energy (mJ)",
        "latency (ms, measured)",
        "retries",
        title="7. the MoE² ensemble served by a cluster (ganglion cluster up, loopback)",
    )
    for row in cluster_rows:
        cluster.add_row(
            row.request,
            row.experts,
            row.nodes,
            f"{row.accuracy:.4f}",
            f"{row.energy_mj:.3g} ({row.energy_kind})",
            f"{row.latency_ms:.1f}",
            str(row.retries),
        )
        emit("cluster", row)
    console.print(cluster)
    console.print(
        f"demo took {time.perf_counter() - started:.0f} s; bundles in {out}. next: "
        f"ganglion inspect {out}/digits-moe  ·  ganglion select {out}/digits-moe "
        f"--energy-budget 0.01 --latency-budget 50  ·  ganglion generate {out}/lm-moe "
        f"--prompt 'def '"
    )


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the CLI."""
    app.command("demo")(demo)

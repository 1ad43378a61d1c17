"""Quality against the energy and the latency budget: MoE² exact selection vs its baselines,
on a digits ensemble and a prose/code language-model ensemble, in one run (tables, JSON lines,
PNG).

Digits: five digits MLPs trained here — ``tiny`` (all classes, 2 epochs) on a Jetson Orin
Nano (where requests arrive), ``low`` and ``high`` (classes 0-4 and 5-9, 30 epochs) on a
Jetson AGX Orin, ``full`` (all classes, 60 epochs) on an RTX 4090 and ``full-snn`` (the same,
converted to a spiking program) on Loihi 2 — and a gate trained post-hoc on the training
split. Language: two byte-level GAM LMs (prose, code) and their ensemble (``--lm-steps``).

Two sweeps: the energy budget (geometric, from the cheapest expert to all of them; the latency
budget never binds), then the latency budget (from the fastest expert to all of them, spread
over the experts' own latencies, where another expert starts to fit; the energy budget never
binds). At each budget the exact optimum and each baseline give a subset; the tables show its
predicted quality on the calibration data (the selection objective: for digits the mean
renormalized probability of the true label, for LMs of the true next byte) and, for digits,
the test accuracy of the ensemble restricted to that subset (measured here). Costs are
simulated (roofline per device, simulated link): labelled so.

Usage: ``python benchmarks/moe2_tradeoff.py [--budgets 12] [--plot moe2_tradeoff.png]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ganglion.converters.ensemble import convert_ensemble, convert_lm_ensemble
from ganglion.models.recipes.digits import load_digits
from ganglion.models.recipes.text import load_corpus, random_windows
from ganglion.runtime.bundle import load_bundle, save_bundle
from ganglion.runtime.demo_ensembles import train_digits_expert
from ganglion.runtime.demo_language import train_experts
from ganglion.runtime.ensemble_calibration import (
    all_expert_probabilities,
    token_expert_probabilities,
)
from ganglion.runtime.selection import SelectionProblem, run_baselines, solve
from ganglion.runtime.selection.from_ensemble import problem_from_ensemble
from ganglion.runtime.session import load

REQUESTER = "jetson-orin-nano-8gb"
METHODS = ("optimum", "single", "greedy_per_joule", "random", "all")


def digits_ensemble(folder: Path) -> Path:
    """Five digits experts of different cost and skill, and their gate."""
    data = load_digits(image=False)
    members = {
        "tiny": train_digits_expert(data, range(10), False, 2),
        "low": train_digits_expert(data, range(0, 5), False, 30),
        "high": train_digits_expert(data, range(5, 10), False, 30),
        "full": train_digits_expert(data, range(10), False, 60),
        "full-snn": train_digits_expert(data, range(10), True, 60),
    }
    placement = {
        "tiny": REQUESTER,
        "low": "jetson-agx-orin-64gb",
        "high": "jetson-agx-orin-64gb",
        "full": "rtx-4090",
        "full-snn": "loihi2",
    }
    probs = all_expert_probabilities(members, {"x": data.x_train})
    program = convert_ensemble(
        members, {"x": data.x_train}, data.y_train, probs, placement=placement, epochs=300
    )
    return save_bundle(program, folder / "digits-moe")


def lm_ensemble(folder: Path, steps: int) -> Path:
    """Prose and code LMs and their gated ensemble."""
    experts = train_experts(folder, steps, 64)
    members = {name: load_bundle(path) for name, path in experts.items()}
    rng = np.random.default_rng(0)
    windows = np.concatenate([random_windows(load_corpus(c).train, 16, 128, rng) for c in members])
    probs = token_expert_probabilities(members, windows)
    return save_bundle(convert_lm_ensemble(members, windows, probs, epochs=300), folder / "lm-moe")


def budget_pairs(problem: SelectionProblem, budgets: int) -> list[tuple[str, float, float]]:
    """(swept budget, energy J, latency ms) pairs. Energy: geometric from the cheapest expert
    to all of them, the latency budget never binding (10x all experts' latency). Latency:
    evenly spread over the steps where another expert starts to fit — each expert's own
    latency, sorted, then 1.05x all experts' (a subset's latency is its slowest member's, so
    quality changes only there), repeats dropped — the energy budget never binding (1.05x all
    experts')."""
    n = problem.n_experts
    everyone = tuple(range(n))
    cheapest = min(problem.energy((e,)) for e in range(n))
    loose_energy = problem.energy(everyone) * 1.05
    loose_latency = problem.latency(everyone) * 10
    pairs = [
        ("energy", float(e), loose_latency) for e in np.geomspace(cheapest, loose_energy, budgets)
    ]
    steps = sorted(problem.latency((e,)) for e in range(n)) + [problem.latency(everyone) * 1.05]
    spread = np.interp(np.linspace(0, n, budgets), np.arange(n + 1), steps)
    pairs += [("latency", loose_energy, float(ms)) for ms in np.unique(spread)]
    return pairs


def sweep(name: str, bundle: Path, budgets: int, test: tuple | None) -> list[dict]:
    """Every method at every budget pair of both sweeps: predicted quality (and test
    accuracy, measured once per distinct subset)."""
    ensemble = load_bundle(bundle)
    problem, _ = problem_from_ensemble(ensemble, {}, REQUESTER)
    print(json.dumps({"ensemble": name, "monotonicity": ensemble.manifest.report["monotonicity"]}))
    accuracy: dict[tuple[str, ...], float] = {}
    rows = []
    for swept, energy, latency in budget_pairs(problem, budgets):
        chosen = {
            "optimum": solve(problem, energy, latency),
            **run_baselines(problem, energy, latency, seed=0),
        }
        for method in METHODS:
            sel = chosen.get(method)
            row = {
                "ensemble": name,
                "sweep": swept,
                "energy_budget_mj": energy * 1e3,
                "latency_budget_ms": latency,
                "method": method,
                "experts": None if sel is None else [problem.names[e] for e in sel.experts],
                "quality": None if sel is None else sel.quality,
                "energy_mj": None if sel is None else sel.energy_j * 1e3,
                "latency_ms": None if sel is None else sel.latency_ms,
                "costs": "simulated (roofline per device, simulated link)",
            }
            if test is not None and sel is not None:
                key = tuple(row["experts"])
                if key not in accuracy:
                    with load(bundle) as session:
                        session.select(list(key))
                        probs = session.run(test[0])["probs"]
                    accuracy[key] = float((probs.argmax(-1) == test[1]).mean())
                row["test_accuracy"] = accuracy[key]
            rows.append(row)
            print(json.dumps(row))
    return rows


SWEEPS = {  # swept budget -> (row key, axis label, axis scale)
    "energy": ("energy_budget_mj", "energy budget per request (mJ, simulated costs)", "log"),
    "latency": ("latency_budget_ms", "latency budget per request (ms, simulated costs)", "linear"),
}


def plot(rows: list[dict], out: Path) -> None:
    """Quality vs energy budget (top row) and vs latency budget (bottom row), one column per
    ensemble, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    names = sorted({r["ensemble"] for r in rows})
    fig, axes = plt.subplots(
        len(SWEEPS), len(names), figsize=(6 * len(names), 4.5 * len(SWEEPS)), squeeze=False
    )
    for axes_row, (swept, (key, label, scale)) in zip(axes, SWEEPS.items(), strict=True):
        for ax, name in zip(axes_row, names, strict=True):
            for method in METHODS:
                pts = [
                    (r[key], r["quality"])
                    for r in rows
                    if (r["ensemble"], r["sweep"], r["method"]) == (name, swept, method)
                    and r["quality"] is not None
                ]
                if pts:
                    ax.plot(
                        *zip(*pts, strict=True),
                        marker="o" if method == "optimum" else ".",
                        label=method,
                        linewidth=2 if method == "optimum" else 1,
                    )
            ax.set_xscale(scale)
            ax.xaxis.set_minor_formatter(NullFormatter())  # log minor labels overlap
            ax.set_xlabel(label)
            ax.set_ylabel("predicted quality on calibration data")
            ax.set_title(f"{name}: MoE² selection vs baselines, {swept} budget swept")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def table(rows: list[dict], swept: str) -> Table:
    """One line per ensemble and budget of the ``swept`` sweep, one column per method."""
    key = SWEEPS[swept][0]
    unit = "mJ" if swept == "energy" else "ms"
    fixed = "latency" if swept == "energy" else "energy"
    result = Table(
        "ensemble",
        f"{swept} budget {unit}",
        *METHODS,
        title=f"{swept} budget swept ({fixed} budget never binds): predicted quality (test "
        "accuracy) per method; costs simulated, accuracy measured",
    )
    mine = [r for r in rows if r["sweep"] == swept]
    for ensemble, budget in sorted({(r["ensemble"], r[key]) for r in mine}):
        cells = []
        for method in METHODS:
            (r,) = [
                r
                for r in mine
                if (r["ensemble"], r[key], r["method"]) == (ensemble, budget, method)
            ]
            text = "-" if r["quality"] is None else f"{r['quality']:.3f}"
            if "test_accuracy" in r:
                text += f" ({r['test_accuracy']:.3f})"
            cells.append(text)
        result.add_row(ensemble, f"{budget:.3g}", *cells)
    return result


def main() -> None:
    """Build both ensembles, sweep both budgets, print the tables and draw the plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, default=12)
    parser.add_argument("--lm-steps", type=int, default=150)
    parser.add_argument("--plot", type=Path, default=Path("moe2_tradeoff.png"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_digits(image=False)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = sweep("digits", digits_ensemble(folder), args.budgets, (data.x_test, data.y_test))
        rows += sweep("language", lm_ensemble(folder, args.lm_steps), args.budgets, None)
    plot(rows, args.plot)
    console = Console(width=160)
    for swept in SWEEPS:
        console.print(table(rows, swept))
    console.print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()

"""Quality against the energy budget: MoE² exact selection vs its baselines, on a digits
ensemble and a prose/code language-model ensemble, in one run (table, JSON lines, PNG).

Digits: five experts trained here (an MLP trained one epoch, one trained three epochs and
converted to a spiking program, experts on classes 0-4 and 5-9, a fully trained MLP), placed
on a Jetson Orin Nano (where requests arrive), Loihi 2, a Jetson AGX Orin and an RTX 4090; a
gate trained post-hoc on the training split. Language: two byte-level GAM LMs (prose, code)
and their ensemble (``--lm-steps``).

For each energy budget (geometric, from the cheapest expert to all of them; latency budget
fixed) the exact optimum and each baseline give a subset; the table shows its predicted
quality on the calibration data (the selection objective: for digits the mean renormalized
probability of the true label, for LMs of the true next byte) and, for digits, the test
accuracy of the ensemble restricted to that subset (measured here). Costs are simulated
(roofline per device, simulated link): labelled so.

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
from ganglion.runtime.selection import run_baselines, solve
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


def sweep(name: str, bundle: Path, budgets: int, test: tuple | None) -> list[dict]:
    """Every method at every energy budget: predicted quality (and test accuracy)."""
    problem, _ = problem_from_ensemble(load_bundle(bundle), {}, REQUESTER)
    n = problem.n_experts
    cheapest = min(problem.energy((e,)) for e in range(n))
    everything = problem.energy(tuple(range(n)))
    latency = 10 * problem.latency(tuple(range(n)))
    rows = []
    for energy in np.geomspace(cheapest, everything * 1.05, budgets):
        chosen = {
            "optimum": solve(problem, float(energy), latency),
            **run_baselines(problem, float(energy), latency, seed=0),
        }
        for method in METHODS:
            sel = chosen.get(method)
            row = {
                "ensemble": name,
                "energy_budget_mj": float(energy) * 1e3,
                "method": method,
                "experts": None if sel is None else [problem.names[e] for e in sel.experts],
                "quality": None if sel is None else sel.quality,
                "energy_mj": None if sel is None else sel.energy_j * 1e3,
                "costs": "simulated (roofline per device, simulated link)",
            }
            if test is not None and sel is not None:
                with load(bundle) as session:
                    session.select(row["experts"])
                    probs = session.run(test[0])["probs"]
                row["test_accuracy"] = float((probs.argmax(-1) == test[1]).mean())
            rows.append(row)
            print(json.dumps(row))
    return rows


def plot(rows: list[dict], out: Path) -> None:
    """Quality vs energy budget, one panel per ensemble, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["ensemble"] for r in rows})
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for method in METHODS:
            pts = [
                (r["energy_budget_mj"], r["quality"])
                for r in rows
                if r["ensemble"] == name and r["method"] == method and r["quality"] is not None
            ]
            if pts:
                ax.plot(
                    *zip(*pts, strict=True),
                    marker="o" if method == "optimum" else ".",
                    label=method,
                    linewidth=2 if method == "optimum" else 1,
                )
        ax.set_xscale("log")
        ax.set_xlabel("energy budget per request (mJ, simulated costs)")
        ax.set_ylabel("predicted quality on calibration data")
        ax.set_title(f"{name}: MoE² selection vs baselines")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    """Build both ensembles, sweep the budgets, print the table and draw the plot."""
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
    table = Table(
        "ensemble",
        "budget mJ",
        *METHODS,
        title="predicted quality (test accuracy) per method; costs simulated, accuracy measured",
    )
    for key in sorted({(r["ensemble"], r["energy_budget_mj"]) for r in rows}):
        cells = []
        for method in METHODS:
            (r,) = [
                r
                for r in rows
                if (r["ensemble"], r["energy_budget_mj"]) == key and r["method"] == method
            ]
            text = "-" if r["quality"] is None else f"{r['quality']:.3f}"
            if "test_accuracy" in r:
                text += f" ({r['test_accuracy']:.3f})"
            cells.append(text)
        table.add_row(key[0], f"{key[1]:.3g}", *cells)
    Console(width=160).print(table)
    Console().print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()

"""ANN minus SNN accuracy on the digits test split, per conversion method and timestep budget.

Trains the digits MLP and CNN for each seed (seconds each), converts them with every
``--method`` (``SpikingOptions.method``) at each T, calibrating on the train split, and scores
the test split (360 samples: one sample is 0.28 point) on the torch backend. Prints one JSON
line per (network, seed, method, T), then one summary line and a table row per
(network, method, T): the gap's mean and range over the seeds, and spikes per sample.

Goals: gap <= 0.3 point at T=4 (issue 17, low-latency conversion), <= 0.5 at T=16 and <= 0.2
at T=32 (SpikingJelly's MNIST anchor: 0.29 at T=50), judged on the mean over seeds; the table
also says whether every seed met it.

Usage: ``python benchmarks/spiking_conversion.py [--timesteps 4,8] [--seeds 0,1,2]
[--methods percentile,mse,calibrated,burst]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.converters.spiking.ann_to_snn import METHODS
from ganglion.models.recipes.digits import accuracy
from ganglion.runtime.demo import NETWORKS, train_network
from ganglion.runtime.evaluation import evaluate
from ganglion.runtime.session import load

GOALS = {4: 0.3, 16: 0.5, 32: 0.2}  # max gap in points (mean over seeds)


@dataclass
class Run:
    """One converted network scored on the test split."""

    network: str
    seed: int
    method: str
    timesteps: int
    ann_accuracy: float
    snn_accuracy: float
    spikes_per_sample: float

    @property
    def gap_points(self) -> float:
        """ANN minus SNN accuracy, in percentage points."""
        return 100.0 * (self.ann_accuracy - self.snn_accuracy)


def score(network: str, seed: int, methods: list[str], steps: list[int]) -> list[Run]:
    """Train ``network`` with ``seed``, convert it per method and T, score the test split."""
    model, data = train_network(network, seed=seed)
    ann = accuracy(model, data.x_test, data.y_test)
    runs = []
    for method in methods:
        for t in steps:
            program = convert_spiking(
                model, data.x_train, None, SpikingOptions(timesteps=t, method=method)
            )
            with load(program) as session:
                result = evaluate(session, {"input": data.x_test}, data.y_test)
            runs.append(
                Run(network, seed, method, t, ann, result.accuracy, result.spikes_per_sample or 0)
            )
    return runs


def summary(runs: list[Run]) -> dict:
    """Mean and range over seeds of one (network, method, T) group."""
    gaps = [r.gap_points for r in runs]
    goal = GOALS.get(runs[0].timesteps)
    mean = statistics.fmean(gaps)
    return {
        "benchmark": "spiking_conversion",
        "summary": True,
        "network": runs[0].network,
        "method": runs[0].method,
        "timesteps": runs[0].timesteps,
        "seeds": [r.seed for r in runs],
        "ann_accuracy_mean": round(statistics.fmean(r.ann_accuracy for r in runs), 4),
        "snn_accuracy_mean": round(statistics.fmean(r.snn_accuracy for r in runs), 4),
        "gap_points_mean": round(mean, 3),
        "gap_points_min": round(min(gaps), 3),
        "gap_points_max": round(max(gaps), 3),
        "spikes_per_sample_mean": round(statistics.fmean(r.spikes_per_sample for r in runs), 1),
        "goal_points": goal,
        "met": None if goal is None else mean <= goal + 1e-9,
        "met_every_seed": None if goal is None else max(gaps) <= goal + 1e-9,
    }


def main() -> None:
    """Run the grid and print JSON lines and a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", default="4,8")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma separated")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma separated")
    args = parser.parse_args()
    steps = [int(s) for s in args.timesteps.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    runs = [r for name in NETWORKS for seed in seeds for r in score(name, seed, methods, steps)]
    for r in runs:
        print(
            json.dumps(
                {
                    "benchmark": "spiking_conversion",
                    **vars(r),
                    "gap_points": round(r.gap_points, 3),
                }
            )
        )
    table = Table(
        "network",
        "method",
        "T",
        "ANN acc",
        "SNN acc",
        "gap mean (points)",
        "gap range",
        "spikes / sample",
        "goal",
        "met (mean)",
        "every seed",
        title=f"digits test split (360 samples), seeds {args.seeds}: ANN vs converted SNN, "
        "measured on this CPU",
    )
    for name in NETWORKS:
        for method in methods:
            for t in steps:
                group = [r for r in runs if (r.network, r.method, r.timesteps) == (name, method, t)]
                row = summary(group)
                print(json.dumps(row))
                table.add_row(
                    name,
                    method,
                    str(t),
                    f"{row['ann_accuracy_mean']:.4f}",
                    f"{row['snn_accuracy_mean']:.4f}",
                    f"{row['gap_points_mean']:+.2f}",
                    f"{row['gap_points_min']:+.2f}..{row['gap_points_max']:+.2f}",
                    f"{row['spikes_per_sample_mean']:,.0f}",
                    "-" if row["goal_points"] is None else f"<= {row['goal_points']}",
                    _yes(row["met"]),
                    _yes(row["met_every_seed"]),
                )
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def _yes(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "NO")


if __name__ == "__main__":
    main()

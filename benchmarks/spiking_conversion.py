"""Accuracy of converted spiking programs vs their ANN on digits, per timestep budget.

Trains the digits MLP and CNN (seconds), converts each with the default options at
T = 4, 8, 16, 32, 64, runs the test split on the torch backend and prints one JSON line per
row plus a table. Goal: gap <= 0.5 point at T=16 and <= 0.2 at T=32 for both networks
(SpikingJelly's MNIST anchor: 0.29 at T=50).

Usage: ``python benchmarks/spiking_conversion.py [--timesteps 4,8,16,32,64] [--seeds 0]``
"""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from ganglion.runtime.demo import NETWORKS, accuracy_sweep, train_network

GOALS = {16: 0.5, 32: 0.2}  # max gap in points


def main() -> None:
    """Run the sweep and print JSON lines and a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", default="4,8,16,32,64")
    parser.add_argument("--seeds", default="0", help="training seeds, comma separated")
    args = parser.parse_args()
    steps = [int(s) for s in args.timesteps.split(",")]
    table = Table(
        "network",
        "seed",
        "T",
        "ANN acc",
        "SNN acc",
        "gap (points)",
        "goal",
        "met",
        title="digits test split (360 samples): ANN vs converted SNN, measured on this CPU",
    )
    for name in NETWORKS:
        for seed in (int(s) for s in args.seeds.split(",")):
            model, data = train_network(name, seed=seed)
            for row in accuracy_sweep(name, model, data, steps):
                goal = GOALS.get(row.timesteps)
                met = None if goal is None else row.gap_points <= goal + 1e-9
                print(
                    json.dumps(
                        {
                            "benchmark": "spiking_conversion",
                            "seed": seed,
                            **vars(row),
                            "gap_points": round(row.gap_points, 3),
                            "goal_points": goal,
                            "met": met,
                        }
                    )
                )
                table.add_row(
                    name,
                    str(seed),
                    str(row.timesteps),
                    f"{row.ann_accuracy:.4f}",
                    f"{row.snn_accuracy:.4f}",
                    f"{row.gap_points:+.2f}",
                    "-" if goal is None else f"<= {goal}",
                    "-" if met is None else ("yes" if met else "NO"),
                )
    Console().print(table)


if __name__ == "__main__":
    main()

"""Speed of the onnxruntime backend against eager torch on CPU, same programs, same run.

For each program (the demo's digits MLP and CNN, converted: IF neurons, direct encoding):
- streaming: batch-1 ``step`` loop with chained state; per-step latency p50/p99 and steps/s;
- whole input: ``run`` at ``--batch``; samples/s.
Outputs are compared first (they must agree), then timed: the backends one after the other
(torch first), not interleaved, so drift in the machine's load between them is not averaged
out. ``--threads`` sets the intra-op threads of both torch and onnxruntime (unset: each
library's default); both counts are in the JSON and the table title. Prints one JSON line per
row and a table with the torch/onnxruntime ratios (goal: onnxruntime step >= 2x eager torch at
batch 1 streaming).

Usage: ``python benchmarks/backend_speed.py [--networks mlp,cnn] [--timesteps 32]
[--steps 2000] [--batch 256] [--threads N]``
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.deployable import Deployable
from ganglion.runtime.demo import train_network
from ganglion.runtime.session import Session, load


def step_latencies(session: Session, x: np.ndarray, steps: int) -> np.ndarray:
    """Seconds per ``step`` call over ``steps`` chained steps at x's batch (after warm-up)."""
    state = session.init_state(x.shape[0])
    for _ in range(20):
        _, state = session.step(x, state)
    times = np.empty(steps)
    for i in range(steps):
        start = time.perf_counter()
        _, state = session.step(x, state)
        times[i] = time.perf_counter() - start
    return times


def run_throughput(session: Session, x: np.ndarray, repeats: int) -> float:
    """Samples per second of ``run`` on x (best of ``repeats`` after one warm-up)."""
    session.run(x)
    best = min(_timed(session, x) for _ in range(repeats))
    return x.shape[0] / best


def _timed(session: Session, x: np.ndarray) -> float:
    start = time.perf_counter()
    session.run(x)
    return time.perf_counter() - start


def measure(
    name: str, program: Deployable, x: np.ndarray, steps: int, threads: int | None
) -> list[dict[str, object]]:
    """One row per backend: latency percentiles, steps/s and run samples/s."""
    options = {} if threads is None else {"threads": threads}
    sessions = {"torch": load(program), "onnxruntime": load(program, "onnxruntime", **options)}
    reference = sessions["torch"].run(x)
    np.testing.assert_allclose(sessions["onnxruntime"].run(x), reference, atol=1e-4)
    rows = []
    for backend, session in sessions.items():
        lat = step_latencies(session, x[:1], steps)
        rows.append(
            {
                "program": name,
                "backend": backend,
                "timesteps": program.manifest.time.timesteps,
                "step_p50_us": float(np.percentile(lat, 50) * 1e6),
                "step_p99_us": float(np.percentile(lat, 99) * 1e6),
                "steps_per_s": float(1.0 / lat.mean()),
                "run_batch": int(x.shape[0]),
                "run_samples_per_s": run_throughput(session, x, 3),
                "torch_threads": torch.get_num_threads(),
                "ort_threads": threads,
            }
        )
    return rows


def main() -> None:
    """Parse flags, measure every network, print JSON lines and the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default="mlp,cnn")
    parser.add_argument("--timesteps", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch and onnxruntime intra-op threads"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    ort_threads = "default" if args.threads is None else args.threads
    table = Table(
        "program",
        "backend",
        "step p50 µs",
        "step p99 µs",
        "steps/s",
        f"run samples/s (batch {args.batch})",
        "step speed-up",
        "run speed-up",
        title=f"CPU, torch {torch.get_num_threads()} thread(s), onnxruntime {ort_threads} "
        "thread(s); backends timed one after the other, measured",
    )
    for net in args.networks.split(","):
        model, data = train_network(net)
        program = convert_spiking(
            model, data.x_train, None, SpikingOptions(timesteps=args.timesteps)
        )
        x = np.ascontiguousarray(data.x_test[: args.batch], dtype=np.float32)
        name = f"spiking-{net}"
        rows = measure(name, program, x, args.steps, args.threads)
        torch_row = rows[0]
        for row in rows:
            row["step_speedup_vs_torch"] = torch_row["step_p50_us"] / row["step_p50_us"]
            row["run_speedup_vs_torch"] = row["run_samples_per_s"] / torch_row["run_samples_per_s"]
            print(json.dumps(row))
            table.add_row(
                name,
                str(row["backend"]),
                f"{row['step_p50_us']:.1f}",
                f"{row['step_p99_us']:.1f}",
                f"{row['steps_per_s']:.0f}",
                f"{row['run_samples_per_s']:.0f}",
                f"{row['step_speedup_vs_torch']:.2f}x",
                f"{row['run_speedup_vs_torch']:.2f}x",
            )
    Console(width=150).print(table)


if __name__ == "__main__":
    main()

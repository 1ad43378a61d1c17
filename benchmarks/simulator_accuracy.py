"""Simulator accuracy: the CPU roofline's predicted latency vs the measured one on this CPU.

The host ``cpu`` profile is calibrated on dense matmuls (`calibrate_cpu`), then predicts each
program kind we can build here from its operation counts: spiking programs (converted MLP and
CNN, torch backend) and dense programs (an MLP run by torch). Prints one JSON line per program
and a table with the error; every latency is labelled measured or simulated.
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np
import torch
from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.device import OpCounts, Sample, calibrate_cpu, predict
from ganglion.device.profiles import detect_cpu_profile
from ganglion.device.simulator import measure_latency
from ganglion.runtime.opcount import count_ops, example_input
from ganglion.runtime.session import load
from rich.console import Console
from rich.table import Table


def matmul_samples(sizes: list[int], runs: int) -> list[Sample]:
    """Measured fp32 matmuls of each size (torch, this CPU)."""
    out = []
    for n in sizes:
        a, b = torch.rand(n, n), torch.rand(n, n)
        t = statistics.median(measure_latency(lambda a=a, b=b: a @ b, runs=runs, warmup=3))
        out.append(Sample(f"matmul{n}", OpCounts(macs={"fp32": float(n) ** 3}), t))
    return out


def programs(timesteps: int):
    """(name, kind, deployable) for each program kind built here."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)
    ).eval()
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 26 * 26, 10),
    ).eval()
    opts = SpikingOptions(timesteps=timesteps)
    yield (
        "snn-mlp",
        "spiking",
        convert_spiking(mlp, rng.random((64, 784), dtype=np.float32), options=opts),
    )
    yield (
        "snn-cnn",
        "spiking",
        convert_spiking(cnn, rng.random((64, 1, 28, 28), dtype=np.float32), options=opts),
    )


def main() -> None:
    """Calibrate, predict, measure, report."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--timesteps", type=int, default=16)
    args = ap.parse_args()
    cal = calibrate_cpu(detect_cpu_profile(), matmul_samples([512, 1024, 1536], args.runs))
    console = Console()
    console.print(
        f"calibrated cpu: {cal.effective_ops_per_s / 1e9:.1f} GFLOP/s effective, "
        f"overhead {cal.overhead_s * 1e6:.1f} µs, fit error "
        f"{cal.mean_abs_error_pct:.1f} % (on the fit samples)"
    )
    table = Table(
        "program",
        "kind",
        "measured (ms)",
        "predicted (ms, simulated)",
        "error",
        "bound",
        title="roofline vs this CPU, per batch call",
    )
    for name, kind, deployable in programs(args.timesteps):
        x = example_input(deployable, batch=args.batch)
        counts = count_ops(deployable, x)
        with load(deployable) as session:
            measured = statistics.median(
                measure_latency(lambda s=session, x=x: s.run(x), args.runs)
            )
        pred = predict(counts, cal.profile)
        predicted = pred.latency_s + (args.batch - 1) * (pred.latency_s - cal.overhead_s)
        error = 100.0 * (predicted - measured) / measured
        print(
            json.dumps(
                {
                    "benchmark": "simulator_accuracy",
                    "program": name,
                    "kind": kind,
                    "batch": args.batch,
                    "measured_s": measured,
                    "predicted_s": predicted,
                    "error_pct": error,
                    "bound": pred.bound,
                }
            )
        )
        table.add_row(
            name,
            kind,
            f"{measured * 1e3:.3f}",
            f"{predicted * 1e3:.3f}",
            f"{error:+.1f} %",
            pred.bound,
        )
    console.print(table)


if __name__ == "__main__":
    main()

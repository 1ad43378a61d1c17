"""Profiler overhead: the same workload with and without an energy meter polling, same run.

Blocks of runs alternate (no meter, meter, no meter, ...) so drift hits both sides alike; the
meter is this machine's hardware meter when one works, else the Jetson-rails meter polling a
fixture tree that a background writer keeps changing (the same sysfs reads as on a Jetson).
Prints one JSON line and a table; goal: overhead < 2 %.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time

import numpy as np
import torch
from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.device import JetsonRailsMeter, open_hardware_meter
from ganglion.device.sysfs_fixtures import PowerWriter, write_jetson
from ganglion.runtime.opcount import example_input
from ganglion.runtime.session import load
from rich.console import Console
from rich.table import Table


def workload(timesteps: int):
    """A converted spiking MLP (784-512-512-10) on the torch backend, and its input."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 512),
        torch.nn.ReLU(),
        torch.nn.Linear(512, 10),
    ).eval()
    calib = np.random.default_rng(0).random((128, 784), dtype=np.float32)
    deployable = convert_spiking(model, calib, options=SpikingOptions(timesteps=timesteps))
    return load(deployable), example_input(deployable, batch=8)


def timed_block(session, x, runs: int) -> list[float]:
    """Per-run seconds of ``runs`` calls."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(x)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    """Run the alternating blocks and report the overhead."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--blocks", type=int, default=10)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--timesteps", type=int, default=16)
    ap.add_argument("--interval-ms", type=float, default=20.0)
    args = ap.parse_args()
    session, x = workload(args.timesteps)
    timed_block(session, x, 5)
    plain: list[float] = []
    metered: list[float] = []
    with tempfile.TemporaryDirectory() as root, contextlib.ExitStack() as stack:
        meter, _ = open_hardware_meter()
        if meter is None:
            fixture = write_jetson(root, "orin-nano-8gb-jp62")
            stack.enter_context(PowerWriter(fixture, interval_s=0.01))
            meter = JetsonRailsMeter(root, interval_s=args.interval_ms / 1000)
        for _ in range(args.blocks):
            plain += timed_block(session, x, args.runs)
            with meter:
                metered += timed_block(session, x, args.runs)
    base, with_meter = statistics.median(plain), statistics.median(metered)
    overhead = 100.0 * (with_meter / base - 1.0)
    row = {
        "benchmark": "profiler_overhead",
        "meter": meter.source,
        "runs_each": len(plain),
        "median_s_without": base,
        "median_s_with": with_meter,
        "ratio": with_meter / base,
        "overhead_pct": overhead,
        "goal_pct": 2.0,
        "cpu": "this machine (measured wall clock)",
    }
    print(json.dumps(row))
    table = Table("meter", "median without (ms)", "median with (ms)", "ratio", "overhead")
    table.add_row(
        meter.source,
        f"{base * 1e3:.3f}",
        f"{with_meter * 1e3:.3f}",
        f"{row['ratio']:.4f}",
        f"{overhead:+.2f} %",
    )
    Console().print(table)


if __name__ == "__main__":
    main()

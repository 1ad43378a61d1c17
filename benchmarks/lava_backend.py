"""Benchmark ``lava_backend``: Lava fixed_pt vs our fixed-point torch program, same batch.

The same quantized digits MLP (T=32, direct encoding) and the same test samples on both sides,
timed two ways: **per sample** (``run`` on one sample at a time, batch 1) and **batched** (one
``run`` on all the samples). Each way is timed ``--repeats`` rounds, the two sides interleaved
within a round; a row reports each side's median samples/s with its range and the median of
the per-round ratios torch / Lava with their range, at the stated batch. The outputs of both
sides are compared first (they must be identical). Torch threads are stated. Prints a JSON
line per row, then the table.

    python benchmarks/lava_backend.py [--samples 16] [--timesteps 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ganglion.converters.loihi_quantize import quantize_loihi2
from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.runtime.demo import train_network
from ganglion.runtime.session import Session, load


def _per_sample(session: Session, x: np.ndarray) -> float:
    """Seconds to run every sample of ``x`` on its own (batch 1)."""
    start = time.perf_counter()
    for i in range(x.shape[0]):
        session.run(x[i : i + 1])
    return time.perf_counter() - start


def _batched(session: Session, x: np.ndarray) -> float:
    """Seconds of one ``run`` on all of ``x``."""
    start = time.perf_counter()
    session.run(x)
    return time.perf_counter() - start


def main() -> None:
    """Compare outputs, time both ways and print JSON lines and a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--timesteps", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, data = train_network("mlp")
    program = convert_spiking(
        model, data.x_train, data.y_train, SpikingOptions(timesteps=args.timesteps)
    )
    quantized = quantize_loihi2(program, data.x_train, data.y_train)
    x, y = data.x_test[: args.samples], data.y_test[: args.samples]
    with load(quantized, backend="torch") as ours, load(quantized, backend="lava") as lava:
        ours_out, lava_out = ours.run(x), lava.run(x)  # warm-up: Lava compiles here
        identical = bool(np.array_equal(ours_out, lava_out))
        table = [f"{'way':<12}{'batch':>6}{'torch samples/s':>24}{'lava samples/s':>24}"
                 f"{'torch / lava':>22}"]  # fmt: skip
        for way, timer, batch in (("per sample", _per_sample, 1),
                                  ("batched", _batched, x.shape[0])):  # fmt: skip
            secs: dict[str, list[float]] = {"torch": [], "lava": []}
            for _ in range(args.repeats):
                secs["torch"].append(timer(ours, x))
                secs["lava"].append(timer(lava, x))
            rate = {k: x.shape[0] / np.array(v) for k, v in secs.items()}
            ratios = rate["torch"] / rate["lava"]
            row = {
                "benchmark": "lava_backend",
                "network": "digits_mlp",
                "timesteps": args.timesteps,
                "way": way,
                "batch": batch,
                "samples": int(x.shape[0]),
                "repeats": args.repeats,
                "torch_threads": torch.get_num_threads(),
                "torch_fixed_samples_per_s": float(np.median(rate["torch"])),
                "torch_range": [float(rate["torch"].min()), float(rate["torch"].max())],
                "lava_fixed_pt_samples_per_s": float(np.median(rate["lava"])),
                "lava_range": [float(rate["lava"].min()), float(rate["lava"].max())],
                "ratio_torch_over_lava": float(np.median(ratios)),
                "ratio_range": [float(ratios.min()), float(ratios.max())],
                "identical_outputs": identical,
                "lava_accuracy": float((lava_out.argmax(-1) == y).mean()),
            }
            print(json.dumps(row))
            table.append(
                f"{way:<12}{batch:>6}{row['torch_fixed_samples_per_s']:>24.1f}"
                f"{row['lava_fixed_pt_samples_per_s']:>24.2f}"
                f"{row['ratio_torch_over_lava']:>12.0f}x ({ratios.min():.0f}–{ratios.max():.0f})"
            )
    print("\n".join(table))
    print(f"identical outputs: {identical}")


if __name__ == "__main__":
    main()

"""Tokens per second of greedy generation, torch vs ONNX Runtime, same bundle, same run.

Each architecture (untrained, d_model and layers as given) is saved once as a bundle and
loaded on both backends; both generate the same ``--tokens`` greedy tokens after the same
prompt (checked equal), interleaved over ``--repeats``; the median and spread of tokens/s are
reported with the ratio ONNX Runtime / torch. Batch 1, threads stated.

Usage: ``python benchmarks/generate_backends.py [--models rwkv,spikegpt,gla,gam,gpt]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ganglion.models.sequence import sequence_model_class
from ganglion.models.sequence.program import sequence_deployable
from ganglion.runtime import load
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.generation import Sampling, generate

BACKENDS = ("torch", "onnxruntime")


def main() -> None:
    """Run the comparison and print JSON lines and a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="rwkv,spikegpt,gla,gam,gpt")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prompt, sampling = list(b"The quick brown fox "), Sampling(args.tokens)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            torch.manual_seed(0)
            cls = sequence_model_class(name)
            config = {**cls().to_config(), "d_model": args.d_model, "n_layers": args.layers}
            bundle = save_bundle(sequence_deployable(cls.from_config(config)), Path(tmp) / name)
            sessions = {
                b: load(bundle, backend=b, threads=args.threads)
                if b == "onnxruntime"
                else load(bundle)
                for b in BACKENDS
            }
            tokens = {b: list(generate(s, prompt, sampling)) for b, s in sessions.items()}
            rates: dict[str, list[float]] = {b: [] for b in BACKENDS}
            for _ in range(args.repeats):
                for b, s in sessions.items():
                    start = time.perf_counter()
                    list(generate(s, prompt, sampling))
                    rates[b].append(args.tokens / (time.perf_counter() - start))
            medians = {b: float(np.median(r)) for b, r in rates.items()}
            row = {
                "model": name,
                "same_tokens": tokens["torch"] == tokens["onnxruntime"],
                **{f"{b}_tokens_per_s": medians[b] for b in BACKENDS},
                **{f"{b}_min_max": [float(min(r)), float(max(r))] for b, r in rates.items()},
                "ratio_onnxruntime_over_torch": medians["onnxruntime"] / medians["torch"],
                "batch": 1,
                "threads": args.threads,
                "kind": "measured (this CPU)",
            }
            rows.append(row)
            print(json.dumps(row))
    table = Table(
        "model",
        "torch tok/s",
        "onnxruntime tok/s",
        "ratio",
        "same tokens",
        title=f"greedy generation, batch 1, {args.threads} thread(s), measured",
    )
    for r in rows:
        table.add_row(
            r["model"],
            f"{r['torch_tokens_per_s']:.0f}",
            f"{r['onnxruntime_tokens_per_s']:.0f}",
            f"{r['ratio_onnxruntime_over_torch']:.2f}x",
            str(r["same_tokens"]),
        )
    Console().print(table)


if __name__ == "__main__":
    main()

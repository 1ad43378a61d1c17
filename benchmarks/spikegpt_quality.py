"""Bits per character of RWKV, its SpikeGPT conversion, and SpikeGPT trained from scratch.

Trains a byte-level RWKV on an offline corpus, converts it (LIF neurons with threshold 1, then
calibrated per channel, then a short surrogate-gradient fine-tune), and trains a SpikeGPT from
scratch on the same corpus for the RWKV's steps plus the fine-tune's, so both spiking models
get the same step budget. Every row is scored on the same held-out characters (streaming,
state carried). Prints one JSON line per row and a table.

Default run: d_model 128, 2 layers, 400 + 100 steps of 16 × 128 bytes, one torch thread
(these small per-token ops run faster on one thread than on two); about 10 minutes on a
2-core CPU.

Usage: ``python benchmarks/spikegpt_quality.py [--steps 400] [--finetune-steps 100]
[--layers 2] [--d-model 128] [--corpus prose] [--eval-chars N] [--threads 1] [--seed 0]``
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ganglion.converters.spikegpt import convert_spikegpt
from ganglion.models.recipes.lm_training import heldout_bpc, train_lm
from ganglion.models.recipes.text import CORPORA, load_corpus, random_windows
from ganglion.models.sequence.rwkv import RWKV, RWKVConfig
from ganglion.models.sequence.spikegpt import SpikeGPT, SpikeGPTConfig

CALIB_WINDOWS, CALIB_LENGTH = 8, 256  # calibration: 2048 training bytes


def firing_rates(model: SpikeGPT, corpus, chars: int = 4096) -> dict[str, float]:
    """Firing rate of every spiking module on the first ``chars`` held-out bytes."""
    model.reset_spike_stats()
    model.record_spikes = True
    ids = torch.from_numpy(corpus.heldout[:chars].astype(np.int64))[None]
    with torch.no_grad():
        model(ids)
    model.record_spikes = False
    return {name: round(s["firing_rate"], 4) for name, s in model.spike_stats().items()}


def mean_lif_rate(rates: dict[str, float] | None) -> str:
    """Mean firing rate over the LIF layers (not the binary embedding), for the table."""
    lif = [rate for name, rate in (rates or {}).items() if name != "emb"]
    return f"{sum(lif) / len(lif):.3f}" if lif else "-"


def main() -> None:
    """Train, convert, fine-tune and train from scratch; print JSON lines and a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="RWKV training steps")
    parser.add_argument("--finetune-steps", type=int, default=100)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--finetune-lr", type=float, default=3e-3)
    parser.add_argument("--corpus", default="prose", choices=CORPORA)
    parser.add_argument("--eval-chars", type=int, default=None, help="default: all held-out")
    parser.add_argument(
        "--float-embedding", action="store_true", help="scratch SpikeGPT without binary embedding"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpus = load_corpus(args.corpus)
    shape = {"d_model": args.d_model, "n_layers": args.layers}
    train = {"batch": args.batch, "length": args.length, "seed": args.seed, "eval_chars": 0}
    rows: list[dict] = []

    def add(model: str, steps: int, bpc: float, seconds: float, cpu: float, **extra) -> None:
        row = {
            "benchmark": "spikegpt_quality",
            "model": model,
            "corpus": corpus.name,
            "training_steps": steps,
            "heldout_bpc": round(bpc, 4),
            "train_seconds": round(seconds, 1),
            "train_cpu_seconds": round(cpu, 1),
            **extra,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    torch.manual_seed(args.seed)
    rwkv = RWKV(RWKVConfig(**shape))
    rwkv_run = train_lm(rwkv, corpus, args.steps, lr=args.lr, **train)

    rng = np.random.default_rng(args.seed + 1)
    calib = torch.from_numpy(random_windows(corpus.train, CALIB_WINDOWS, CALIB_LENGTH - 1, rng))
    snn, report = convert_spikegpt(
        rwkv,
        calib,
        args.finetune_steps,
        corpus,
        eval_chars=args.eval_chars,
        finetune_batch=args.batch,
        finetune_length=args.length,
        finetune_lr=args.finetune_lr,
        seed=args.seed,
    )
    add("rwkv", args.steps, report.rwkv_bpc, rwkv_run.seconds, rwkv_run.cpu_seconds)
    tokens = {"calibration_tokens": report.calibration_tokens}
    # rates on the calibration ids, from the channel-fit pass
    calib_rates = {name: round(fit.firing_rate, 4) for name, fit in report.layers.items()}
    add("spikegpt converted, threshold 1", args.steps, report.uncalibrated_bpc, 0.0, 0.0)
    add(
        "spikegpt converted, calibrated",
        args.steps,
        report.calibrated_bpc,
        report.calibration_seconds,
        report.calibration_cpu_seconds,
        **tokens,
        firing_rates=calib_rates,
    )
    if report.finetuned_bpc is not None:
        add(
            "spikegpt converted, fine-tuned",
            args.steps + args.finetune_steps,
            report.finetuned_bpc,
            report.finetune_seconds,
            report.finetune_cpu_seconds,
            finetune_tokens=report.finetune_tokens,
            firing_rates=firing_rates(snn, corpus),
        )

    torch.manual_seed(args.seed)
    scratch = SpikeGPT(SpikeGPTConfig(**shape, binary_embedding=not args.float_embedding))
    budget = args.steps + args.finetune_steps
    run = train_lm(scratch, corpus, budget, lr=args.lr, **train)
    add(
        "spikegpt from scratch" + (", float embedding" if args.float_embedding else ""),
        budget,
        heldout_bpc(scratch, corpus, args.eval_chars),
        run.seconds,
        run.cpu_seconds,
        firing_rates=firing_rates(scratch, corpus),
    )

    table = Table(
        "model",
        "steps",
        "held-out BPC",
        "train s (wall)",
        "train s (CPU)",
        "mean LIF rate",
        title=f"{corpus.name}: d_model {args.d_model}, {args.layers} layers, "
        f"{args.batch}×{args.length} bytes/step, {args.threads} thread(s), measured on this CPU",
    )
    for row in rows:
        table.add_row(
            row["model"],
            str(row["training_steps"]),
            f"{row['heldout_bpc']:.3f}",
            f"{row['train_seconds']:.0f}",
            f"{row['train_cpu_seconds']:.0f}",
            mean_lif_rate(row.get("firing_rates")),
        )
    Console(width=120).print(table)


if __name__ == "__main__":
    main()

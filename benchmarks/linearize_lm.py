"""Perplexity of a softmax Transformer and of its linear-time conversions (GLA, GAM).

Trains a byte-level GPT on an offline corpus, then linearizes it (``converters/linearize.py``:
weights carried over, attention transfer, fine-tune) to GLA and to GAM, spending fewer than
5 % of the source's training tokens. Two ablations on the same token budget: each target
fine-tuned without the attention transfer. Every row is scored on the same held-out
characters: the GPT with sliding windows of its context, GLA and GAM streaming (state carried).
Perplexity is per character, 2 ** bits per character. Prints one JSON line per row and a table.
Goal: GLA within 10 % of the source's perplexity after the fine-tune.

Default run: d_model 128, 2 layers, 4 heads, context 128; source 1600 steps of 16 x 128
bytes; 100 transfer + 200 fine-tune steps of 4 x 128 bytes (4.7 % of the source's tokens);
one torch thread; about 10 minutes on a 2-core CPU. ``--scratch`` adds a GLA trained from
scratch with the source's steps (another ~13 minutes).

Usage: ``python benchmarks/linearize_lm.py [--steps 1600] [--distill-steps 100]
[--finetune-steps 200] [--batch 4] [--d-model 128] [--layers 2] [--heads 4] [--length 128]
[--corpus prose] [--eval-chars N] [--threads 1] [--seed 0] [--scratch]``
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from rich.console import Console
from rich.table import Table

from ganglion.converters.linearize import linearize
from ganglion.models.recipes.lm_training import heldout_bpc, train_lm
from ganglion.models.recipes.text import CORPORA, load_corpus
from ganglion.models.sequence.gla import GLALM, GLAConfig
from ganglion.models.sequence.gpt import GPT, GPTConfig

GOAL_RATIO = 1.10  # GLA's perplexity at most 10 % above the source's
GOAL_FRACTION = 0.05  # on fewer than 5 % of the source's training tokens


def main() -> None:
    """Train the source, linearize it to GLA and GAM, print JSON lines and a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1600, help="source GPT training steps")
    parser.add_argument("--distill-steps", type=int, default=100)
    parser.add_argument("--finetune-steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=4, help="windows per conversion step")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--length", type=int, default=128, help="window = GPT context")
    parser.add_argument("--corpus", default="prose", choices=CORPORA)
    parser.add_argument("--eval-chars", type=int, default=None, help="default: all held-out")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scratch", action="store_true", help="also train GLA from scratch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpus = load_corpus(args.corpus)
    rows: list[dict] = []

    def add(model: str, bpc: float, tokens: int, seconds: float, cpu: float, **extra) -> None:
        row = {
            "benchmark": "linearize_lm",
            "model": model,
            "corpus": corpus.name,
            "heldout_bpc": round(bpc, 4),
            "perplexity": round(2.0**bpc, 4),
            "perplexity_vs_source": round(2.0 ** (bpc - rows[0]["heldout_bpc"]), 4)
            if rows
            else 1.0,
            "tokens": tokens,
            "seconds": round(seconds, 1),
            "cpu_seconds": round(cpu, 1),
            **extra,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    start, cpu_start = time.perf_counter(), time.process_time()
    torch.manual_seed(args.seed)
    shape = {"d_model": args.d_model, "n_layers": args.layers, "n_heads": args.heads}
    source = GPT(GPTConfig(**shape, context=args.length))
    run = train_lm(
        source, corpus, args.steps, length=args.length, seed=args.seed, eval_chars=args.eval_chars
    )
    add("gpt (source)", run.heldout_bpc, run.tokens_seen, run.seconds, run.cpu_seconds)

    for to in ("gla", "gam"):
        for distill in (args.distill_steps, 0):
            _, report = linearize(
                source,
                to,
                corpus,
                distill,
                args.finetune_steps + (args.distill_steps - distill),  # the same token budget
                batch=args.batch,
                length=args.length,
                eval_chars=args.eval_chars,
                source_tokens=run.tokens_seen,
                seed=args.seed,
            )
            fraction = {"token_fraction": round(report.token_fraction, 4)}
            if distill:
                errors = {k: round(v["after"], 3) for k, v in report.attention_mse.items()}
                add(
                    f"{to}: carried over",
                    report.carried.bpc,
                    0,
                    0.0,
                    0.0,
                )
                add(
                    f"{to}: attention transfer",
                    report.transferred.bpc,
                    report.distill_tokens,
                    report.distill_seconds,
                    report.distill_cpu_seconds,
                    attention_mse=errors,
                )
                name = f"{to}: transfer + fine-tune"
            else:
                name = f"{to}: fine-tune only (ablation)"
            add(
                name,
                report.finetuned.bpc,
                report.tokens_spent,
                report.distill_seconds + report.finetune_seconds,
                report.distill_cpu_seconds + report.finetune_cpu_seconds,
                **fraction,
            )

    if args.scratch:
        torch.manual_seed(args.seed)
        gla = GLALM(GLAConfig(**shape, expand_k=1.0))
        scratch = train_lm(
            gla, corpus, args.steps, length=args.length, seed=args.seed, eval_chars=0
        )
        add(
            "gla from scratch (source's budget)",
            heldout_bpc(gla, corpus, args.eval_chars),
            scratch.tokens_seen,
            scratch.seconds,
            scratch.cpu_seconds,
        )

    table = Table(
        "model",
        "held-out BPC",
        "perplexity",
        "vs source",
        "tokens",
        "s (wall)",
        "s (CPU)",
        title=f"{corpus.name}: d_model {args.d_model}, {args.layers} layers, {args.heads} heads, "
        f"context {args.length}, {args.threads} thread(s), measured on this CPU",
    )
    for row in rows:
        table.add_row(
            row["model"],
            f"{row['heldout_bpc']:.3f}",
            f"{row['perplexity']:.3f}",
            f"{row['perplexity_vs_source']:.3f}",
            f"{row['tokens']:,}",
            f"{row['seconds']:.0f}",
            f"{row['cpu_seconds']:.0f}",
        )
    console = Console(width=120)
    console.print(table)
    gla = next(r for r in rows if r["model"] == "gla: transfer + fine-tune")
    met = gla["perplexity_vs_source"] <= GOAL_RATIO and gla["token_fraction"] < GOAL_FRACTION
    console.print(
        f"goal (GLA within 10 % of the source's perplexity on < 5 % of its tokens): "
        f"{'met' if met else 'not met'}: x{gla['perplexity_vs_source']:.3f} on "
        f"{gla['token_fraction']:.1%} of the tokens"
    )
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    console.print(f"total: {wall:.0f} s wall, {cpu:.0f} s CPU")


if __name__ == "__main__":
    main()

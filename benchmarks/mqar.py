"""Multi-query associative recall (MQAR) for the linear-time models and their softmax baseline.

Trains GPT, GLA and GAM of the same width and depth on Zoology's MQAR (keys and values
distinct per example, each key queried once at a power-law gap) and scores exact recall of
the values on held-out examples. Zoology's grid: V = 8192, (seq, pairs) = (64, 4), (128, 8),
(256, 16), 2 layers; attention solves every setting, GAM (context only through its
convolutions, receptive field layers * (k - 1) + 1) is expected to fail beyond it.

The learning rate is swept as Zoology does (``--lrs``, default 3e-4, 1e-3, 3e-3): each
architecture trains once per rate, the rate is chosen on a validation split of its own, and
the table reports that run's accuracy on the test split (every run prints its JSON line).
The rate matters: GLA at 3e-3 stays near chance where 1e-3 learns.

The default run, (64, 4) with V = 256, d = 64 and 1500 steps of 32 examples per model and
rate on one CPU thread, takes about half an hour: a quick comparison, about 1 % of Zoology's
training tokens. In such short runs GPT and GLA sit on the plateau at loss ~ln(pairs) (they
pick one of the example's values, accuracy ~1/pairs) before recall sets in; pass ``--steps``
(and a GPU's patience) to go past it. V = 256 keeps the output layer cheap on a CPU but lets
random filler tokens repeat keys (Zoology's V = 8192 makes that rare).
Prints one JSON line per row and a table.

Usage: ``python benchmarks/mqar.py [--archs gpt,gla,gam] [--settings 64:4,128:8] [--steps N]
[--lrs 3e-4,1e-3,3e-3]``
"""

from __future__ import annotations

import argparse
import json

import torch
from rich.console import Console
from rich.table import Table

from ganglion.models.recipes.mqar import make_mqar, mqar_accuracy, train_mqar
from ganglion.models.sequence import sequence_model_class


def build_model(architecture: str, args: argparse.Namespace, seq_len: int) -> torch.nn.Module:
    """A freshly initialized ``architecture`` of the benchmark's width and depth."""
    config: dict = {"vocab_size": args.vocab, "d_model": args.d_model, "n_layers": args.layers}
    if architecture in ("gpt", "gla"):
        config["n_heads"] = args.heads
    if architecture in ("gpt", "gam"):
        config["context"] = seq_len
    if architecture == "gam":
        config["slots"] = 2 * args.d_model  # the mixer's parameters match attention's 4 d^2
    torch.manual_seed(args.seed)
    return sequence_model_class(architecture).from_config(config)


def main() -> None:
    """Train and score every (architecture, setting) pair; print JSON lines and a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="gpt,gla,gam")
    parser.add_argument("--settings", default="64:4", help="seq:pairs, comma separated")
    parser.add_argument("--vocab", type=int, default=256, help="Zoology uses 8192")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--lrs", default="3e-4,1e-3,3e-3", help="learning rates swept, comma separated"
    )
    parser.add_argument("--train-examples", type=int, default=20_000)
    parser.add_argument("--valid-examples", type=int, default=500, help="to choose the rate")
    parser.add_argument("--test-examples", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lrs = [float(x) for x in args.lrs.split(",")]
    table = Table(
        "arch",
        "seq",
        "pairs",
        "params",
        "steps",
        "s/step",
        "valid acc. per lr",
        "lr",
        "final loss",
        "test accuracy",
        title=f"MQAR, V={args.vocab}, d={args.d_model}, {args.layers} layers, measured on this CPU",
    )
    for setting in args.settings.split(","):
        seq_len, pairs = (int(x) for x in setting.split(":"))
        train = make_mqar(args.train_examples, seq_len, pairs, args.vocab, seed=args.seed)
        test = make_mqar(args.test_examples, seq_len, pairs, args.vocab, seed=args.seed + 1)
        valid = make_mqar(args.valid_examples, seq_len, pairs, args.vocab, seed=args.seed + 2)
        for architecture in args.archs.split(","):
            runs = []
            for lr in lrs:
                model = build_model(architecture, args, seq_len)
                report = train_mqar(model, train, test, args.steps, args.batch, lr, args.seed)
                chosen_by = mqar_accuracy(model, valid)
                row = {"benchmark": "mqar", "seq_len": seq_len, "pairs": pairs,
                       "vocab": args.vocab, "d_model": args.d_model, "layers": args.layers,
                       "threads": args.threads, "valid_accuracy": chosen_by,
                       **report.to_dict()}  # fmt: skip
                print(json.dumps(row), flush=True)
                runs.append((chosen_by, report))
            best_valid, best = max(runs, key=lambda run: run[0])
            print(json.dumps({"benchmark": "mqar", "best": True, "seq_len": seq_len,
                              "pairs": pairs, "architecture": architecture, "lr": best.lr,
                              "valid_accuracy": best_valid,
                              "accuracy": best.accuracy}), flush=True)  # fmt: skip
            table.add_row(
                architecture,
                str(seq_len),
                str(pairs),
                f"{best.parameters:,}",
                str(best.steps),
                f"{best.seconds / best.steps:.3f}",
                " ".join(f"{r.lr:g}:{v:.3f}" for v, r in runs),
                f"{best.lr:g}",
                f"{best.final_loss:.3f}",
                f"{best.accuracy:.3f}",
            )
    Console().print(table)


if __name__ == "__main__":
    main()

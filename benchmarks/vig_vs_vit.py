"""ViG vs ViT on digits as the image grows: accuracy, parameters, FLOPs and CPU latency.

The 8x8 digits are upsampled by 1, 2, 4, 8 and 16 (8x8 up to 128x128) with the patch size
fixed, so the number of tokens grows with the image: ViT's attention grows with its square,
ViG's gated linear attention linearly. Both models (same width and depth) are trained for
``--epochs`` at the sizes up to ``--train-up-to`` (training at 128x128 is out of reach of a
CPU benchmark); FLOPs (PyTorch's counter, one image) and latency (median of repeats,
interleaved, batch 1 and 16, ``--threads``) are measured at every size. The crossover, per
batch size, is the smallest size where ViG's median latency is below ViT's ("no crossover up
to NxN" when there is none); it is printed as a summary JSON line and under the table.

Usage: ``python benchmarks/vig_vs_vit.py [--upsample 1,2,4,8,16] [--epochs 10]``
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from ganglion.models.recipes.digits import load_digits
from ganglion.models.recipes.vision_training import train_vision
from ganglion.models.vision import vision_model_class

MODELS = ("vig", "vit")


def _model(name: str, upsample: int) -> torch.nn.Module:
    torch.manual_seed(0)
    cls = vision_model_class(name)
    return cls.from_config({**cls().to_config(), "upsample": upsample}).eval()


def _latency_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> list[float]:
    with torch.inference_mode():
        model(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)
    return times


def crossover(rows: list[dict[str, Any]], batch: int) -> int | None:
    """The smallest side (px) where ViG's median latency at ``batch`` is below ViT's."""
    median = {(r["model"], r["side_px"]): r[f"ms_batch{batch}_median"] for r in rows}
    sides = sorted({r["side_px"] for r in rows})
    return next((s for s in sides if median["vig", s] < median["vit", s]), None)


def main() -> None:
    """Run the sweep and print JSON lines and a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upsample", default="1,2,4,8,16")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-up-to", type=int, default=32, help="largest trained side (px)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_digits(image=True)
    rows = []
    for up in (int(u) for u in args.upsample.split(",")):
        side = 8 * up
        models = {name: _model(name, up) for name in MODELS}
        accuracy = {}
        if side <= args.train_up_to:
            for name, model in models.items():
                accuracy[name] = train_vision(model.train(), data, args.epochs).test_accuracy
                model.eval()
        times: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.repeats):  # interleave models and batches within every repeat
            for batch in (1, 16):
                x = torch.from_numpy(data.x_test[:batch])
                for name, model in models.items():
                    times.setdefault((name, batch), []).extend(_latency_ms(model, x, 1))
        for name, model in models.items():
            counter = FlopCounterMode(display=False)
            with torch.inference_mode(), counter:
                model(torch.from_numpy(data.x_test[:1]))
            row = {
                "model": name,
                "side_px": side,
                "tokens": (side // model.to_config()["patch_size"]) ** 2,
                "params": sum(p.numel() for p in model.parameters()),
                "gflops": counter.get_total_flops() / 1e9,
                "accuracy": accuracy.get(name),
                **{f"ms_batch{b}_median": float(np.median(times[(name, b)])) for b in (1, 16)},
                **{
                    f"ms_batch{b}_min_max": [min(times[(name, b)]), max(times[(name, b)])]
                    for b in (1, 16)
                },
                "threads": args.threads,
                "kind": "measured (this CPU)",
            }
            rows.append(row)
            print(json.dumps(row))
    table = Table(
        "side",
        "model",
        "tokens",
        "params",
        "GFLOPs",
        "test acc",
        "ms b1",
        "ms b16",
        "ViG speed-up (b1)",
        title=f"ViG vs ViT on digits, {args.threads} thread(s)",
    )
    for side in sorted({r["side_px"] for r in rows}):
        pair = {r["model"]: r for r in rows if r["side_px"] == side}
        for name in MODELS:
            r = pair[name]
            speed = pair["vit"]["ms_batch1_median"] / pair["vig"]["ms_batch1_median"]
            table.add_row(
                f"{side}x{side}",
                name,
                f"{r['tokens']:,}",
                f"{r['params']:,}",
                f"{r['gflops']:.3f}",
                "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}",
                f"{r['ms_batch1_median']:.2f}",
                f"{r['ms_batch16_median']:.2f}",
                f"{speed:.2f}x" if name == "vig" else "",
            )
    crossovers = {b: crossover(rows, b) for b in (1, 16)}
    largest = max(r["side_px"] for r in rows)
    print(
        json.dumps(
            {
                "summary": "vig_vs_vit",
                **{f"crossover_side_px_batch{b}": c for b, c in crossovers.items()},
                "largest_side_px": largest,
                "kind": "measured (this CPU)",
            }
        )
    )
    console = Console(width=150)
    console.print(table)
    for b, c in crossovers.items():
        where = f"{c}x{c}" if c else f"no crossover up to {largest}x{largest}"
        console.print(f"crossover (ViG faster than ViT, median ms, batch {b}): {where}")


if __name__ == "__main__":
    main()

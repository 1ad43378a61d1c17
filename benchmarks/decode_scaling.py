"""Per-token decoding latency and memory as the context grows: our recurrent token models
(SpikeGPT, RWKV, GLA, GAM) vs a same-size GPT with a KV cache, in the same run.

Each model (d_model, layers and vocabulary equal; untrained weights: speed does not depend on
them) is prefilled to each context length through the torch backend's Session (prefill in
chunks of 512 tokens), then timed for ``--steps`` single-token ``step`` calls; the models are
interleaved within every repeat and the median and spread over repeats reported. Memory is
the recurrent state's bytes (exact) and the process's resident-set growth during the run.
Goal (issues 14, 15): ours flat in context, >= 5x faster per token than the GPT at 8192.

Usage: ``python benchmarks/decode_scaling.py [--contexts 128,1024,4096,8192] [--threads 1]``
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ganglion.models.sequence import sequence_model_class
from ganglion.models.sequence.program import sequence_deployable
from ganglion.runtime import load

PREFILL_CHUNK = 512


def _session(architecture: str, d_model: int, layers: int, context: int):
    torch.manual_seed(0)
    cls = sequence_model_class(architecture)
    config = {**cls().to_config(), "d_model": d_model, "n_layers": layers}
    if "context" in config:
        config["context"] = context + 1024
    return load(sequence_deployable(cls.from_config(config)))


def _prefilled(session, context: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    state = session.init_state(1)
    ids = rng.integers(0, 256, (1, context))
    for start in range(0, context, PREFILL_CHUNK):
        _, state = session.prefill({"ids": ids[:, start : start + PREFILL_CHUNK]}, state)
    return state


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


def main() -> None:
    """Run the sweep and print JSON lines and a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", default="128,1024,4096,8192")
    parser.add_argument("--models", default="spikegpt,rwkv,gla,gam,gpt")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    contexts = [int(c) for c in args.contexts.split(",")]
    models = args.models.split(",")
    rng = np.random.default_rng(0)
    rows = []
    for context in contexts:
        sessions = {m: _session(m, args.d_model, args.layers, max(contexts)) for m in models}
        states = {}
        rss = {}
        for m, s in sessions.items():
            before = _rss()
            states[m] = _prefilled(s, context, rng)
            rss[m] = _rss() - before
        times: dict[str, list[float]] = {m: [] for m in models}
        for _ in range(args.repeats):
            for m, s in sessions.items():  # interleaved: every repeat runs every model
                state = {k: v.copy() for k, v in states[m].items()}
                token = {"ids": np.array([7])}
                start = time.perf_counter()
                for _ in range(args.steps):
                    _, state = s.step(token, state)
                times[m].append((time.perf_counter() - start) / args.steps)
        for m in models:
            t = np.array(times[m]) * 1e3
            row = {
                "model": m,
                "context": context,
                "ms_per_token_median": float(np.median(t)),
                "ms_min": float(t.min()),
                "ms_max": float(t.max()),
                "state_bytes": int(sum(v.nbytes for v in states[m].values())),
                "prefill_rss_growth_bytes": int(rss[m]),
                "threads": args.threads,
                "batch": 1,
                "d_model": args.d_model,
                "layers": args.layers,
                "kind": "measured (this CPU)",
            }
            rows.append(row)
            print(json.dumps(row))
    gpt = {r["context"]: r["ms_per_token_median"] for r in rows if r["model"] == "gpt"}
    table = Table(
        "model",
        "context",
        "ms/token (median, min-max)",
        "state",
        "vs GPT",
        title=f"decode latency per token, batch 1, {args.threads} thread(s), measured",
    )
    for r in rows:
        ratio = gpt.get(r["context"], float("nan")) / r["ms_per_token_median"]
        table.add_row(
            r["model"],
            str(r["context"]),
            f"{r['ms_per_token_median']:.3f} ({r['ms_min']:.3f}-{r['ms_max']:.3f})",
            f"{r['state_bytes'] / 1024:,.0f} KiB",
            "-" if r["model"] == "gpt" else f"{ratio:.1f}x",
        )
    Console().print(table)


if __name__ == "__main__":
    main()

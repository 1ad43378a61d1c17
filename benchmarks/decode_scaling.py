"""Per-token decoding latency and peak memory as the context grows: our recurrent token models
(SpikeGPT, GLA, GAM; RWKV on request) vs a same-size GPT with a KV cache, in the same run.

Each model (d_model, layers and vocabulary equal; untrained weights: speed does not depend on
them) is prefilled to each context length on a torch Session (chunks of 512 tokens, the same
token ids for every model), and from that state ``--steps`` single-token ``step`` calls are
timed on the torch Session and/or an ONNX Runtime Session of the same model (``--backend``; the
state passes between them as named numpy arrays). Models and backends are interleaved within
every repeat; the median and spread over repeats are reported.

Memory: the state's bytes (exact), and the peak resident set of decoding, measured as
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` in a fresh process per (model, backend), forked
from a fork server started while this process is small (a spawned child's ru_maxrss starts at
its parent's resident set, which exec keeps as a floor). That process opens the model's saved
bundle (no ONNX export there: its transient peak would hide decoding's), decodes ``--steps``
tokens from an empty state (its baseline), then ``--steps`` tokens from each saved prefilled
state, contexts ascending; the figure is the peak minus the baseline, so it is the peak over
this and the shorter contexts, loading the saved state included.

Goal (issues 14, 15): ours flat in context and >= 5x faster per token than the GPT at 8192 on
CPU; the ratio at the largest context and whether the goal is met are in the summary JSON line.

Usage: ``python benchmarks/decode_scaling.py [--contexts 128,1024,4096,8192] [--threads 1]
[--backend torch|onnxruntime|both] [--models spikegpt,gla,gam,gpt]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import forkserver, get_context
from multiprocessing.context import BaseContext
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ganglion.models.sequence import sequence_model_class
from ganglion.models.sequence.program import sequence_deployable
from ganglion.runtime import load
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.session import Session

PREFILL_CHUNK = 512
BACKENDS = ("torch", "onnxruntime")
GOAL_CONTEXT, GOAL_RATIO = 8192, 5.0  # issues 14, 15: >= 5x the GPT's speed at 8192
DECODE_TOKEN = 7


def _deployable(architecture: str, d_model: int, layers: int, longest: int):
    """The untrained model, seeded, with a position table past the longest context."""
    torch.manual_seed(0)
    cls = sequence_model_class(architecture)
    config = {**cls().to_config(), "d_model": d_model, "n_layers": layers}
    if "context" in config:
        config["context"] = longest + 1024
    return sequence_deployable(cls.from_config(config))


def _open(bundle: Path, backend: str, threads: int) -> Session:
    if backend == "onnxruntime":
        return load(bundle, backend="onnxruntime", threads=threads)
    return load(bundle)


def _prefilled(session: Session, ids: np.ndarray) -> dict[str, np.ndarray]:
    """The state after ``ids`` ``[1, T]``, prefilled in chunks of PREFILL_CHUNK tokens."""
    state = session.init_state(1)
    for start in range(0, ids.shape[1], PREFILL_CHUNK):
        _, state = session.prefill({"ids": ids[:, start : start + PREFILL_CHUNK]}, state)
    return {k: np.array(v) for k, v in state.items()}


def _decode(session: Session, state: dict[str, np.ndarray], steps: int) -> None:
    """``steps`` single-token steps from ``state`` (which ``step`` leaves unchanged)."""
    token = {"ids": np.array([DECODE_TOKEN])}
    for _ in range(steps):
        _, state = session.step(token, state)


def _peak_rss_kib() -> int:
    """This process's peak resident set so far (ru_maxrss: KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def decode_peak_rss(
    bundle: Path, backend: str, steps: int, threads: int, states: list[tuple[int, str]]
) -> dict[int, int]:
    """Run in a fresh process: peak-RSS growth (bytes) of decoding ``steps`` tokens from each
    saved state ``(context, npz path)``, contexts ascending, over decoding from an empty state."""
    torch.set_num_threads(threads)
    session = _open(bundle, backend, threads)
    _decode(session, session.init_state(1), steps)
    baseline = _peak_rss_kib()
    growth = {}
    for context, path in sorted(states):
        with np.load(path, allow_pickle=False) as saved:
            state = {k: saved[k] for k in saved.files}
        _decode(session, state, steps)
        growth[context] = (_peak_rss_kib() - baseline) * 1024
    session.close()
    return growth


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", default="128,1024,4096,8192")
    parser.add_argument("--models", default="spikegpt,gla,gam,gpt")
    parser.add_argument("--backend", choices=[*BACKENDS, "both"], default="both")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    args.contexts = sorted(int(c) for c in args.contexts.split(","))
    args.models = args.models.split(",")
    args.backends = list(BACKENDS) if args.backend == "both" else [args.backend]
    if "gpt" not in args.models:
        parser.error("--models must include gpt, the baseline")
    return args


def _time_decoding(args: argparse.Namespace, tmp: Path) -> tuple[list[dict], dict]:
    """Latency rows per (model, backend, context); the saved states by (model, context)."""
    sizes = (args.d_model, args.layers, args.contexts[-1])
    bundles = {m: save_bundle(_deployable(m, *sizes), tmp / m) for m in args.models}
    sessions = {
        (m, b): _open(bundles[m], b, args.threads) for m in args.models for b in args.backends
    }
    prefill = {m: load(bundles[m]) for m in args.models}
    rows, saved = [], {}
    for context in args.contexts:
        ids = np.random.default_rng(context).integers(0, 256, (1, context))
        states = {m: _prefilled(prefill[m], ids) for m in args.models}
        for m, state in states.items():
            saved[m, context] = tmp / f"{m}-{context}.npz"
            np.savez(saved[m, context], **state)
        for (m, _), session in sessions.items():  # warm-up: first-call allocations
            _decode(session, states[m], 1)
        times: dict[tuple[str, str], list[float]] = {key: [] for key in sessions}
        for _ in range(args.repeats):
            for (m, b), session in sessions.items():  # interleaved: every repeat runs all
                start = time.perf_counter()
                _decode(session, states[m], args.steps)
                times[m, b].append((time.perf_counter() - start) / args.steps)
        for (m, b), t in times.items():
            ms = np.array(t) * 1e3
            rows.append(
                {
                    "model": m,
                    "backend": b,
                    "context": context,
                    "ms_per_token_median": float(np.median(ms)),
                    "ms_min": float(ms.min()),
                    "ms_max": float(ms.max()),
                    "state_bytes": int(sum(v.nbytes for v in states[m].values())),
                }
            )
    return rows, saved


def _fork_server() -> BaseContext:
    """A fork-server context, its server started now (call it while this process is small)."""
    context = get_context("forkserver")
    context.set_forkserver_preload(["torch", "onnxruntime", "ganglion.runtime"])
    forkserver.ensure_running()
    return context


def _measure_memory(
    args: argparse.Namespace, rows: list[dict], tmp: Path, saved: dict, fork: BaseContext
) -> None:
    """Add each row's decode peak-RSS growth, one fresh process per (model, backend)."""
    growth = {}
    for m in args.models:
        states = [(c, str(saved[m, c])) for c in args.contexts]
        for b in args.backends:
            with ProcessPoolExecutor(1, mp_context=fork) as pool:
                job = pool.submit(decode_peak_rss, tmp / m, b, args.steps, args.threads, states)
                growth[m, b] = job.result()
    for row in rows:
        row["decode_peak_rss_growth_bytes"] = growth[row["model"], row["backend"]][row["context"]]


def _summary(args: argparse.Namespace, rows: list[dict]) -> dict:
    """Ratio vs the GPT at the largest context per backend, the goal and whether it is met."""
    largest, smallest = args.contexts[-1], args.contexts[0]
    ms = {(r["model"], r["backend"], r["context"]): r["ms_per_token_median"] for r in rows}
    ours = [m for m in args.models if m != "gpt"]
    ratio = {b: {m: ms["gpt", b, largest] / ms[m, b, largest] for m in ours} for b in args.backends}
    return {
        "summary": "decode_scaling",
        "context": largest,
        "goal": f">= {GOAL_RATIO:g}x faster per token than the GPT (KV cache) at {GOAL_CONTEXT}",
        "ratio_vs_gpt": ratio,
        "goal_met": {b: {m: r >= GOAL_RATIO for m, r in rs.items()} for b, rs in ratio.items()}
        if largest == GOAL_CONTEXT
        else f"not judged: the largest context measured is {largest}, not {GOAL_CONTEXT}",
        "latency_growth_smallest_to_largest": {
            b: {m: ms[m, b, largest] / ms[m, b, smallest] for m in args.models}
            for b in args.backends
        },
        "threads": args.threads,
        "batch": 1,
        "d_model": args.d_model,
        "layers": args.layers,
        "steps": args.steps,
        "repeats": args.repeats,
        "load_average_1_5_15_min": [round(x, 2) for x in os.getloadavg()],
        "memory": "decode peak RSS growth: ru_maxrss in a fresh process per (model, backend), "
        "over its decoding from an empty state",
        "kind": "measured (this CPU)",
    }


def _table(args: argparse.Namespace, rows: list[dict]) -> Table:
    gpt = {
        (r["backend"], r["context"]): r["ms_per_token_median"] for r in rows if r["model"] == "gpt"
    }
    table = Table(
        "model",
        "backend",
        "context",
        "ms/token (median, min-max)",
        "state",
        "decode peak RSS growth",
        "vs GPT",
        title=f"decode latency per token, batch 1, {args.threads} thread(s), measured",
    )
    for r in sorted(rows, key=lambda r: (r["backend"], r["model"], r["context"])):
        ratio = gpt[r["backend"], r["context"]] / r["ms_per_token_median"]
        table.add_row(
            r["model"],
            r["backend"],
            str(r["context"]),
            f"{r['ms_per_token_median']:.3f} ({r['ms_min']:.3f}-{r['ms_max']:.3f})",
            _size(r["state_bytes"]),
            f"{r['decode_peak_rss_growth_bytes'] / 2**20:,.1f} MiB",
            "-" if r["model"] == "gpt" else f"{ratio:.1f}x",
        )
    return table


def _size(nbytes: int) -> str:
    """Bytes below 1 KiB, else KiB with one decimal."""
    return f"{nbytes} B" if nbytes < 1024 else f"{nbytes / 1024:,.1f} KiB"


def main() -> None:
    """Run the sweep and print JSON lines, a summary line and a table."""
    args = _arguments()
    fork = _fork_server()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        rows, saved = _time_decoding(args, Path(tmp))
        _measure_memory(args, rows, Path(tmp), saved, fork)
    for row in rows:
        row |= {"threads": args.threads, "batch": 1, "d_model": args.d_model}
        row |= {"layers": args.layers, "kind": "measured (this CPU)"}
        print(json.dumps(row))
    print(json.dumps(_summary(args, rows)))
    Console(width=120).print(_table(args, rows))


if __name__ == "__main__":
    main()

"""Per-call overheads of spiking programs on the CPU: the issue-18 goals beside the peers'.

Four measurements, each a ratio taken in one process from interleaved rounds (median and
min–max over ``--repeats`` rounds; a round times every side once over enough calls to last
about 20 ms), with the torch thread count stated:

- **step**: ``step`` at batch 1 with chained state, torch backend vs ONNX Runtime (goal: torch
  within 2× of ONNX Runtime), digits MLP and CNN at T=32.
- **run**: whole-sequence ``run``, ONNX Runtime vs torch at each batch (goal: ONNX Runtime at
  least as fast, speed-up ≥ 1).
- **fixed point**: the Loihi 2 fixed-point predictor (torch backend on the quantized MLP) at
  batch 1, compiled scan vs the PyTorch reference scan (``GANGLION_KERNELS=0``), outputs
  equal. The predictor before issue 18 also rebuilt its readout bias and scan parameters on
  every call, so this ratio understates the speed-up over it.
- **start-up**: ``ganglion --help`` and ``ganglion inspect BUNDLE`` in fresh processes:
  wall time and peak RSS (median over repeats), and which of torch, torch._dynamo, triton,
  lava, onnxruntime and numba were imported.

Prints one JSON line per row and a table. Usage: ``python benchmarks/spiking_cpu_overheads.py
[--repeats 7] [--threads 1] [--batches 1,16,256]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ganglion.converters.loihi_quantize import quantize_loihi2
from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.runtime.bundle import save_bundle
from ganglion.runtime.demo import train_network
from ganglion.runtime.session import Session, load

SAMPLE_SECONDS = 0.02
HEAVY = ("torch", "torch._dynamo", "triton", "lava", "onnxruntime", "numba")
PROBE = (  # runs the CLI in this process, then reports its imports and peak RSS (VmHWM)
    "import sys, runpy; sys.argv = ['ganglion', *sys.argv[1:]]\n"
    "try:\n    runpy.run_module('ganglion.runtime.cli', run_name='__main__')\n"
    "except SystemExit:\n    pass\n"
    "heavy = sorted(set(sys.modules) & set(%r))\n"
    "hwm = [ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')]\n"
    "print('HEAVY=' + ','.join(heavy), 'HWM_KB=' + hwm[0], file=sys.stderr)\n"
)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, np.ndarray]:
    """Seconds per call of each function over ``repeats`` interleaved rounds."""
    loops = {}
    for name, fn in fns.items():
        fn()
        start = time.perf_counter()
        fn()
        loops[name] = max(1, int(SAMPLE_SECONDS / max(time.perf_counter() - start, 1e-7)))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(loops[name]):
                fn()
            times[name].append((time.perf_counter() - start) / loops[name])
    return {name: np.array(t) for name, t in times.items()}


def ratio_row(
    goal: str, times: dict[str, np.ndarray], slow: str, fast: str, **extra: object
) -> dict:
    """A JSON row: both sides' median µs with range and the per-round ratio slow / fast."""
    ratios = times[slow] / times[fast]
    row: dict[str, object] = {"benchmark": "spiking_cpu_overheads", "goal": goal, **extra}
    for side in (slow, fast):
        row[f"{side}_us"] = float(np.median(times[side]) * 1e6)
        row[f"{side}_us_range"] = [float(times[side].min() * 1e6), float(times[side].max() * 1e6)]
    row.update(
        ratio=float(np.median(ratios)), ratio_range=[float(ratios.min()), float(ratios.max())]
    )
    row.update(ratio_is=f"{slow} / {fast}", repeats=len(ratios), threads=torch.get_num_threads())
    return row


def _stepper(session: Session, x: np.ndarray) -> Callable[[], None]:
    state = {"value": session.init_state(x.shape[0])}

    def step() -> None:
        _, state["value"] = session.step(x, state["value"])

    return step


def step_rows(name: str, program: object, x: np.ndarray, repeats: int) -> list[dict]:
    """torch vs ONNX Runtime ``step`` at batch 1, outputs compared first."""
    torch_s, ort_s = load(program), load(program, "onnxruntime", threads=torch.get_num_threads())
    a, b = torch_s.init_state(1), ort_s.init_state(1)
    for _ in range(4):
        out_a, a = torch_s.step(x[:1], a)
        out_b, b = ort_s.step(x[:1], b)
    np.testing.assert_allclose(out_a, out_b, atol=1e-4)
    times = interleaved({"torch": _stepper(torch_s, x[:1]), "ort": _stepper(ort_s, x[:1])}, repeats)
    return [ratio_row("torch step <= 2x ORT step", times, "torch", "ort", network=name, batch=1)]


def run_rows(name: str, program: object, x: np.ndarray, batches: list[int], repeats: int) -> list:
    """ONNX Runtime vs torch whole-sequence ``run`` at each batch, outputs compared first."""
    torch_s, ort_s = load(program), load(program, "onnxruntime", threads=torch.get_num_threads())
    rows = []
    for batch in batches:
        xb = np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])))
        np.testing.assert_allclose(torch_s.run(xb), ort_s.run(xb), atol=1e-4)
        fns = {"torch": lambda xb=xb: torch_s.run(xb), "ort": lambda xb=xb: ort_s.run(xb)}
        times = interleaved(fns, repeats)
        rows.append(
            ratio_row("ORT run >= torch run", times, "torch", "ort", network=name, batch=batch)
        )
    return rows


def fixed_point_row(program: object, data: object, repeats: int) -> dict:
    """Fixed-point predictor at batch 1: reference scan (``GANGLION_KERNELS=0``) vs compiled."""
    quantized = quantize_loihi2(program, data.x_train, data.y_train)
    session = load(quantized)
    x = np.ascontiguousarray(data.x_test[:1], dtype=np.float32)
    fast = session.run(x)
    os.environ["GANGLION_KERNELS"] = "0"
    try:
        before = session.run(x)
    finally:
        os.environ.pop("GANGLION_KERNELS")
    np.testing.assert_array_equal(fast, before)

    def reference() -> None:
        os.environ["GANGLION_KERNELS"] = "0"
        session.run(x)
        os.environ.pop("GANGLION_KERNELS")

    times = interleaved({"before": reference, "now": lambda: session.run(x)}, repeats)
    return ratio_row(
        "fixed-point predictor >= 10x before",
        times,
        "before",
        "now",
        network="mlp",
        batch=1,
        outputs_equal=True,
    )


def startup_rows(bundle: Path, repeats: int) -> list[dict]:
    """Wall time (process start to exit), peak RSS and heavy imports of ``ganglion --help`` and
    ``ganglion inspect``, each in a fresh interpreter."""
    rows = []
    for label, argv in (("--help", ["--help"]), ("inspect", ["inspect", str(bundle)])):
        walls, rss, heavy = [], [], ""
        for _ in range(repeats):
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", PROBE % (HEAVY,), *argv],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                check=False,
            )
            walls.append(time.perf_counter() - start)
            report = next((ln for ln in proc.stderr.splitlines() if ln.startswith("HEAVY=")), "")
            if proc.returncode != 0 or not report:
                raise RuntimeError(f"ganglion {label} failed: {proc.stderr[-300:]}")
            heavy_part, hwm_part = report.split(" ")
            heavy = heavy_part[len("HEAVY=") :]
            rss.append(int(hwm_part[len("HWM_KB=") :]) / 1024)
        rows.append(
            {
                "benchmark": "spiking_cpu_overheads",
                "goal": f"ganglion {label} < 1 s, no heavy imports",
                "seconds": float(np.median(walls)),
                "seconds_range": [float(min(walls)), float(max(walls))],
                "peak_rss_mb": float(np.median(rss)),
                "heavy_imports": heavy,
                "repeats": repeats,
            }
        )
    return rows


def _cell(row: dict) -> tuple[str, str]:
    if "ratio" in row:
        low, high = row["ratio_range"]
        return f"{row['ratio']:.2f}× ({low:.2f}–{high:.2f})", row["ratio_is"]
    low, high = row["seconds_range"]
    return (
        f"{row['seconds']:.2f} s ({low:.2f}–{high:.2f}), {row['peak_rss_mb']:.0f} MB",
        f"heavy imports: {row['heavy_imports'] or 'none'}",
    )


def main() -> None:
    """Measure every goal and print JSON lines and a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch and ORT intra-op threads")
    parser.add_argument("--batches", default="1,16,256")
    parser.add_argument("--timesteps", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    load_avg = os.getloadavg()[0]
    rows: list[dict] = []
    for net in ("mlp", "cnn"):
        model, data = train_network(net)
        program = convert_spiking(
            model, data.x_train, None, SpikingOptions(timesteps=args.timesteps)
        )
        x = np.ascontiguousarray(data.x_test, dtype=np.float32)
        rows += step_rows(net, program, x, args.repeats)
        rows += run_rows(net, program, x, batches, args.repeats)
        if net == "mlp":
            rows.append(fixed_point_row(program, data, args.repeats))
            with tempfile.TemporaryDirectory() as tmp:
                rows += startup_rows(save_bundle(program, Path(tmp) / "mlp"), args.repeats)
    title = f"CPU, {args.threads} thread(s), load average {load_avg:.2f} at start"
    table = Table("goal", "network", "batch", "measured", "what", title=title)
    for row in rows:
        row["load_average"] = load_avg
        print(json.dumps(row), flush=True)
        table.add_row(
            row["goal"], str(row.get("network", "-")), str(row.get("batch", "-")), *_cell(row)
        )
    Console(width=150).print(table)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

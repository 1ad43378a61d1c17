"""Per-token latency of GAM's ONNX step graph in its forms, on ONNX Runtime CPU, same run.

Forms (one untrained GAM LM, sizes as given; speed does not depend on the weights):
- ``plain``: the bundle's step graph (torch's export of ``GAMLM.step`` at the default opset);
- ``causal_conv_with_state``: one standard opset-27 ``CausalConvWithState`` node per layer
  (``runtime/onnx_export/gam_causal_conv.py``; ONNX Runtime expands its function body), the
  window transposed to and from the bundle's ``[B, k-1, d]`` layout inside the graph;
- ``mul_sum``: the same hand-built graph with the convolution as Concat/Mul/ReduceSum/Slice,
  which tells the op's own cost from the differences between the two exporters.

Every form is first checked against torch's ``step`` over ``--check-steps`` chained tokens
(max |difference| of logits and state reported; the run stops if a form exceeds the
sequence kind's 1e-4). Timing (``gla_step_forms``' helpers): one ONNX Runtime session per
form, 1 intra-op thread (``--threads``), sequential; per round each form (in rotated order)
runs ``--steps`` chained steps at each batch size after a warm-up; the median and min-max over
``--rounds`` rounds of the time per step (one token position of ``batch`` sequences) are
reported, with the 1-minute load average before and after. The summary line says which form
this run found faster (``faster_form``: the op's graph counts only if exact and faster at
batch 1) and why; bundles use the plain graph regardless (``bundle_form``: they export at the
default opset 17, below the op's 27).

Usage: ``python benchmarks/gam_step_forms.py [--d-model 128] [--layers 4] [--batches 1,16]
[--rounds 7] [--steps 200] [--threads 1]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from gla_step_forms import open_session, per_step_us, step_errors  # noqa: E402

from ganglion.models.sequence.gam import GAMLM, GAMConfig  # noqa: E402
from ganglion.models.sequence.program import sequence_deployable  # noqa: E402
from ganglion.runtime.onnx_export import naming  # noqa: E402
from ganglion.runtime.onnx_export.export import export_graph  # noqa: E402
from ganglion.runtime.onnx_export.gam_causal_conv import gam_step_graph  # noqa: E402

LOGITS_ATOL = 1e-4  # the sequence kind's parity tolerance
FORMS = ("plain", "causal_conv_with_state", "mul_sum")
WARM_UP = 3  # steps per_step_us runs before timing


def step_graphs(model: GAMLM) -> dict[str, onnx.ModelProto]:
    """The step graph of ``model`` in every form."""
    return {
        "plain": export_graph(sequence_deployable(model), "step", naming.DEFAULT_OPSET),
        "causal_conv_with_state": gam_step_graph(model),
        "mul_sum": gam_step_graph(model, convolution="mul_sum"),
    }


def measure(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows (one per form and batch) and the summary."""
    if WARM_UP + args.steps > args.context:
        raise SystemExit(f"--steps {args.steps} plus {WARM_UP} warm-up exceed --context")
    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = GAMConfig(
        d_model=args.d_model, n_layers=args.layers, slots=args.slots, context=args.context
    )
    model = GAMLM(config).eval()
    graphs = step_graphs(model)
    sessions = {form: open_session(g, args.threads) for form, g in graphs.items()}
    errors = {form: step_errors(model, sessions[form], args.check_steps) for form in FORMS}
    for form, err in errors.items():
        if err["max_logits_error"] > LOGITS_ATOL:
            raise SystemExit(f"{form}: logits differ from torch by {err['max_logits_error']:.2e}")
    times: dict[tuple[str, int], list[float]] = {(f, b): [] for f in FORMS for b in args.batches}
    for round_ in range(args.rounds):
        for batch in args.batches:
            for form in FORMS[round_ % len(FORMS) :] + FORMS[: round_ % len(FORMS)]:
                times[form, batch].append(per_step_us(sessions[form], model, batch, args.steps, 1))
    rows = [
        {
            "form": form,
            "batch": batch,
            "opset": graphs[form].opset_import[0].version,
            "us_per_step_median": float(np.median(values)),
            "us_per_step_min_max": [float(min(values)), float(max(values))],
            **errors[form],
        }
        for (form, batch), values in times.items()
    ]
    return rows, _summary(rows, args, [load_before, os.getloadavg()[0]])


def _summary(
    rows: list[dict[str, Any]], args: argparse.Namespace, load: list[float]
) -> dict[str, Any]:
    median = {(r["form"], r["batch"]): r["us_per_step_median"] for r in rows}
    ratio = {
        f"causal_conv_over_{base}_b{b}": median["causal_conv_with_state", b] / median[base, b]
        for base in ("plain", "mul_sum")
        for b in args.batches
    }
    first = args.batches[0]
    faster = median["causal_conv_with_state", first] < median["plain", first]
    return {
        "summary": "gam_step_forms",
        **ratio,
        "faster_form": "causal_conv_with_state" if faster else "plain",
        "bundle_form": "plain",
        "reason": f"the op's graph is exact and {'faster' if faster else 'not faster'} than the "
        f"plain graph at batch {first}",
        "d_model": args.d_model,
        "layers": args.layers,
        "slots": args.slots,
        "threads": args.threads,
        "rounds": args.rounds,
        "steps": args.steps,
        "load_avg_1min_before_after": load,
        "cpus": os.cpu_count(),
        "onnxruntime": ort.__version__,
        "kind": "measured (this CPU)",
    }


def main() -> None:
    """Parse flags, measure, print JSON lines and the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--slots", type=int, default=256)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[1, 16])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=200, help="tokens per form per round")
    parser.add_argument("--check-steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rows, summary = measure(args)
    table = Table(
        "form", "batch", "opset", "µs/step median", "min-max", "max |logits - torch|", "state"
    )
    for row in rows:
        print(json.dumps(row))
        low, high = row["us_per_step_min_max"]
        table.add_row(
            row["form"],
            str(row["batch"]),
            str(row["opset"]),
            f"{row['us_per_step_median']:.1f}",
            f"{low:.1f}-{high:.1f}",
            f"{row['max_logits_error']:.1e}",
            f"{row['max_state_error']:.1e}",
        )
    print(json.dumps(summary))
    Console(width=150).print(table)


if __name__ == "__main__":
    main()

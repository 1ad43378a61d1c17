"""Per-token latency of GLA's ONNX step graph in its forms, on ONNX Runtime CPU, same run.

Forms (one untrained GLA LM, sizes as given; speed does not depend on the weights):
- ``plain``: the bundle's step graph (torch's export of ``GLALM.step`` at the default opset);
- ``linear_attention``: one standard opset-27 ``LinearAttention`` (gated) node per layer
  (``runtime/onnx_export/gla_linear_attention.py``; ONNX Runtime expands it to a ``Scan``);
- ``matmul``: the same hand-built graph with the recurrence as Exp/Mul/MatMul, which tells the
  op's own cost from the differences between the two exporters;
- ``linear_attention_prefill``: the LinearAttention prefill graph over ``--prefill`` tokens
  per call, its latency divided by the tokens (the op's ``Scan`` runs over them).

Every form is first checked against torch's ``step`` over ``--check-steps`` chained tokens
(max |difference| of logits and state reported; the run stops if a form exceeds the
sequence kind's 1e-4). Timing: one ONNX Runtime session per form, 1 intra-op thread
(``--threads``), sequential; per round each form (in rotated order) runs ``--steps`` chained
steps at each batch size after a warm-up; the median and min-max over ``--rounds`` rounds of
the time per step (one token position of ``batch`` sequences; for the prefill graph, a call's
time divided by its tokens) are reported. The summary line says which form this run found
faster (``faster_form``: the op's graph counts only if exact and faster at every batch size
measured) and why; bundles use the plain graph regardless (``bundle_form``: they export at
the default opset 17, below the op's 27).

Usage: ``python benchmarks/gla_step_forms.py [--d-model 128] [--layers 4] [--batches 1,16]
[--rounds 7] [--steps 200] [--threads 1]``
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from ganglion.models.sequence.base import SequenceModel
from ganglion.models.sequence.gla import GLALM, GLAConfig
from ganglion.models.sequence.program import sequence_deployable
from ganglion.runtime.onnx_export import naming
from ganglion.runtime.onnx_export.export import export_graph
from ganglion.runtime.onnx_export.gla_linear_attention import gla_prefill_graph, gla_step_graph

LOGITS_ATOL = 1e-4  # the sequence kind's parity tolerance
STEP_FORMS = ("plain", "linear_attention", "matmul")
PREFILL_FORM = "linear_attention_prefill"


def step_graphs(model: GLALM) -> dict[str, onnx.ModelProto]:
    """The step graph of ``model`` in every form."""
    return {
        "plain": export_graph(sequence_deployable(model), "step", naming.DEFAULT_OPSET),
        "linear_attention": gla_step_graph(model),
        "matmul": gla_step_graph(model, recurrence="matmul"),
    }


def open_session(graph: onnx.ModelProto, threads: int) -> Any:
    """An ONNX Runtime CPU session of ``graph`` with ``threads`` intra-op threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(
        graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def step_errors(model: SequenceModel, session: Any, steps: int, batch: int = 2) -> dict[str, float]:
    """Max |ONNX - torch| of logits and of the state over ``steps`` chained tokens."""
    rng = np.random.default_rng(0)
    state = model.init_state(batch)
    ours = {n: s.numpy() for n, s in state.items()}
    logits_error = state_error = 0.0
    for _ in range(steps):
        ids = rng.integers(0, model.vocab_size, batch)
        with torch.no_grad():
            expected, state = model.step(torch.from_numpy(ids), state)
        got = session.run(None, {"ids": ids, **_state_feeds(ours)})
        ours = dict(zip(state, got[1:], strict=True))
        logits_error = max(logits_error, float(np.abs(got[0] - expected.numpy()).max()))
        state_error = max(
            state_error, max(float(np.abs(ours[n] - state[n].numpy()).max()) for n in state)
        )
    return {"max_logits_error": logits_error, "max_state_error": state_error}


def _state_feeds(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {naming.state_input(n): v for n, v in state.items()}


def per_step_us(session: Any, model: SequenceModel, batch: int, steps: int, tokens: int) -> float:
    """Microseconds per token position (a step of ``batch`` sequences) over ``steps`` chained
    calls of ``tokens`` positions each."""
    names = [o.name for o in session.get_outputs()]
    shape = (batch,) if tokens == 1 else (batch, tokens)
    ids = np.full(shape, 7, dtype=np.int64)
    state = {n: s.numpy() for n, s in model.init_state(batch).items()}
    for _ in range(3):
        session.run(names, {"ids": ids, **_state_feeds(state)})
    start = time.perf_counter()
    for _ in range(steps):
        out = session.run(names, {"ids": ids, **_state_feeds(state)})
        state = dict(zip(state, out[1:], strict=True))
    return (time.perf_counter() - start) / (steps * tokens) * 1e6


def measure(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows (one per form and batch) and the summary."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = GLAConfig(d_model=args.d_model, n_layers=args.layers, n_heads=args.heads)
    model = GLALM(config).eval()
    graphs = {**step_graphs(model), PREFILL_FORM: gla_prefill_graph(model)}
    sessions = {form: open_session(g, args.threads) for form, g in graphs.items()}
    errors = {form: step_errors(model, sessions[form], args.check_steps) for form in STEP_FORMS}
    for form, err in errors.items():
        if err["max_logits_error"] > LOGITS_ATOL:
            raise SystemExit(f"{form}: logits differ from torch by {err['max_logits_error']:.2e}")
    forms = [*STEP_FORMS, PREFILL_FORM]
    times: dict[tuple[str, int], list[float]] = {(f, b): [] for f in forms for b in args.batches}
    for round_ in range(args.rounds):
        for batch in args.batches:
            for form in forms[round_ % len(forms) :] + forms[: round_ % len(forms)]:
                tokens = args.prefill if form == PREFILL_FORM else 1
                steps = max(1, args.steps // tokens)
                times[form, batch].append(per_step_us(sessions[form], model, batch, steps, tokens))
    rows = []
    for (form, batch), values in times.items():
        rows.append(
            {
                "form": form,
                "batch": batch,
                "opset": graphs[form].opset_import[0].version,
                "us_per_step_median": float(np.median(values)),
                "us_per_step_min_max": [float(min(values)), float(max(values))],
                **errors.get(form, {}),
                "tokens_per_call": args.prefill if form == PREFILL_FORM else 1,
            }
        )
    return rows, _summary(rows, args)


def _summary(rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    median = {(r["form"], r["batch"]): r["us_per_step_median"] for r in rows}
    ratio = {
        f"linear_attention_over_{base}_b{b}": median["linear_attention", b] / median[base, b]
        for base in ("plain", "matmul")
        for b in args.batches
    }
    faster = all(median["linear_attention", b] < median["plain", b] for b in args.batches)
    return {
        "summary": "gla_step_forms",
        **ratio,
        "faster_form": "linear_attention" if faster else "plain",
        "bundle_form": "plain",
        "reason": "the op's graph is faster at every batch measured"
        if faster
        else "the op's graph is not faster at every batch measured",
        "d_model": args.d_model,
        "layers": args.layers,
        "heads": args.heads,
        "threads": args.threads,
        "rounds": args.rounds,
        "onnxruntime": ort.__version__,
        "kind": "measured (this CPU)",
    }


def main() -> None:
    """Parse flags, measure, print JSON lines and the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[1, 16])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=200, help="tokens per form per round")
    parser.add_argument("--prefill", type=int, default=64, help="tokens per prefill call")
    parser.add_argument("--check-steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rows, summary = measure(args)
    table = Table("form", "batch", "opset", "µs/step median", "min-max", "max |logits - torch|")
    for row in rows:
        print(json.dumps(row))
        low, high = row["us_per_step_min_max"]
        error = row.get("max_logits_error")
        table.add_row(
            row["form"],
            str(row["batch"]),
            str(row["opset"]),
            f"{row['us_per_step_median']:.1f}",
            f"{low:.1f}-{high:.1f}",
            "-" if error is None else f"{error:.1e}",
        )
    print(json.dumps(summary))
    Console(width=150).print(table)


if __name__ == "__main__":
    main()

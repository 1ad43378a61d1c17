"""The demo's program kinds beyond spiking: the digits network as a dense bundle (fp32 and
int8) on every backend, an MoE² ensemble of experts trained on different digit classes with a
post-hoc gate, and the exact expert selection under two budgets; then the selection at scale,
on synthetic problems of 16 and 64 experts, the larger under a time limit.

Every latency is measured here (the same batch everywhere, median of repeats); every energy and
every cost in the selection problem is simulated by a device model, and labelled so, except the
last selection's, which uses the dense expert's latency profiled here (measured).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganglion.converters.dense import convert_dense
from ganglion.converters.ensemble import convert_ensemble
from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.recipes.digits import DigitsData, digits_mlp, train_classifier
from ganglion.runtime.atomic import atomic_file
from ganglion.runtime.bundle import load_bundle, save_bundle
from ganglion.runtime.ensemble_calibration import all_expert_probabilities
from ganglion.runtime.selection import solve
from ganglion.runtime.selection.bounds import warm_up
from ganglion.runtime.selection.from_ensemble import problem_from_ensemble
from ganglion.runtime.selection.synthetic import binding_budgets, synthetic_problem
from ganglion.runtime.session import load

REPEATS = 5
SCALE_SEED = 10  # a 64-expert random-gate problem whose exact proof takes longer than 1 s here


@dataclass
class Row:
    """One line of a demo table."""

    what: str
    accuracy: float | None
    ms_per_batch: float | None  # median over REPEATS, measured here
    note: str


def _median_ms(fn) -> tuple[object, float]:  # noqa: ANN001
    times, result = [], None
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1e3)
    return result, float(np.median(times))


def _accuracy(scores: np.ndarray, y: np.ndarray) -> float:
    return float((scores.reshape(len(y), -1).argmax(-1) == y).mean())


def dense_tour(model: torch.nn.Module, data: DigitsData, out: Path) -> list[Row]:
    """The trained network as a dense bundle (with int8) on torch and ONNX Runtime."""
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    sample = torch.from_numpy(data.x_train[:2])
    program = torch.export.export(model.eval(), (sample,), dynamic_shapes=({0: batch},))
    calib = {"x": data.x_train[:512], "y": data.y_train[:512]}
    bundle = save_bundle(convert_dense(program, calib, "int8"), out / "mlp-dense", force=True)
    rows = []
    for what, backend, options in (("dense fp32, torch", "torch", {}),
                                   ("dense fp32, onnxruntime", "onnxruntime", {}),
                                   ("dense int8 (QDQ), onnxruntime", "onnxruntime",
                                    {"precision": "int8"})):  # fmt: skip
        with load(bundle, backend=backend, **options) as session:
            scores, ms = _median_ms(lambda s=session: s.run(data.x_test))
        rows.append(Row(what, _accuracy(scores, data.y_test), ms, f"batch {len(data.x_test)}"))
    return rows


def train_digits_expert(data: DigitsData, classes: range, spiking: bool, epochs: int):  # noqa: ANN201
    """A digits MLP trained on ``classes`` only: dense, or converted to a spiking program."""
    keep = np.isin(data.y_train, list(classes))
    subset = DigitsData(data.x_train[keep], data.y_train[keep], data.x_test, data.y_test)
    torch.manual_seed(0)
    model = digits_mlp()
    train_classifier(model, subset, epochs=epochs)
    model.eval()
    if spiking:
        return convert_spiking(model, data.x_train, None, SpikingOptions(timesteps=16))
    sample = torch.from_numpy(data.x_train[:2])
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    return convert_dense(torch.export.export(model, (sample,), dynamic_shapes=({0: batch},)))


def ensemble_tour(data: DigitsData, out: Path, epochs: int) -> tuple[list[Row], list[str]]:
    """Experts on digits 0-4 (dense, meant for a Jetson) and 5-9 (spiking, meant for Loihi 2),
    a post-hoc gate, the ensemble on two backends, and the exact selection at two budgets."""
    members = {
        "digits-0-4": train_digits_expert(data, range(0, 5), False, epochs),
        "digits-5-9": train_digits_expert(data, range(5, 10), True, epochs),
    }
    placement = {"digits-0-4": "jetson-orin-nano-8gb", "digits-5-9": "loihi2"}
    probs = all_expert_probabilities(members, {"x": data.x_train})
    ensemble = convert_ensemble(members, {"x": data.x_train}, data.y_train, probs,
                                placement=placement, epochs=200)  # fmt: skip
    bundle = save_bundle(ensemble, out / "digits-moe", force=True)
    rows = []
    for backend in ("torch", "onnxruntime"):
        with load(bundle, backend=backend) as session:
            outputs, ms = _median_ms(lambda s=session: s.run(data.x_test))
        rows.append(Row(f"MoE² ensemble, {backend}", _accuracy(outputs["probs"], data.y_test),
                        ms, "both experts, gate-weighted"))  # fmt: skip
    for name in members:
        with load(bundle) as session:
            session.select([name])
            outputs = session.run(data.x_test)
        rows.append(Row(f"expert {name} alone", _accuracy(outputs["probs"], data.y_test), None,
                        f"meant for {placement[name]}"))  # fmt: skip
    problem, _ = problem_from_ensemble(load_bundle(bundle), {}, "cpu")
    notes = []
    everything = problem.energy(tuple(range(problem.n_experts)))
    for label, energy in (("tight", everything * 0.6), ("loose", everything * 2)):
        chosen = solve(problem, energy, 1e3)
        picked = (
            "nothing fits"
            if chosen is None
            else (
                f"{', '.join(problem.names[e] for e in chosen.experts)}: predicted quality "
                f"{chosen.quality:.3f}, {chosen.energy_j * 1e3:.3f} mJ, {chosen.latency_ms:.2f} ms"
            )
        )
        notes.append(f"{label} budget {energy * 1e3:.3f} mJ -> {picked} (costs simulated)")
    notes.append(_measured_selection(bundle, out))
    return rows, notes


def _measured_selection(bundle: Path, out: Path) -> str:
    """Profile the dense expert here with ``ganglion profile MEMBER --json`` and select with
    its measured costs (``--profiled``), both experts on this machine."""
    from ganglion.device import detect
    from ganglion.runtime.cli import invoke

    expert = "digits-0-4"
    code, profiled, err = invoke(
        "profile", str(bundle / "members" / expert), "--runs", "20", "--json"
    )
    if code:
        raise RuntimeError(f"ganglion profile failed: {err.strip()}")
    profile_file = out / f"{expert}.profile.json"
    with atomic_file(profile_file, force=True) as tmp:
        tmp.write_text(profiled)
    here = detect().profile_name
    ensemble = load_bundle(bundle)
    on_this_machine = {name: here for name in ensemble.members}
    problem, sources = problem_from_ensemble(
        ensemble, on_this_machine, here, profiles={expert: profile_file}
    )
    chosen = solve(problem, problem.energy(tuple(range(problem.n_experts))), 1e3)
    assert chosen is not None  # every expert fits a budget of all of them
    e = problem.names.index(expert)
    return (
        f"both experts on {here}, {expert} profiled here ({sources['experts'][expert]['compute']}"
        f": {problem.experts[e].latency_ms:.3f} ms, {problem.experts[e].energy_j * 1e3:.4f} mJ) "
        f"-> {', '.join(problem.names[i] for i in chosen.experts)}"
    )


def selection_at_scale(limit_s: float) -> list[dict[str, object]]:
    """The exact solver on synthetic problems (a gate unrelated to correctness, 512 calibration
    rows, budgets that bind): 16 experts without a limit, 64 under ``limit_s``; per problem
    the experts, quality, whether it is proven optimal, the proven gap and the solve time
    (measured here)."""
    warm_up()  # numba's loops first: the times are the search's
    rows = []
    for experts, limit in ((16, None), (64, limit_s)):
        rng = np.random.default_rng(SCALE_SEED)
        problem = synthetic_problem(rng, experts, 512, "random")
        energy, latency = binding_budgets(problem, rng)
        start = time.perf_counter()
        chosen = solve(problem, energy, latency, limit)
        assert chosen is not None  # binding budgets leave a single expert that fits
        rows.append(
            {
                "experts": experts,
                "time_limit_s": limit,
                "chosen": ", ".join(problem.names[e] for e in chosen.experts),
                "quality": chosen.quality,
                "exact": chosen.exact,
                "gap": chosen.gap,
                "solve_ms": (time.perf_counter() - start) * 1e3,
            }
        )
    return rows

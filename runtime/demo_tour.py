"""The demo's deployment tour: one converted program taken to every backend and target.

For a spiking bundle: torch's streaming ``step`` (bit-equal with ``run``), ONNX Runtime
(parity with torch), Loihi 2 quantization (fixed-point
predictor on torch), Lava ``fixed_pt`` on a few samples (spike-exact agreement with the
predictor), the chip-fit report, and latency/energy measured here vs simulated elsewhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganglion.converters.loihi_quantize import quantize_loihi2
from ganglion.device import detect, get_profile, predict
from ganglion.models.errors import GanglionError
from ganglion.models.recipes.digits import DigitsData
from ganglion.runtime.bundle import load_bundle, save_bundle
from ganglion.runtime.loihi_fit import chip_fit
from ganglion.runtime.opcount import count_ops, example_inputs
from ganglion.runtime.session import load

SIMULATED_DEVICES = ("jetson-orin-nano-8gb", "jetson-agx-orin-64gb", "loihi2")
LAVA_TARGET = "lava fixed_pt (Loihi 2 simulator)"


@dataclass
class TourRow:
    """One line of the tour: where it ran, how well, and how it was obtained."""

    target: str
    accuracy: float | None
    agreement: str
    latency_ms: float | None
    energy_mj: float | None
    how: str


def _accuracy(out: np.ndarray, y: np.ndarray) -> float:
    return float((out.reshape(len(y), -1).argmax(-1) == y).mean())


LATENCY_SAMPLES = 20  # batch-1 calls timed per target; the median is reported


def _timed_run(session, x: np.ndarray) -> tuple[np.ndarray, float]:
    """The outputs on all of ``x`` and the median latency of batch-1 calls (ms), measured."""
    out = session.run(x)
    times = []
    for sample in x[:LATENCY_SAMPLES]:
        start = time.perf_counter()
        session.run(sample[None])
        times.append((time.perf_counter() - start) * 1e3)
    return out, float(np.median(times))


def deployment_tour(bundle: Path, data: DigitsData, lava_samples: int = 8) -> list[TourRow]:
    """Run ``bundle`` on every backend and target that applies here; returns one row each."""
    x, y = data.x_test, data.y_test
    rows: list[TourRow] = []
    with load(bundle, backend="torch") as torch_session:
        reference, ms = _timed_run(torch_session, x)
    rows.append(TourRow("torch (CPU)", _accuracy(reference, y), "reference", ms, None, "measured"))
    rows.append(_streaming_row(bundle, x, y, reference))
    with load(bundle, backend="onnxruntime") as ort_session:
        ort_out, ms = _timed_run(ort_session, x)
    same = float((ort_out.argmax(-1) == reference.argmax(-1)).mean())
    rows.append(
        TourRow(
            "onnxruntime (CPU)",
            _accuracy(ort_out, y),
            f"{same:.3f} of predictions",
            ms,
            None,
            "measured",
        )
    )
    quantized = quantize_loihi2(load_bundle(bundle), data.x_train, data.y_train)
    qbundle = save_bundle(quantized, bundle.parent / f"{bundle.name}-loihi2", force=True)
    with load(qbundle, backend="torch") as fixed_session:
        fixed_out, ms = _timed_run(fixed_session, x)
    rows.append(
        TourRow(
            "loihi2 fixed point, torch predictor",
            _accuracy(fixed_out, y),
            "-",
            ms,
            None,
            "measured (CPU)",
        )
    )
    rows.append(_lava_row(qbundle, x[:lava_samples], fixed_out[:lava_samples]))
    rows += _energy_rows(bundle)
    return rows


def _streaming_row(bundle: Path, x: np.ndarray, y: np.ndarray, reference: np.ndarray) -> TourRow:
    """torch's ``step`` T times over the whole test split, its last output compared bit for bit
    with ``run``'s (one timestep's rows against all of them at once); the median time of a
    batch-1 step, measured."""
    with load(bundle, backend="torch") as session:
        state = session.init_state(len(x))
        for _ in range(session.manifest.time.timesteps):
            out, state = session.step(x, state)
        one, times = session.init_state(1), []
        for sample in x[:LATENCY_SAMPLES]:
            start = time.perf_counter()
            _, one = session.step(sample[None], one)
            times.append((time.perf_counter() - start) * 1e3)
    exact = "bit-identical to run" if np.array_equal(out, reference) else "DIFFERENT from run"
    return TourRow(
        "torch (CPU), streaming step",
        _accuracy(out, y),
        f"{exact} on {len(x)} samples",
        float(np.median(times)),
        None,
        "measured (ms / step)",
    )


def _lava_row(qbundle: Path, x: np.ndarray, predicted: np.ndarray) -> TourRow:
    try:
        with load(qbundle, backend="lava") as lava_session:
            lava_session.run(x[:1])  # Lava compiles and starts its processes on the first run
            start = time.perf_counter()
            out = lava_session.run(x)
            ms = (time.perf_counter() - start) * 1e3 / len(x)  # Lava runs samples one by one
    except GanglionError as exc:
        return TourRow(LAVA_TARGET, None, f"not run: {exc}", None, None, "-")
    exact = bool(np.array_equal(out, predicted))
    agreement = f"{'identical' if exact else 'DIFFERENT'} outputs on {len(x)} samples"
    return TourRow(LAVA_TARGET, None, agreement, ms, None, "measured (CPU)")


def _energy_rows(bundle: Path) -> list[TourRow]:
    deployable = load_bundle(bundle)
    counts = count_ops(deployable, example_inputs(deployable.manifest, batch=1))
    here = detect().profile_name
    rows = []
    for name in SIMULATED_DEVICES:
        pred = predict(counts, get_profile(name), batch=1)
        rows.append(
            TourRow(
                f"{name} (batch 1)",
                None,
                "-",
                pred.latency_s * 1e3,
                pred.energy_j * 1e3,
                "simulated (roofline)",
            )
        )
    fit = chip_fit(deployable.module.graph)
    rows.append(
        TourRow(
            "loihi2 chip fit",
            None,
            f"{fit['neurocores']} neurocores, fits: {fit['fits']}",
            None,
            None,
            f"estimated (host: {here})",
        )
    )
    return rows

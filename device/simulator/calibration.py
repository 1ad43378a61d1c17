"""Fit the dense roofline to measured runs on this machine and report the prediction error.

The model of a call (see `roofline`) is, when the MAC layers are compute-bound,

    latency ≈ launch_overhead_s·launches + ops / peak_fp32 + elementwise_bytes / bandwidth

which is linear in the three device figures' inverses. `calibrate_cpu` fits them by
non-negative least squares on the *relative* error (each sample's row divided by its measured
latency, so a 50 µs run counts as much as a 50 ms one) over the measured samples. The
calibrated profile replaces ``launch_overhead_s``, ``peak_ops.fp32`` and ``memory_bandwidth``
with the fitted values, sourced as ``calibrated``. A figure the samples cannot determine (no
sample exercises it, or the fit drives it to zero) keeps the profile's value and is listed in
``Calibration.kept``. Errors are those of the calibrated model itself, on held-out samples
when given: calibrate on programs other than the ones you score.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ganglion.device.profiles.schema import DeviceProfile
from ganglion.device.simulator.opcounts import OpCounts
from ganglion.device.simulator.roofline import dense_terms, predict

FIGURES = ("launch_overhead_s", "peak_ops.fp32", "memory_bandwidth")


@dataclass(frozen=True)
class Sample:
    """One measured workload: its counts, the batch of one call, the call's latency (s)."""

    name: str
    counts: OpCounts
    latency_s: float
    batch: int = 1


@dataclass(frozen=True)
class Calibration:
    """The calibrated profile, the fitted figures and the relative errors (%) per sample.

    overhead_s: per-op launch/dispatch overhead; effective_ops_per_s: fp32 ops/s;
    effective_bandwidth: bytes/s; kept: figures left at the profile's value.
    """

    profile: DeviceProfile
    effective_ops_per_s: float
    overhead_s: float
    errors_pct: dict[str, float]
    held_out: bool
    effective_bandwidth: float = 0.0
    kept: tuple[str, ...] = ()

    @property
    def mean_abs_error_pct(self) -> float:
        """Mean absolute relative latency error over the checked samples (%)."""
        return statistics.fmean(abs(e) for e in self.errors_pct.values())


def calibrate_cpu(
    profile: DeviceProfile, fit: Sequence[Sample], check: Sequence[Sample] = ()
) -> Calibration:
    """Fit overhead, throughput, bandwidth to ``fit``; report errors on ``check`` (or ``fit``)."""
    if not fit:
        raise ValueError("calibrate_cpu needs at least one measured sample")
    rows = []
    for s in fit:
        if s.latency_s <= 0:
            raise ValueError(f"calibrate_cpu: sample {s.name!r} has no positive latency")
        launches, ops, _, elem_bytes = dense_terms(s.counts, s.batch, fused=True)
        rows.append([launches, ops, elem_bytes])
    a = np.array(rows, dtype=np.float64)
    lat = np.array([s.latency_s for s in fit])
    if not np.any(a[:, 1] > 0):
        raise ValueError("calibrate_cpu: no sample has a positive operation count")
    coef = _fit_relative(a, lat)
    prior = (profile.launch_overhead_s, 1.0 / profile.ops_per_s("fp32"))
    prior += (1.0 / profile.memory_bandwidth if profile.memory_bandwidth else 0.0,)
    kept = tuple(
        key for key, c, col in zip(FIGURES, coef, a.T, strict=True) if c <= 0 or not np.any(col)
    )
    coef = [p if key in kept else c for key, c, p in zip(FIGURES, coef, prior, strict=True)]
    overhead, rate = float(coef[0]), 1.0 / float(coef[1])
    bandwidth = 1.0 / float(coef[2]) if coef[2] > 0 else profile.memory_bandwidth
    sources = dict(profile.sources)
    note = f"calibrated on {len(fit)} measured run(s) on this machine"
    for key in FIGURES:
        if key not in kept:
            sources[key] = note
    calibrated = dataclasses.replace(
        profile,
        peak_ops={**profile.peak_ops, "fp32": rate},
        launch_overhead_s=overhead,
        memory_bandwidth=bandwidth,
        sources=sources,
        assumed=tuple(k for k in profile.assumed if k in kept or k not in FIGURES),
    )
    checked = check or fit
    errors = {
        s.name: 100.0
        * (predict(s.counts, calibrated, batch=s.batch).latency_s - s.latency_s)
        / s.latency_s
        for s in checked
    }
    return Calibration(
        calibrated, rate, overhead, errors, bool(check), effective_bandwidth=bandwidth, kept=kept
    )


def _fit_relative(a: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising Σ ((a·c − lat) / lat)²; columns scaled for
    conditioning (they differ by many orders of magnitude)."""
    weighted = a / lat[:, None]
    scale = np.where(np.abs(weighted).max(axis=0) > 0, np.abs(weighted).max(axis=0), 1.0)
    from scipy.optimize import nnls  # imported here: scipy costs every command ~0.4 s

    coef, _ = nnls(weighted / scale, np.ones_like(lat))
    return coef / scale


def measure_latency(fn: Callable[[], object], runs: int = 20, warmup: int = 3) -> list[float]:
    """Wall-clock seconds of ``runs`` calls of ``fn`` after ``warmup`` unmeasured calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times

"""Fit the CPU roofline to measured runs on this machine and report the prediction error.

The fit is least squares on ``latency ≈ overhead + ops / effective_ops_per_s`` over the
samples (ops = fp32-equivalent dense operations, `dense_ops`). The calibrated profile replaces
``peak_ops.fp32`` and ``launch_overhead_s`` with the fitted values, sourced as ``calibrated``.
Errors are those of the calibrated roofline itself, on held-out samples when given.
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
from ganglion.device.simulator.roofline import dense_ops, predict

_FITTED = ("peak_ops.fp32", "launch_overhead_s")


@dataclass(frozen=True)
class Sample:
    """One measured workload: its counts and its measured latency per inference (s)."""

    name: str
    counts: OpCounts
    latency_s: float


@dataclass(frozen=True)
class Calibration:
    """The calibrated profile, the fitted constants and the relative errors (%) per sample."""

    profile: DeviceProfile
    effective_ops_per_s: float
    overhead_s: float
    errors_pct: dict[str, float]
    held_out: bool

    @property
    def mean_abs_error_pct(self) -> float:
        """Mean absolute relative latency error over the checked samples (%)."""
        return statistics.fmean(abs(e) for e in self.errors_pct.values())


def calibrate_cpu(
    profile: DeviceProfile, fit: Sequence[Sample], check: Sequence[Sample] = ()
) -> Calibration:
    """Fit effective throughput and overhead to ``fit``; report errors on ``check`` (or ``fit``)."""
    if not fit:
        raise ValueError("calibrate_cpu needs at least one measured sample")
    ops = np.array([dense_ops(s.counts) for s in fit])
    lat = np.array([s.latency_s for s in fit])
    if np.any(ops <= 0):
        raise ValueError("calibrate_cpu: every sample needs a positive operation count")
    overhead, slope = _fit_line(ops, lat, profile.launch_overhead_s)
    rate = 1.0 / slope
    sources = dict(profile.sources)
    note = f"calibrated on {len(fit)} measured run(s) on this machine"
    sources["peak_ops.fp32"] = sources["launch_overhead_s"] = note
    calibrated = dataclasses.replace(
        profile,
        peak_ops={**profile.peak_ops, "fp32": rate},
        launch_overhead_s=overhead,
        sources=sources,
        assumed=tuple(k for k in profile.assumed if k not in _FITTED),
    )
    checked = check or fit
    errors = {
        s.name: 100.0 * (predict(s.counts, calibrated).latency_s - s.latency_s) / s.latency_s
        for s in checked
    }
    return Calibration(calibrated, rate, overhead, errors, held_out=bool(check))


def _fit_line(ops: np.ndarray, lat: np.ndarray, default_overhead: float) -> tuple[float, float]:
    """Least-squares intercept and slope, both kept positive (one sample: default intercept)."""
    if len(ops) >= 2 and np.ptp(ops) > 0:
        slope, intercept = np.polyfit(ops, lat, 1)
        if slope > 0 and intercept >= 0:
            return float(intercept), float(slope)
    slope = float(np.sum(ops * np.maximum(lat - default_overhead, 1e-12)) / np.sum(ops * ops))
    return default_overhead, slope


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

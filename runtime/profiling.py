"""Measure a loaded program's latency and energy, or predict them for another device.

`measure_session` times ``runs`` calls after ``warmup`` with an `EnergyMeter` running around
the timed loop; `predicted_result` gives the roofline figures for a device profile. Both return
a `ProfileResult`, whose every figure says whether it was ``measured`` or ``simulated``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ganglion.device import DeviceProfile, EnergyMeter, OpCounts, Prediction, predict
from ganglion.runtime.session import Session

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one call (one batch), seconds: trtexec's summary."""

    min: float
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    @classmethod
    def from_samples(cls, seconds: list[float]) -> LatencyStats:
        """Summarize per-call wall-clock times."""
        a = np.asarray(seconds, dtype=np.float64)
        p = np.percentile(a, PERCENTILES)
        return cls(float(a.min()), float(a.mean()), *map(float, p), float(a.max()))


@dataclass
class ProfileResult:
    """One device/backend's figures for one bundle; ``*_kind`` is measured or simulated."""

    device: str
    mode: str
    backend: str
    batch: int
    runs: int
    latency_kind: str
    latency: LatencyStats
    throughput_per_s: float
    energy_kind: str
    energy_per_inference_j: float
    average_power_w: float
    energy_source: str
    prediction: dict[str, Any]
    layers: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def layer_rows(counts: OpCounts, prediction: Prediction) -> list[dict[str, Any]]:
    """Per-layer spike rate, synaptic ops and MACs with the device model's energy estimate."""
    energies = {lp.name: lp.energy_j for lp in prediction.layers}
    return [
        {
            "layer": layer.name,
            "spike_rate": layer.spike_rate,
            "synops": layer.synops,
            "macs": sum(layer.macs.values()),
            "neuron_updates": layer.neuron_updates,
            "energy_j": energies.get(layer.name, 0.0),
            "energy_kind": "simulated",
        }
        for layer in counts.layers
    ]


def measure_session(
    session: Session,
    x: np.ndarray,
    runs: int,
    warmup: int,
    meter: EnergyMeter,
    on_run: Callable[[], None] | None = None,
) -> tuple[list[float], float, float]:
    """Time ``runs`` calls of ``session.run(x)`` with ``meter`` counting around the timed loop.

    Returns the per-call seconds, the joules the meter counted and the loop's wall time.
    """
    for _ in range(warmup):
        session.run(x)
    times = []
    with meter:
        first = meter.read()
        for _ in range(runs):
            t0 = time.perf_counter()
            session.run(x)
            times.append(time.perf_counter() - t0)
            if on_run is not None:
                on_run()
        last = meter.read()
    return times, (last - first).joules, last.timestamp - first.timestamp


def measured_result(
    profile: DeviceProfile,
    backend: str,
    batch: int,
    times: list[float],
    joules: float,
    wall_s: float,
    meter: EnergyMeter,
    prediction: Prediction,
    counts: OpCounts,
) -> ProfileResult:
    """A `ProfileResult` from a measured run on this machine."""
    inferences = len(times) * batch
    return ProfileResult(
        device=profile.name,
        mode=prediction.mode,
        backend=backend,
        batch=batch,
        runs=len(times),
        latency_kind="measured",
        latency=LatencyStats.from_samples(times),
        throughput_per_s=inferences / sum(times),
        energy_kind=meter.kind,
        energy_per_inference_j=joules / inferences,
        average_power_w=joules / wall_s if wall_s > 0 else 0.0,
        energy_source=meter.source,
        prediction=_prediction_dict(prediction, batch),
        layers=layer_rows(counts, prediction),
    )


def predicted_result(
    profile: DeviceProfile, backend: str, batch: int, counts: OpCounts, mode: str | None = None
) -> ProfileResult:
    """A `ProfileResult` from the roofline model alone (another device than this one)."""
    pred = predict(counts, profile, mode, batch=batch)
    call_s = pred.latency_s
    stats = LatencyStats(*([call_s] * 7))
    return ProfileResult(
        device=profile.name,
        mode=pred.mode,
        backend=backend,
        batch=batch,
        runs=0,
        latency_kind="simulated",
        latency=stats,
        throughput_per_s=batch / call_s if call_s > 0 else 0.0,
        energy_kind="simulated",
        energy_per_inference_j=pred.energy_per_inference_j,
        average_power_w=pred.power_w,
        energy_source=f"roofline model of {profile.name} ({pred.bound}-bound)",
        prediction=_prediction_dict(pred, batch),
        layers=layer_rows(counts, pred),
        notes=[f"assumed figures: {', '.join(pred.assumed)}"] if pred.assumed else [],
    )


def _prediction_dict(pred: Prediction, batch: int) -> dict[str, Any]:
    return {
        "kind": "simulated",
        "latency_s": pred.latency_s,
        "energy_j": pred.energy_j,
        "dispatch_s": pred.dispatch_s,
        "bound": pred.bound,
        "assumed": list(pred.assumed),
        "batch": batch,
    }

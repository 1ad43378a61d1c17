"""Measure a loaded program's latency and energy, or predict them for another device.

`measure_session` times ``runs`` calls after ``warmup`` with an `EnergyMeter` running around
the timed loop, and ``measure_steps`` the streaming face (one timestep or token per call);
`predicted_result` gives the roofline figures for a device profile. Both return a
`ProfileResult`, whose every figure says whether it was ``measured`` or ``simulated`` and how:
an energy figure from a hardware meter (that of the chip the backend runs on, `choose_meter`)
is measured; one from ``SimulatedMeter`` is the device's power limit (in its detected power
mode) integrated over the measured run time (an upper bound: the chip at its
power limit the whole time); the roofline's is the device model's energy for the operations
the program performs. The two simulated figures differ, often by an order of magnitude: the
first assumes the device busy at its limit, the second only the work done.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ganglion.device import (
    Detection,
    DeviceProfile,
    EnergyMeter,
    OpCounts,
    Prediction,
    ProfileError,
    choose_meter,
    detect,
    get_profile,
    predict,
)
from ganglion.runtime.bundle import MANIFEST, open_bundle, sha256_file
from ganglion.runtime.opcount import count_ops, example_inputs
from ganglion.runtime.session import Session, open_session

PERCENTILES = (50, 90, 95, 99)
# a hardware meter's counter moves in steps (RAPL about 1 ms, Jetson rails tens of ms): energy is
# counted over at least this long, repeating calls past ``runs`` where they are quicker
MIN_METER_WINDOW_S = 0.25
NOISY_P99_OVER_P50 = 2.0  # above this the machine was busy while measuring: say so


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

    @property
    def spread(self) -> float:
        """p99 / p50: 1 on a quiet machine; large when something else ran meanwhile."""
        return self.p99 / self.p50 if self.p50 > 0 else float("inf")


@dataclass
class ProfileResult:
    """One device/backend's figures for one bundle; ``*_kind`` is measured or simulated."""

    device: str
    mode: str
    backend: str
    batch: int
    runs: int
    latency_kind: str
    latency: LatencyStats | None  # per call of ``batch`` inferences (None: predicted only)
    throughput_per_s: float
    energy_kind: str
    energy_per_inference_j: float
    average_power_w: float
    energy_source: str
    prediction: dict[str, Any]
    predicted_latency_s: float = 0.0  # the roofline's latency per call (simulated)
    step_latency: LatencyStats | None = None  # per step (timestep or token), measured
    layers: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (strict JSON: no NaN or infinity)."""
        data = asdict(self)
        for key in ("latency", "step_latency"):
            stats = getattr(self, key)
            if stats is not None:
                data[key]["p99_over_p50"] = stats.spread
        return data


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
    x: np.ndarray | dict[str, np.ndarray],
    runs: int,
    warmup: int,
    meter: EnergyMeter,
    on_run: Callable[[], None] | None = None,
) -> tuple[list[float], float, float]:
    """Time ``runs`` calls of ``session.run(x)`` with ``meter`` counting around the timed loop,
    more where a measuring meter needs ``MIN_METER_WINDOW_S`` to count them.

    Returns the per-call seconds, the joules the meter counted and the loop's wall time.
    """
    for _ in range(warmup):
        session.run(x)
    times = []
    window = MIN_METER_WINDOW_S if meter.kind == "measured" else 0.0
    with meter:
        first = meter.read()
        start = time.perf_counter()
        while len(times) < runs or time.perf_counter() - start < window:
            t0 = time.perf_counter()
            session.run(x)
            times.append(time.perf_counter() - t0)
            if on_run is not None:
                on_run()
        last = meter.read()
    return times, (last - first).joules, last.timestamp - first.timestamp


def measure_steps(session: Session, x: dict[str, np.ndarray], runs: int) -> list[float] | None:
    """Seconds per ``step`` call while streaming ``x`` (its steps, repeated up to ``runs``
    calls); None for programs without steps."""
    kind, manifest = session.kind, session.manifest
    steps = kind.split_steps(manifest, x)
    if not manifest.state or len(steps) < 1:
        return None
    batch = next(iter(x.values())).shape[kind.batch_axis(manifest)]
    state, times = session.init_state(batch), []
    session.step(steps[0], session.init_state(batch))  # warm-up
    while len(times) < runs:
        for inputs in steps:
            t0 = time.perf_counter()
            _, state = session.step(inputs, state)
            times.append(time.perf_counter() - t0)
        state = session.init_state(batch)
    return times[:runs]


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
    step_times: list[float] | None = None,
) -> ProfileResult:
    """A `ProfileResult` from a measured run on this machine."""
    inferences = len(times) * batch
    latency = LatencyStats.from_samples(times)
    source = (
        meter.source
        if meter.kind == "measured"
        else (f"{meter.source} x measured run time (the device at its power limit throughout)")
    )
    notes = []
    if latency.spread > NOISY_P99_OVER_P50:
        notes.append(
            f"noisy machine: p99 is {latency.spread:.1f}x p50; trust the p50 and rerun on a "
            "quiet machine for the tail"
        )
    return ProfileResult(
        device=profile.name,
        mode=prediction.mode,
        backend=backend,
        batch=batch,
        runs=len(times),
        latency_kind="measured",
        latency=latency,
        throughput_per_s=inferences / sum(times),
        energy_kind=meter.kind,
        energy_per_inference_j=joules / inferences,
        average_power_w=joules / wall_s if wall_s > 0 else 0.0,
        energy_source=source,
        prediction=_prediction_dict(prediction, batch),
        predicted_latency_s=prediction.latency_s,
        step_latency=None if not step_times else LatencyStats.from_samples(step_times),
        layers=layer_rows(counts, prediction),
        notes=notes,
    )


def predicted_result(
    profile: DeviceProfile, backend: str, batch: int, counts: OpCounts, mode: str | None = None
) -> ProfileResult:
    """A `ProfileResult` from the roofline model alone (another device than this one)."""
    pred = predict(counts, profile, mode, batch=batch)
    call_s = pred.latency_s
    return ProfileResult(
        device=profile.name,
        mode=pred.mode,
        backend=backend,
        batch=batch,
        runs=0,
        latency_kind="simulated",
        latency=None,
        throughput_per_s=batch / call_s if call_s > 0 else 0.0,
        energy_kind="simulated",
        energy_per_inference_j=pred.energy_per_inference_j,
        average_power_w=pred.power_w,
        energy_source=f"roofline model of {profile.name} ({pred.bound}-bound)",
        prediction=_prediction_dict(pred, batch),
        predicted_latency_s=call_s,
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


@dataclass
class ProfileRequest:
    """What ``profile_bundle`` measures and predicts."""

    devices: list[str]  # profile names; "auto" is this machine
    backend: str = "torch"
    backend_device: str | None = None  # where the backend runs here (default: cuda for tensorrt)
    runs: int = 100
    warmup: int = 10
    batch: int = 1
    simulate: bool = False  # model energy even where a meter is available
    root: str = "/"
    device_files: list[Any] = field(default_factory=list)
    steps: bool = True  # also time the streaming face (step by step)


def profile_bundle(
    bundle: Any, request: ProfileRequest, on_run: Callable[[str, int], None] | None = None
) -> dict[str, Any]:
    """Measure ``bundle`` on this machine and predict it on the other devices.

    Returns the JSON-ready payload: bundle, kind, operation counts per inference and one
    result per device (each figure marked measured or simulated). ``on_run(device, runs)``
    is called before the timed loop and after each timed run (a progress bar's hooks).
    """
    found = detect(request.root)
    host = found.profile_name
    device = request.backend_device or ("cuda" if request.backend == "tensorrt" else "cpu")
    with open_bundle(bundle) as program:
        manifest = program.manifest
        for name in request.devices:  # before anything runs
            profile = get_profile(
                host if name == "auto" else name, request.device_files, request.root
            )
            if (why := profile.refuses(manifest.kind)) is not None:
                raise ProfileError(f"--device {profile.name}: {why}")
        one = example_inputs(manifest, batch=1, bundle=str(bundle))  # bounded, from the manifest
        x = example_inputs(manifest, batch=request.batch, bundle=str(bundle))
        deployable = program.deployable()  # only then the program is built
        manifest_sha256 = None if program.folder is None else sha256_file(program.folder / MANIFEST)
        counts = count_ops(deployable, one)
        session = None
        if any(name in ("auto", host) for name in request.devices):
            session = open_session(program, request.backend, device)
    results = []
    try:
        for name in request.devices:
            target = host if name == "auto" else name
            profile = get_profile(target, request.device_files, request.root)
            if target == host and session is not None:
                here = _measure_here(session, profile, request, device, found, x, counts, on_run)
                results.append(here)
            else:
                results.append(predicted_result(profile, request.backend, request.batch, counts))
    finally:
        if session is not None:
            session.close()
    return {
        "bundle": str(bundle),
        "manifest_sha256": manifest_sha256,
        "kind": manifest.kind,
        "timesteps": counts.timesteps,
        "ops_per_inference": {
            "macs": counts.macs,
            "synops": counts.synops,
            "neuron_updates": counts.neuron_updates,
            "spikes": counts.spikes,
            "bytes_moved": counts.bytes_moved,
            "elementwise_bytes": counts.elementwise_bytes,
            "launches_per_call": counts.launches,
        },
        "results": results,
    }


def _measure_here(
    session: Session,
    profile: DeviceProfile,
    request: ProfileRequest,
    backend_device: str,
    found: Detection,
    x: dict[str, np.ndarray],
    counts: OpCounts,
    on_run: Callable[[str, int], None] | None,
) -> ProfileResult:
    """Measure ``session`` here as ``profile`` in its detected power mode, with the meter of
    the chip that runs the work (`choose_meter`)."""
    mode = found.active_mode(profile)
    meter, skipped = choose_meter(
        profile, backend_device, found.profile_name, request.root, request.simulate, mode
    )
    if on_run is not None:
        on_run(profile.name, request.runs)
    tick = None if on_run is None else (lambda: on_run(profile.name, -1))
    times, joules, wall = measure_session(session, x, request.runs, request.warmup, meter, tick)
    step_times = measure_steps(session, x, request.runs) if request.steps else None
    pred = predict(counts, profile, mode.name, batch=request.batch)
    result = measured_result(
        profile,
        request.backend,
        request.batch,
        times,
        joules,
        wall,
        meter,
        pred,
        counts,
        step_times,
    )
    if os.path.abspath(request.root) != "/":
        result.notes.append(
            f"--root {request.root}: the device and its meters were read under that folder, "
            "while the latency is this machine's"
        )
    result.notes += skipped
    return result


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (latency, energy) points no other point beats on both, by increasing latency."""
    front, best = [], float("inf")
    for lat, energy in sorted(points):
        if energy < best:
            front.append((lat, energy))
            best = energy
    return front

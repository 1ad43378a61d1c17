"""Sweep a conversion over timestep budgets: accuracy against latency and energy per device.

For each T the trained ANN is converted (``convert_spiking``, one ``method``), scored on the
labelled test data (``runtime.evaluation``, torch on this CPU) and profiled with the pieces
``ganglion profile`` uses: this machine is measured (latency p50 of timed calls at the stated
batch; energy from a hardware meter, else the profile's power limit over the measured time,
marked simulated), every other device is predicted by its roofline model (simulated). Operation
counts, and so the simulated figures, come from the test data itself, not random inputs.

Accuracy is measured once per T, on this CPU: a simulated device is assumed to compute the same
program (floating point), so its points share that accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.converters.spiking.ann_graph import AnnGraph
from ganglion.device import (
    DeviceProfile,
    EnergyMeter,
    choose_meter,
    detect,
    get_profile,
    predict,
)
from ganglion.models.deployable import Deployable
from ganglion.models.errors import ConversionError, ShapeError
from ganglion.runtime.evaluation import check_labels, evaluate
from ganglion.runtime.opcount import count_ops
from ganglion.runtime.profiling import (
    measure_session,
    measured_result,
    pareto_front,
    predicted_result,
)
from ganglion.runtime.session import Session, load

MAX_TIMESTEPS = 1024  # a larger T is refused: minutes per point on a CPU, no use at the edge
COUNT_SAMPLES = 256  # test samples the operation counts (spikes, synaptic ops) are taken on
_ANN_BATCH = 512


def parse_timesteps(text: str) -> list[int]:
    """``"4,8,16"`` -> [4, 8, 16] (sorted, duplicates dropped); ConversionError, one line,
    for anything but integers in 1..MAX_TIMESTEPS."""
    values = []
    for item in text.split(","):
        item = item.strip()
        if not (item.isascii() and item.isdigit()) or not 1 <= int(item) <= MAX_TIMESTEPS:
            raise ConversionError(
                f"--timesteps takes integers in 1..{MAX_TIMESTEPS} separated by commas, "
                f"got {item!r} in {text!r}"
            )
        values.append(int(item))
    return sorted(set(values))


@dataclass
class SweepRequest:
    """What ``run_sweep`` converts, scores and profiles."""

    timesteps: list[int]
    method: str = "percentile"  # SpikingOptions.method
    devices: list[str] = field(default_factory=lambda: ["auto"])  # "auto": this machine
    batch: int = 1  # samples per timed call here (and per simulated call)
    runs: int = 20  # timed calls here, after ``warmup`` untimed ones
    warmup: int = 3
    root: str = "/"
    device_files: list[Any] = field(default_factory=list)


@dataclass
class GridRow:
    """One timestep budget's scores on the test data (measured here, torch on CPU)."""

    timesteps: int
    accuracy: float
    gap_points: float  # ANN minus SNN accuracy, percentage points
    agreement: float  # fraction of test samples where SNN and ANN predict the same class
    spikes_per_sample: float


@dataclass
class SweepPoint:
    """One (T, device) point: its accuracy, latency per call and energy per inference."""

    timesteps: int
    device: str
    accuracy: float
    batch: int
    latency_kind: str  # measured | simulated
    latency_s: float  # p50 of the timed calls (measured) or the roofline's (simulated)
    latency_figure: str  # what latency_s is
    energy_kind: str  # measured | simulated
    energy_j: float  # per inference
    energy_source: str
    pareto_latency: bool = False  # on the accuracy-vs-latency frontier of all points
    pareto_energy: bool = False  # on the accuracy-vs-energy frontier of all points
    notes: list[str] = field(default_factory=list)  # a noisy machine, assumed figures


@dataclass
class SweepResult:
    """The whole sweep: the ANN's score, one row per T, one point per (T, device)."""

    method: str
    samples: int
    ann_accuracy: float
    batch: int
    runs: int
    grid: list[GridRow]
    points: list[SweepPoint]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def resolve_devices(request: SweepRequest) -> tuple[str, dict[str, DeviceProfile]]:
    """This machine's profile name and the profile of every requested device ("auto" is this
    machine); an unknown name raises the registry's one-line error."""
    host = detect(request.root).profile_name
    names = dict.fromkeys(host if d == "auto" else d for d in request.devices)
    return host, {d: get_profile(d, request.device_files, request.root) for d in names}


def run_sweep(
    ann: AnnGraph,
    calib: tuple[np.ndarray, np.ndarray | None],
    test: tuple[np.ndarray, np.ndarray],
    request: SweepRequest,
    on_stage: Callable[[int, str], None] | None = None,
    devices: tuple[str, dict[str, DeviceProfile]] | None = None,
) -> SweepResult:
    """Convert ``ann`` at every T of ``request``, score it on ``test`` (x, labels) and profile
    it on every device (``devices``: ``resolve_devices(request)`` when not given).
    ``on_stage(T, stage)`` is told each stage as it starts ("convert", "evaluate",
    "profile") and "done" after each T (a progress bar's hook)."""
    x, labels = test
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim < 2 or tuple(x.shape[1:]) != ann.input_shape:
        raise ShapeError(
            f"test data x must be [N, {', '.join(map(str, ann.input_shape))}], got {list(x.shape)}"
        )
    if request.batch > x.shape[0]:
        raise ShapeError(f"--batch {request.batch} is more than the {x.shape[0]} test samples")
    reference, classes = _ann_predictions(ann, x)
    labels = check_labels(labels, x.shape[0], classes, "test data")
    host, profiles = devices or resolve_devices(request)
    stage = on_stage or (lambda steps, what: None)
    grid, points = [], []
    ann_accuracy = float((reference == labels).mean())
    for steps in request.timesteps:
        stage(steps, "convert")
        program = convert_spiking(
            ann, calib[0], calib[1], SpikingOptions(timesteps=steps, method=request.method)
        )
        with load(program) as session:
            stage(steps, "evaluate")
            scores = evaluate(session, {"input": x}, labels, reference)
            grid.append(
                GridRow(
                    steps,
                    scores.accuracy,
                    100.0 * (ann_accuracy - scores.accuracy),
                    float(scores.agreement or 0.0),
                    float(scores.spikes_per_sample or 0.0),
                )
            )
            stage(steps, "profile")
            points += _profile(program, session, x, profiles, host, request, scores.accuracy)
        stage(steps, "done")
    _mark_pareto(points)
    return SweepResult(
        request.method, int(x.shape[0]), ann_accuracy, request.batch, request.runs, grid, points
    )


def _ann_predictions(ann: AnnGraph, x: np.ndarray) -> tuple[np.ndarray, int]:
    """The ANN's predicted classes [N] and its number of classes."""
    with torch.no_grad():
        logits = [
            ann.run(torch.from_numpy(x[i : i + _ANN_BATCH]))[0].flatten(1)
            for i in range(0, x.shape[0], _ANN_BATCH)
        ]
    return torch.cat(logits).argmax(-1).numpy(), logits[0].shape[-1]


def _profile(
    program: Deployable,
    session: Session,
    x: np.ndarray,
    profiles: dict[str, DeviceProfile],
    host: str,
    request: SweepRequest,
    accuracy: float,
) -> list[SweepPoint]:
    """One point per device: measured on this machine, the roofline's elsewhere."""
    counts = count_ops(program, {"input": x[:COUNT_SAMPLES]})
    timed = {"input": x[: request.batch]}
    points = []
    for name, profile in profiles.items():
        if name == host:
            meter = _meter_here(profile, host, request.root)
            times, joules, wall = measure_session(
                session, timed, request.runs, request.warmup, meter
            )
            result = measured_result(
                profile,
                "torch",
                request.batch,
                times,
                joules,
                wall,
                meter,
                predict(counts, profile, batch=request.batch),
                counts,
            )
            latency, figure = result.latency.p50, f"p50 of {request.runs} timed calls"
        else:
            result = predicted_result(profile, "torch", request.batch, counts)
            latency, figure = result.predicted_latency_s, "roofline model"
        points.append(
            SweepPoint(
                timesteps=program.manifest.time.timesteps,
                device=name,
                accuracy=accuracy,
                batch=request.batch,
                latency_kind=result.latency_kind,
                latency_s=latency,
                latency_figure=figure,
                energy_kind=result.energy_kind,
                energy_j=result.energy_per_inference_j,
                energy_source=result.energy_source,
                notes=result.notes,
            )
        )
    return points


def _meter_here(profile: DeviceProfile, host: str, root: str) -> EnergyMeter:
    """The meter of the CPU the sweep's torch session runs on, in the detected power mode, else
    the profile's power limit over time (``choose_meter``, as ``ganglion profile`` does)."""
    mode = detect(root).active_mode(profile)
    return choose_meter(profile, "cpu", host, root, mode=mode)[0]


def _mark_pareto(points: list[SweepPoint]) -> None:
    """Mark the points no other beats on accuracy and cost (latency; energy) at once."""
    for cost, flag in (("latency_s", "pareto_latency"), ("energy_j", "pareto_energy")):
        front = set(pareto_front([(getattr(p, cost), -p.accuracy) for p in points]))
        for p in points:
            setattr(p, flag, (getattr(p, cost), -p.accuracy) in front)

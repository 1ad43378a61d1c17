"""The selection problem of an ensemble bundle: its cached calibration outputs plus costs.

Quality comes from the bundle's calibration cache (the trained gate's weights and each
expert's probability of the true label), so no member is re-run per candidate subset. Costs
per expert come from the device the expert is placed on:
- compute: the roofline model of that device over the expert's operation counts per
  inference (``device.predict``; **simulated**), or, for an expert given a profile file,
  the figures ``ganglion profile`` **measured** on that device (``measured_costs``);
- transmission: the request's input and the expert's output moved over a link when the expert
  is not on the requesting device: ``link_ms + bits / link_mbps`` and ``bits · link_nj_per_bit``
  (**simulated**, the link model's parameters stated);
- aggregation: ``base_ms`` (the gate's own predicted latency on the requesting device) plus
  ``per_expert_ms`` per expert mixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ganglion.device import get_profile, predict
from ganglion.models.deployable import Deployable
from ganglion.runtime.kinds import kind_of
from ganglion.runtime.opcount import count_ops, dense_counts, example_inputs
from ganglion.runtime.selection.measured_costs import read_measured_cost
from ganglion.runtime.selection.problem import Expert, SelectionProblem, SelectionProblemError

GATE_FLOOR = 1e-12  # a gate weight that underflowed to 0 (float32) is taken as this


@dataclass(frozen=True)
class Link:
    """The network between the requesting device and the experts' devices (simulated)."""

    mbps: float = 100.0  # bandwidth, megabits per second
    latency_ms: float = 2.0  # one-way latency per request
    nj_per_bit: float = 50.0  # radio/NIC energy per bit moved

    def cost(self, nbytes: int) -> tuple[float, float]:
        """(joules, milliseconds) of moving ``nbytes`` there and back."""
        bits = 8.0 * nbytes
        return bits * self.nj_per_bit * 1e-9, self.latency_ms + bits / (self.mbps * 1e3)


def _bytes_per_sample(specs: list[Any]) -> int:
    total = 0
    for spec in specs:
        per_sample = math.prod(d for d in spec.shape[1:] if d > 0)
        total += per_sample * np.dtype(spec.dtype).itemsize
    return total


def _check_runs(device: str, kind: str, what: str, device_files: list[Any]) -> None:
    """SelectionProblemError when ``device`` cannot run a ``kind`` program (a neuromorphic
    chip runs spiking programs only): its costs there would describe no real placement."""
    why = get_profile(device, device_files).refuses(kind)
    if why is not None:
        raise SelectionProblemError(f"{what} placed on {device}: {why}")


def _predicted(
    deployable: Deployable, device: str, device_files: list[Any], gate_only: bool = False
) -> tuple[float, float]:
    """(joules, milliseconds) of one inference of ``deployable`` on ``device`` (simulated);
    ``gate_only`` counts an ensemble's gate without its members."""
    inputs = example_inputs(deployable.manifest, batch=1)
    kind = kind_of(deployable.manifest)
    counts = dense_counts(deployable, kind, inputs) if gate_only else count_ops(deployable, inputs)
    prediction = predict(counts, get_profile(device, device_files), batch=1)
    return prediction.energy_per_inference_j, prediction.latency_s * 1e3


def problem_from_ensemble(
    ensemble: Deployable,
    placement: dict[str, str],
    requester: str,
    link: Link = Link(),
    per_expert_ms: float = 0.01,
    device_files: list[Any] | None = None,
    profiles: dict[str, Path] | None = None,
) -> tuple[SelectionProblem, dict[str, Any]]:
    """The selection problem of ``ensemble`` and a description of where each figure came from.

    placement: expert -> device profile (experts not named run on ``requester``, the device
    the request arrives at, which also runs the gate). profiles: expert -> the JSON file
    ``ganglion profile EXPERT_BUNDLE --json`` wrote on the expert's device (measured compute).
    """
    if ensemble.manifest.kind != "ensemble":
        raise SelectionProblemError(
            f"select takes an ensemble bundle, this is a {ensemble.manifest.kind} program"
        )
    module = ensemble.module
    calibration = module.calibration()
    if not {"gate", "p_true"} <= set(calibration):
        raise SelectionProblemError("the ensemble bundle holds no calibration cache")
    files = device_files or []
    profiles = profiles or {}
    for option, named in (("--placement", placement), ("--profiled", profiles)):
        unknown = sorted(set(named) - set(module.experts))
        if unknown:
            raise SelectionProblemError(
                f"{option} names {unknown[0]!r}, not an expert ({', '.join(module.experts)})"
            )
    member_sha256 = {ref.name: ref.sha256 for ref in ensemble.manifest.members}
    experts, sources = [], {}
    moved_in = _bytes_per_sample(ensemble.manifest.inputs)
    for name in module.experts:
        member = ensemble.members[name]
        device = placement.get(name) or module.placement.get(name) or requester
        _check_runs(device, member.manifest.kind, f"expert {name!r}", files)
        compute = "simulated (roofline)"
        if name in profiles:
            if name not in member_sha256:
                raise SelectionProblemError(f"expert {name!r} has no bundle to match a profile to")
            cost = read_measured_cost(profiles[name], device, member_sha256[name])
            energy, latency, compute = cost.energy_j, cost.latency_ms, cost.source
        else:
            energy, latency = _predicted(member, device, files)
        remote = device != requester
        moved = moved_in + _bytes_per_sample(member.manifest.outputs)
        tx_energy, tx_latency = link.cost(moved) if remote else (0.0, 0.0)
        experts.append(Expert(name, energy, latency, tx_energy, tx_latency))
        sources[name] = {
            "device": device,
            "compute": compute,
            "transmission": f"simulated link ({link.mbps} Mb/s)" if remote else "none (local)",
            "kind": kind_of(member.manifest).name,
        }
    _check_runs(requester, "dense", "the gate (on the requester)", files)
    _, gate_ms = _predicted(ensemble, requester, files, gate_only=True)
    gate = np.maximum(calibration["gate"].double().numpy(), GATE_FLOOR)
    gate = gate / gate.sum(axis=1, keepdims=True)
    problem = SelectionProblem(
        experts=tuple(experts),
        base_ms=gate_ms,
        per_expert_ms=per_expert_ms,
        gate=gate,
        p_true=np.clip(calibration["p_true"].double().numpy(), 0.0, 1.0),
    )
    return problem, {"requester": requester, "experts": sources, "link": vars(link)}

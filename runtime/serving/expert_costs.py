"""What one expert costs on one node, from the best source at hand, each figure marked
``measured`` or ``simulated``.

Latency, best first:
- ``observed``: the coordinator's own round trips to that node for that model (a moving
  average; it includes the network, so no link time is added) — measured;
- the node's telemetry (``ganglion.v1``): its recent execution p50, or the warm-up p50 before
  it has served any request — measured, plus the simulated link;
- the node's device profile (the roofline over the expert's operation counts) — simulated,
  plus the simulated link.
Energy: the node's warm-up energy per inference where its telemetry reports one (measured or
simulated, as the node's meter says), else the device profile; plus the simulated link.
A reported figure that is NaN, not positive, above ``MAX_REPORTED`` or below ``MIN_FRACTION`` of
the device profile's (simulated) figure is ignored and the next source used: a node's telemetry
is checked, not trusted. The roofline is the device's best case, so a real run 1,000 times
cheaper than it is a broken meter or a false report, and a free expert would take every budget.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ganglion.runtime.selection import Expert

MAX_REPORTED = 1e6  # joules or seconds per inference a node may report; above: not believed
MIN_FRACTION = 1e-3  # of the profile's figure: a report below it is not believed either

MEASURED, SIMULATED = "measured", "simulated"


@dataclass(frozen=True)
class ReplicaCost:
    """One expert on one node: compute and link parts, and where each compute part came from."""

    energy_j: float
    latency_ms: float
    tx_energy_j: float
    tx_latency_ms: float
    energy_kind: str  # of energy_j: measured | simulated
    latency_kind: str  # of latency_ms: measured | simulated
    latency_source: str  # observed | telemetry | profile

    @property
    def total_energy_j(self) -> float:
        """Compute plus link energy."""
        return self.energy_j + self.tx_energy_j

    @property
    def total_latency_ms(self) -> float:
        """Compute plus link latency."""
        return self.latency_ms + self.tx_latency_ms

    def as_expert(self, name: str) -> Expert:
        """The selection problem's view of this cost."""
        return Expert(name, self.energy_j, self.latency_ms, self.tx_energy_j, self.tx_latency_ms)


def replica_cost(
    simulated: Expert, telemetry: Any | None, observed_ms: float | None
) -> ReplicaCost:
    """The cost of an expert on a node: ``simulated`` from its device profile and the link
    (``problem_from_ensemble``), ``telemetry`` the node's ``ModelTelemetry`` row for the model
    (None where the node offers none), ``observed_ms`` the coordinator's moving average."""
    energy, energy_kind = simulated.energy_j, SIMULATED
    measurement = telemetry.measurement if telemetry is not None else None
    if measurement is not None and measurement.runs > 0:
        if _usable(measurement.energy_per_inference_j, simulated.energy_j):  # checked
            energy = measurement.energy_per_inference_j
            energy_kind = MEASURED if measurement.energy_kind == MEASURED else SIMULATED
    seconds = None
    if telemetry is not None and (telemetry.inferences > 0 or measurement is not None):
        seconds = telemetry.latency_p50_s if telemetry.inferences > 0 else measurement.latency_p50_s
    if observed_ms is not None:
        latency, tx_latency, kind, source = observed_ms, 0.0, MEASURED, "observed"
    elif seconds is not None and _usable(seconds, simulated.latency_ms / 1e3):
        latency, tx_latency, kind, source = (
            seconds * 1e3,
            simulated.tx_latency_ms,
            MEASURED,
            "telemetry",
        )
    else:
        latency, tx_latency = simulated.latency_ms, simulated.tx_latency_ms
        kind, source = SIMULATED, "profile"
    return ReplicaCost(
        energy, latency, simulated.tx_energy_j, tx_latency, energy_kind, kind, source
    )


def _usable(figure: float, profile: float) -> bool:
    """Whether a node's reported cost can be used beside the device profile's figure for the
    same work: finite, positive, at least ``MIN_FRACTION`` of the profile's and at most
    ``MAX_REPORTED`` (other telemetry falls back to the simulated figure, never into the
    selection problem, which refuses what is not finite)."""
    return (
        math.isfinite(figure) and 0.0 < figure <= MAX_REPORTED and figure >= MIN_FRACTION * profile
    )


def figure_kind(parts: Iterable[tuple[float, str]]) -> str:
    """The kind of a sum of (value, kind) parts: measured or simulated when every non-zero
    part is, ``measured+simulated`` when both contribute."""
    kinds = {kind for value, kind in parts if value != 0.0}
    if kinds == {MEASURED}:
        return MEASURED
    if kinds <= {SIMULATED}:
        return SIMULATED
    return f"{MEASURED}+{SIMULATED}"


def energy_parts(costs: Iterable[ReplicaCost]) -> list[tuple[float, str]]:
    """(value, kind) of every energy part of ``costs`` (the link's is simulated)."""
    return [
        part for c in costs for part in ((c.energy_j, c.energy_kind), (c.tx_energy_j, SIMULATED))
    ]


def latency_parts(costs: Iterable[ReplicaCost]) -> list[tuple[float, str]]:
    """(value, kind) of every latency part of ``costs`` (the link's is simulated)."""
    return [
        part
        for c in costs
        for part in ((c.latency_ms, c.latency_kind), (c.tx_latency_ms, SIMULATED))
    ]


def changed(old: ReplicaCost | None, new: ReplicaCost, tolerance: float) -> bool:
    """Whether ``new`` differs from ``old`` by more than ``tolerance`` (relative) in total
    energy or total latency, or is the first cost known."""
    if old is None:
        return True
    pairs = (
        (old.total_energy_j, new.total_energy_j),
        (old.total_latency_ms, new.total_latency_ms),
    )
    return any(abs(b - a) > tolerance * max(abs(a), abs(b), 1e-12) for a, b in pairs)

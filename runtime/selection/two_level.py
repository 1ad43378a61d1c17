"""MoE²'s two levels: a coarse subset per request category and budgets (solved offline, cached),
and fine gating inside that subset per input at run time.

Coarse: ``SubsetCache.select`` returns the exact solver's subset for (category, energy budget,
latency budget), solving once and reusing the answer until the telemetry version changes (new
node costs mean a new problem); the least recently used entry goes when the cache is full.
Fine: ``gate_within`` keeps the gate's weights of the chosen experts, optionally only the
``top_k`` largest of them per input, and renormalizes them to sum to 1 (the gate trained on the
full set stays optimal on a subset: MoE²'s optimality-preserving property).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence

import numpy as np

from ganglion.models.mixture import renormalized
from ganglion.runtime.selection.problem import SelectionProblem
from ganglion.runtime.selection.solver import Selection, check_time_limit, solve


def gate_within(
    gate_row_or_rows: np.ndarray, subset: Sequence[int], top_k: int | None = None
) -> np.ndarray:
    """The gate renormalized over ``subset``: ``[N]`` or ``[B, N]`` in, same shape out.

    Weights outside the subset become 0. With ``top_k``, exactly the ``top_k`` largest weights
    inside the subset are kept per row (ties: the lower index): ``models.mixture.renormalized``,
    the rule every ensemble runtime applies, after these checks. Raises ``ValueError`` on an
    empty or out-of-range subset, ``top_k < 1``, or a subset's gate weight that is not > 0.
    """
    gate = np.asarray(gate_row_or_rows, dtype=np.float64)
    if gate.ndim not in (1, 2) or gate.shape[-1] == 0:
        raise ValueError(f"gate: expected [N] or [B, N], got shape {list(gate.shape)}")
    n = gate.shape[-1]
    members = sorted({int(e) for e in subset})
    if not members or members[0] < 0 or members[-1] >= n:
        raise ValueError(f"subset: expected 1..{n} expert indices in [0, {n}), got {list(subset)}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k: expected >= 1, got {top_k}")
    rows = gate.reshape(-1, n)
    if not (np.isfinite(rows[:, members]).all() and (rows[:, members] > 0).all()):
        raise ValueError("gate: the subset's weights must be finite and > 0")
    return renormalized(rows, members, top_k).reshape(gate.shape)


class SubsetCache:
    """Coarse level: the solved subset per (category, budgets), valid for one telemetry version.

    ``select`` solves on a miss or when ``telemetry_version`` differs from the one the cached
    answer was solved under (then every entry of that category is dropped); at most
    ``max_entries`` answers are kept, least recently used first out. ``None`` (nothing fits) is
    cached like any answer. ``time_limit_s`` bounds each solve (``solve``'s: at the limit the
    best subset found, marked not exact, is the answer, cached like the others).
    """

    def __init__(self, max_entries: int = 128, time_limit_s: float | None = None) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries: expected >= 1, got {max_entries}")
        check_time_limit(time_limit_s)
        self.max_entries = max_entries
        self.time_limit_s = time_limit_s
        self.hits = 0
        self.solves = 0
        self._entries: OrderedDict[tuple, Selection | None] = OrderedDict()
        self._versions: dict[Hashable, Hashable] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def select(
        self,
        category: Hashable,
        problem: SelectionProblem,
        energy_budget: float,
        latency_budget: float,
        telemetry_version: Hashable,
    ) -> Selection | None:
        """The subset for this category and budgets under ``telemetry_version``."""
        if self._versions.get(category, telemetry_version) != telemetry_version:
            stale = [key for key in self._entries if key[0] == category]
            for key in stale:
                del self._entries[key]
        self._versions[category] = telemetry_version
        key = (category, float(energy_budget), float(latency_budget))
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            return self._entries[key]
        self.solves += 1
        answer = solve(problem, energy_budget, latency_budget, self.time_limit_s)
        self._entries[key] = answer
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return answer

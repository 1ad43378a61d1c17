"""Baselines for the MoE² selection problem, on the same problem and budgets as the solver.

- ``single``: the best feasible single expert (ties broken like the solver's).
- ``all``: every expert, when that fits both budgets.
- ``greedy_per_joule``: from the empty set (``Q(∅) = 0``), add the expert with the largest
  ``(Q(S ∪ {e}) - Q(S)) / c_e`` among those that keep ``S`` feasible (a free expert with a
  positive gain first; ties to the lower index), while that gain exceeds ``TIE_TOLERANCE``
  (a gain of rounding noise, such as a duplicate expert's, adds nothing). The first expert
  joins whenever one fits, even when every quality is 0.
- ``random``: experts in a random order (``numpy.random.default_rng(seed)``), each added when
  the subset stays feasible: a random maximal feasible subset.

Each returns a ``Selection`` or ``None`` when it finds no feasible subset.
"""

from __future__ import annotations

import math

import numpy as np

from ganglion.runtime.selection.problem import SelectionProblem
from ganglion.runtime.selection.solver import TIE_TOLERANCE, Selection, tie_key


def _selection(problem: SelectionProblem, subset: list[int]) -> Selection:
    members = tuple(sorted(subset))
    q = problem.quality(members)
    return Selection(members, q, problem.energy(members), problem.latency(members), 0)


def single_best(
    problem: SelectionProblem, energy_budget: float, latency_budget: float
) -> Selection | None:
    """The feasible single expert with the highest Q (ties: the solver's key)."""
    experts = range(problem.n_experts)
    fits = [e for e in experts if problem.fits((e,), energy_budget, latency_budget)]
    if not fits:
        return None
    quality = {e: problem.quality((e,)) for e in fits}
    best = max(quality.values())
    tied = [e for e in fits if quality[e] >= best - TIE_TOLERANCE]
    return _selection(problem, [min(tied, key=lambda e: tie_key(problem, (e,)))])


def all_experts(
    problem: SelectionProblem, energy_budget: float, latency_budget: float
) -> Selection | None:
    """Every expert, or None when the whole set does not fit."""
    everyone = list(range(problem.n_experts))
    if not problem.fits(everyone, energy_budget, latency_budget):
        return None
    return _selection(problem, everyone)


def greedy_per_joule(
    problem: SelectionProblem, energy_budget: float, latency_budget: float
) -> Selection | None:
    """Greedy by quality gain per joule (see the module docstring)."""
    members: list[int] = []
    q = 0.0
    gp = problem.gate * problem.p_true  # [M, N]
    num = np.zeros(problem.n_samples)
    den = np.zeros(problem.n_samples)
    while True:
        joined = ((num[:, None] + gp) / (den[:, None] + problem.gate)).mean(axis=0)  # [N]
        best, best_rate = None, -math.inf
        for e in range(problem.n_experts):
            gain = float(joined[e]) - q
            if e in members or (gain <= TIE_TOLERANCE and members):
                continue
            if not problem.fits(members + [e], energy_budget, latency_budget):
                continue
            cost = float(problem.cost_j[e])
            rate = gain / cost if cost > 0 else (math.inf if gain > 0 else 0.0)
            if rate > best_rate:
                best, best_rate = e, rate
        if best is None:
            return _selection(problem, members) if members else None
        members.append(best)
        num, den = num + gp[:, best], den + problem.gate[:, best]
        q = float(np.mean(num / den))


def random_feasible(
    problem: SelectionProblem, energy_budget: float, latency_budget: float, seed: int = 0
) -> Selection | None:
    """A random maximal feasible subset (seeded)."""
    members: list[int] = []
    for e in np.random.default_rng(seed).permutation(problem.n_experts):
        if problem.fits(members + [int(e)], energy_budget, latency_budget):
            members.append(int(e))
    return _selection(problem, members) if members else None


def run_baselines(
    problem: SelectionProblem, energy_budget: float, latency_budget: float, seed: int = 0
) -> dict[str, Selection | None]:
    """Every baseline by name: single, all, greedy_per_joule, random."""
    return {
        "single": single_best(problem, energy_budget, latency_budget),
        "all": all_experts(problem, energy_budget, latency_budget),
        "greedy_per_joule": greedy_per_joule(problem, energy_budget, latency_budget),
        "random": random_feasible(problem, energy_budget, latency_budget, seed),
    }

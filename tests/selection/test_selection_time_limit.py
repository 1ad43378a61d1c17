"""A search stopped at its time limit: a feasible best-found subset and a valid optimality gap."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

from ganglion.runtime.selection import SubsetCache, brute_force, solve, solver
from ganglion.runtime.selection.synthetic import GATES, binding_budgets, synthetic_problem


class TickClock:
    """A stand-in for the solver's ``time`` module: every reading is one second later, so a
    limit of ``n`` seconds stops the search at its ``n``-th check, the same way on every run."""

    def __init__(self) -> None:
        self.ticks = itertools.count()

    def monotonic(self) -> float:
        return float(next(self.ticks))


@pytest.mark.parametrize("grace", [solver.GRACE, 1e9])
@pytest.mark.parametrize("seed", range(3))
def test_a_search_stopped_anywhere_answers_a_feasible_subset_within_its_gap(
    seed, grace, monkeypatch
):
    # grace 1e9: every root left is bounded by its own node, so the gap rests on what each
    # stopped frame reports of its children left, not on the loose bound over all the rest
    monkeypatch.setattr(solver, "GRACE", grace)
    rng = np.random.default_rng(900 + seed)
    stopped = 0
    for i in range(16):
        problem = synthetic_problem(rng, int(rng.integers(8, 15)), 16, GATES[i % 3])
        energy, latency = binding_budgets(problem, rng)
        best = brute_force(problem, energy, latency)
        for limit in (1, 2, 3, 5, 8, 13, 40):
            monkeypatch.setattr(solver, "time", TickClock())
            found = solve(problem, energy, latency, time_limit_s=limit)
            assert (found is None) == (best is None)
            if best is None:
                continue
            assert problem.fits(found.experts, energy, latency)
            assert found.quality <= best.quality + 1e-12
            assert found.gap >= 0.0
            # the optimum is at most quality + gap (rounding margins aside)
            assert best.quality <= found.quality + found.gap + 1e-9
            if found.exact:  # nothing left could tie: the complete search's answer
                assert found.experts == best.experts
                assert found.gap == 0.0
            else:
                stopped += 1
    assert stopped > 0  # the limits did stop searches before they were done


def test_a_hard_instance_stopped_at_once_still_answers_and_is_marked():
    rng = np.random.default_rng(64)
    problem = synthetic_problem(rng, 64, 256, "random")
    energy, latency = binding_budgets(problem, rng)
    found = solve(problem, energy, latency, time_limit_s=1e-9)
    assert found is not None and not found.exact
    assert problem.fits(found.experts, energy, latency)
    assert 0.0 < found.gap <= 1.0
    assert found.quality + found.gap >= max(
        problem.quality((e,)) for e in range(64) if problem.fits((e,), energy, latency)
    )


def test_an_ample_limit_changes_nothing():
    rng = np.random.default_rng(5)
    problem = synthetic_problem(rng, 12, 16, "adversarial")
    energy, latency = binding_budgets(problem, rng)
    assert solve(problem, energy, latency, time_limit_s=600.0) == solve(problem, energy, latency)


@pytest.mark.parametrize("limit", [0.0, -1.0, float("nan")])
def test_a_limit_that_is_not_positive_is_refused(limit):
    rng = np.random.default_rng(1)
    problem = synthetic_problem(rng, 4, 8)
    with pytest.raises(ValueError, match="time_limit_s"):
        solve(problem, 10.0, 100.0, time_limit_s=limit)
    with pytest.raises(ValueError, match="time_limit_s"):
        SubsetCache(time_limit_s=limit)


def test_the_subset_cache_bounds_its_solves():
    rng = np.random.default_rng(64)
    problem = synthetic_problem(rng, 64, 256, "random")
    energy, latency = binding_budgets(problem, rng)
    answer = SubsetCache(time_limit_s=1e-9).select("all", problem, energy, latency, 0)
    assert answer is not None and not answer.exact


def test_the_clock_starts_after_the_compiled_loops_are_loaded(monkeypatch):
    """Loading numba's loops into an empty cache takes seconds: a 1 s limit must not be spent
    on it (the coordinator's first plan came back inexact, and stayed cached)."""
    from ganglion.runtime.selection import bounds

    class Clock:
        now = 0.0

        def monotonic(self) -> float:
            return self.now

    clock, loads = Clock(), []

    def slow_load() -> float:
        loads.append(clock.now)
        clock.now += 100.0  # a cold numba cache
        return 100.0

    monkeypatch.setattr(solver, "time", clock)
    monkeypatch.setattr(bounds, "warm_up", slow_load)
    rng = np.random.default_rng(11)
    problem = synthetic_problem(rng, 12, 16, "trained")
    energy, latency = binding_budgets(problem, rng)
    found = solve(problem, energy, latency, time_limit_s=1.0)
    assert loads == [0.0]  # loaded, once, before the search's clock started
    assert found is not None and found.exact
    assert found.experts == brute_force(problem, energy, latency).experts


WARM_CHECK = """
import numba, numpy as np
from ganglion.runtime.selection import bound_kernels, bounds, solve, solver
from ganglion.runtime.selection.synthetic import binding_budgets, synthetic_problem
dispatcher = numba.core.registry.CPUDispatcher
loops = [f for f in vars(bound_kernels).values() if isinstance(f, dispatcher)]
bounds.warm_up()
before = {f: set(f.signatures) for f in loops}
rng = np.random.default_rng(64)
problem = synthetic_problem(rng, 40, 24, "random")
energy, latency = binding_budgets(problem, rng)
solve(problem, energy, latency)
solver.GRACE = 1e9  # every root left at the deadline is bounded at its own node
solve(problem, energy, latency, time_limit_s=1e-9)
print(sorted(f.__name__ for f in loops if set(f.signatures) - before[f]))
"""


def test_a_search_after_warm_up_loads_no_other_compiled_loop():
    """Each loop signature a search meets must be one ``warm_up`` loaded: another one is loaded,
    or compiled into an empty cache (seconds), inside the search's clock. Bounding the roots
    left at a deadline once passed read-only views (another signature) and overran a 0.05 s
    limit by seconds on a fresh cache. A fresh interpreter, so no other test loaded them."""
    out = subprocess.run(
        [sys.executable, "-c", WARM_CHECK], capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"

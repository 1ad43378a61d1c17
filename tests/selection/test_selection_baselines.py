"""Baselines: feasible, never better than the exact optimum, each doing what its name says."""

from __future__ import annotations

import numpy as np

from ganglion.runtime.selection import (
    Expert,
    SelectionProblem,
    all_experts,
    greedy_per_joule,
    random_feasible,
    run_baselines,
    solve,
)
from ganglion.runtime.selection.synthetic import GATES, binding_budgets, synthetic_problem


def test_baselines_fit_and_never_beat_the_optimum():
    rng = np.random.default_rng(0)
    for i in range(30):
        problem = synthetic_problem(rng, int(rng.integers(2, 12)), 20, GATES[i % 3])
        energy, latency = binding_budgets(problem, rng)
        best = solve(problem, energy, latency)
        for name, base in run_baselines(problem, energy, latency).items():
            if best is None:
                assert base is None, name
                continue
            if base is not None:
                assert problem.fits(base.experts, energy, latency), name
                assert base.quality <= best.quality + 1e-12, name


def test_all_experts_only_when_the_whole_set_fits():
    problem = synthetic_problem(np.random.default_rng(1), 4, 8, "trained")
    total, everyone = problem.energy(range(4)), problem.latency(range(4))
    assert all_experts(problem, total, everyone).experts == (0, 1, 2, 3)
    assert all_experts(problem, np.nextafter(total, 0.0), everyone).experts == (0, 1, 2, 3)
    assert all_experts(problem, total * (1 - 1e-11), everyone) is None  # beyond rounding


def test_greedy_takes_the_best_gain_per_joule_first():
    # x0: quality 0.6 for 1 J; x1: quality 0.9 for 3 J (0.3 per J vs 0.6 per J); both fit
    experts = (Expert("x0", 1.0, 1.0, 0.0, 0.0), Expert("x1", 3.0, 1.0, 0.0, 0.0))
    gate = np.array([[0.5, 0.5]] * 2)
    p_true = np.array([[0.6, 0.9]] * 2)
    problem = SelectionProblem(experts, 0.0, 0.0, gate, p_true)
    assert greedy_per_joule(problem, 4.0, 10.0).experts == (0, 1)  # x0 first, then x1 helps
    assert greedy_per_joule(problem, 2.0, 10.0).experts == (0,)


def test_random_subset_is_seeded_and_maximal():
    problem = synthetic_problem(np.random.default_rng(3), 10, 10, "random")
    energy, latency = float(problem.cost_j.sum() * 0.3), 1e6
    first = random_feasible(problem, energy, latency, seed=5)
    assert random_feasible(problem, energy, latency, seed=5) == first
    for e in set(range(10)) - set(first.experts):
        assert not problem.fits(first.experts + (e,), energy, latency)


def test_greedy_adds_no_duplicate_for_a_gain_of_rounding_noise():
    """x1 copies x0: joining it changes Q by rounding alone, so greedy stops at one."""
    rng = np.random.default_rng(3)  # the mean over these 30 samples rounds up joining x1
    gate, p_true = rng.uniform(0.1, 1.0, (30, 1)), rng.uniform(0, 1, (30, 1))
    experts = (Expert("x0", 1.0, 1.0, 0.0, 0.0), Expert("x1", 1.0, 1.0, 0.0, 0.0))
    problem = SelectionProblem(experts, 0.0, 0.0, np.hstack([gate] * 2), np.hstack([p_true] * 2))
    assert greedy_per_joule(problem, 5.0, 10.0).experts == (0,)


def test_greedy_picks_an_expert_when_every_quality_is_zero():
    experts = (Expert("x0", 2.0, 1.0, 0.0, 0.0), Expert("x1", 1.0, 1.0, 0.0, 0.0))
    problem = SelectionProblem(experts, 0.0, 0.0, np.ones((3, 2)), np.zeros((3, 2)))
    chosen = greedy_per_joule(problem, 5.0, 10.0)
    assert chosen is not None and chosen.experts == (0,) and chosen.quality == 0.0

"""The exact solver against vectorized brute force on random, adversarial, tied and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ganglion.runtime.selection import (
    Expert,
    SelectionProblem,
    bounds,
    brute_force,
    solve,
    solver,
    tie_key,
)
from ganglion.runtime.selection.synthetic import (
    GATES,
    binding_budgets,
    edge_budgets,
    synthetic_problem,
)


def instances(seed: int, count: int, max_experts: int, samples: int, min_experts: int = 1):
    """(problem, energy budget, latency budget) drawn over gate kinds, duplicates and budgets."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        n = int(rng.integers(min_experts, max_experts + 1))
        duplicates = int(rng.integers(0, n)) if i % 4 == 0 else 0
        problem = synthetic_problem(rng, n, samples, GATES[i % 3], duplicates)
        budgets = edge_budgets if i % 5 == 0 else binding_budgets
        yield problem, *budgets(problem, rng)


def assert_same(problem, energy_budget, latency_budget) -> None:
    exact = solve(problem, energy_budget, latency_budget)
    reference = brute_force(problem, energy_budget, latency_budget)
    if reference is None:
        assert exact is None
        return
    assert exact is not None, (energy_budget, latency_budget)
    assert exact.experts == reference.experts
    assert abs(exact.quality - reference.quality) <= 1e-12
    assert problem.fits(exact.experts, energy_budget, latency_budget)


@pytest.mark.parametrize("seed", range(6))
def test_solver_equals_brute_force_on_small_instances(seed):
    for problem, energy, latency in instances(seed, 250, 10, 12):
        assert_same(problem, energy, latency)


@pytest.mark.parametrize("seed", range(2))
def test_every_bound_and_cut_path_equals_brute_force(seed, monkeypatch):
    # no vectorized leaves and the LP bound at every node: small problems take every code path
    monkeypatch.setattr(solver, "LEAF_SIZE", 0)
    monkeypatch.setattr(bounds, "COMBINED_MIN", 0)
    for problem, energy, latency in instances(50 + seed, 150, 10, 12):
        assert_same(problem, energy, latency)


@pytest.mark.parametrize("gate", GATES)
def test_solver_equals_brute_force_up_to_sixteen_experts(gate):
    rng = np.random.default_rng(GATES.index(gate))
    for n in (13, 16):
        problem = synthetic_problem(rng, n, 24, gate, duplicates=2)
        assert_same(problem, *binding_budgets(problem, rng))


@pytest.mark.parametrize("n", (14, 15, 16))
def test_solver_equals_brute_force_at_fourteen_to_sixteen_experts(n):
    # 10 instances per size: every gate kind, duplicated experts (ties), edge budgets
    for problem, energy, latency in instances(300 + n, 10, n, 16, min_experts=n):
        assert problem.n_experts == n
        assert_same(problem, energy, latency)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 140))
def test_solver_equals_brute_force_many_more(seed):
    for problem, energy, latency in instances(seed, 500, 14, 32):
        assert_same(problem, energy, latency)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(200, 210))
def test_every_bound_and_cut_path_equals_brute_force_many_more(seed, monkeypatch):
    monkeypatch.setattr(solver, "LEAF_SIZE", 0)
    monkeypatch.setattr(bounds, "COMBINED_MIN", 0)
    for problem, energy, latency in instances(seed, 500, 13, 32):
        assert_same(problem, energy, latency)


def test_budget_equal_to_a_subsets_cost_keeps_it_feasible():
    rng = np.random.default_rng(7)
    problem = synthetic_problem(rng, 8, 16, "trained")
    subset = (1, 4, 6)
    energy, latency = problem.energy(subset), problem.latency(subset)
    chosen = solve(problem, energy, latency)
    assert chosen is not None and problem.fits(chosen.experts, energy, latency)
    assert chosen.energy_j <= energy * (1 + 1e-12) and chosen.latency_ms <= latency * (1 + 1e-12)
    assert brute_force(problem, energy, latency).experts == chosen.experts
    # one ulp less is rounding (another summation order): it still fits; 1e-11 less does not
    assert problem.fits(subset, np.nextafter(energy, 0.0), latency)
    assert not problem.fits(subset, energy * (1 - 1e-11), latency)


def twins_problem() -> SelectionProblem:
    """x0 weak; x1 and x2 identical (costs, gate column, p_true column) and best."""
    experts = (
        Expert("x0", 1.0, 10.0, 0.0, 0.0),
        Expert("x1", 1.0, 10.0, 0.0, 0.0),
        Expert("x2", 1.0, 10.0, 0.0, 0.0),
    )
    gate = np.array([[0.2, 0.4, 0.4], [0.5, 0.25, 0.25], [0.3, 0.35, 0.35]])
    p_true = np.array([[0.1, 0.8, 0.8], [0.3, 0.9, 0.9], [0.2, 0.6, 0.6]])
    return SelectionProblem(experts, 0.0, 0.0, gate, p_true)


def test_identical_experts_tie_to_the_lower_index():
    problem = twins_problem()
    assert problem.quality((1,)) == problem.quality((2,))
    assert solve(problem, 1.0, 100.0).experts == (1,)
    assert brute_force(problem, 1.0, 100.0).experts == (1,)


def test_equal_quality_with_more_energy_loses_the_tie():
    problem = twins_problem()  # Q({x1, x2}) == Q({x1}) but it costs twice the energy
    assert abs(problem.quality((1, 2)) - problem.quality((1,))) <= 1e-15
    assert solve(problem, 3.0, 100.0).experts == (1,)


def test_tie_key_prefers_less_energy_then_latency_then_size_then_index():
    rng = np.random.default_rng(0)
    problem = synthetic_problem(rng, 5, 8, "trained")
    keys = sorted([(0, 1), (2,), (0, 3), (1,)], key=lambda s: tie_key(problem, s))
    energies = [problem.energy(s) for s in keys]
    assert energies == sorted(energies)


def test_weak_expert_with_large_gate_weight_is_left_out():
    # expert 1 is always wrong and the gate trusts it 9:1, so adding it lowers Q
    experts = tuple(Expert(f"x{j}", 1.0, 10.0, 0.0, 0.0) for j in range(2))
    gate = np.array([[0.1, 0.9]] * 4)
    p_true = np.array([[0.9, 0.0]] * 4)
    problem = SelectionProblem(experts, 0.0, 0.0, gate, p_true)
    chosen = solve(problem, 10.0, 100.0)
    assert chosen.experts == (0,) and chosen.quality == pytest.approx(0.9)


def test_no_subset_fits_returns_none():
    rng = np.random.default_rng(1)
    problem = synthetic_problem(rng, 6, 10, "random")
    assert solve(problem, float(problem.cost_j.min()) * 0.5, 1e9) is None
    assert solve(problem, 1e9, float(problem.delay_ms.min())) is None


@pytest.mark.parametrize("budget", [math.nan, -1.0])
def test_a_nan_or_negative_budget_is_refused_not_answered_infeasible(budget):
    problem = synthetic_problem(np.random.default_rng(2), 5, 10, "trained")
    for search in (solve, brute_force):
        with pytest.raises(ValueError, match="budget must be a number >= 0"):
            search(problem, budget, 100.0)
    unbounded = solve(problem, math.inf, math.inf)  # infinity: no budget
    assert unbounded.experts == brute_force(problem, math.inf, math.inf).experts


@pytest.mark.parametrize("seed", range(2))
def test_gates_spanning_the_allowed_range_with_zeros_equal_brute_force(seed, monkeypatch):
    """Weights from 1e-150 of their row's largest up to it, and zeros (read as 1e-200): every
    sum and bound stays in normal floats. Subnormal weights once cut the optimum's branch."""
    monkeypatch.setattr(solver, "LEAF_SIZE", 0)
    monkeypatch.setattr(bounds, "COMBINED_MIN", 0)
    rng = np.random.default_rng(100 + seed)
    for problem, energy, latency in instances(seed, 120, 8, 6):
        gate = 10.0 ** rng.uniform(-149.9, 0.0, problem.gate.shape)
        gate[rng.random(gate.shape) < 0.4] = 0.0
        gate[np.arange(len(gate)), rng.integers(0, gate.shape[1], len(gate))] = 1.0
        extreme = SelectionProblem(
            problem.experts, problem.base_ms, problem.per_expert_ms, gate, problem.p_true
        )
        assert_same(extreme, energy, latency)


def test_a_weight_too_small_to_weigh_is_refused():
    base = next(instances(0, 1, 3, 1, min_experts=3))[0]
    with pytest.raises(ValueError, match="at least 1e-150 of its row's largest"):
        SelectionProblem(base.experts, 0.0, 0.0, [[0.0, 1.0, 1e-307]], [[0.6, 0.9, 0.1]])


def test_a_superset_beating_its_node_by_less_than_the_tie_margin_is_not_hidden():
    # {3, 4} beats {3} and {4} by 7.5e-13 and is the optimum; cutting {3}'s subtree because
    # its bound was "at most Q({3}) + 1e-12" hid it, lowered the tie window to 0.5 - 1e-12 and
    # let the cheaper {5} (0.5 - 5e-13) win, which brute force's window excludes
    eps, pu = 1.5e-12, 0.5 - 0.5e-12
    x = 0.5 + eps
    gate = np.array([[1.0, 1.0, 1.0, 3.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 3.0, 1.0]])
    p_true = np.array([[0.5, 0.5, 0.5, x, 1 - x, pu], [0.5, 0.5, 0.5, 1 - x, x, pu]])
    costs = (10.0, 10.0, 10.0, 1.0, 1.0, 0.5)
    experts = tuple(Expert(f"e{j}", c, 1.0, 0.0, 0.0) for j, c in enumerate(costs))
    problem = SelectionProblem(experts, 0.0, 0.0, gate, p_true)
    assert problem.quality((3, 4)) > problem.quality((3,)) > problem.quality((5,))
    chosen, truth = solve(problem, 10.0, 100.0), brute_force(problem, 10.0, 100.0)
    assert chosen.experts == truth.experts == (3,)

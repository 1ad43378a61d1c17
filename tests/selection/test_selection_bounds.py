"""Every pruning bound is at least the best quality reachable below its node (brute force)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ganglion.runtime.selection.bounds import (
    Workspace,
    family_below,
    knapsack_bound,
    superset_bounds,
)
from ganglion.runtime.selection.synthetic import GATES, synthetic_problem

BOUNDS = {"knapsack", "sized", "ratio", "combined"}


def random_node(rng, problem):
    """(members, avail, room, k) of a node the search could visit."""
    n = problem.n_experts
    order = rng.permutation(n)
    size = int(rng.integers(1, min(3, n - 1) + 1))
    members = tuple(sorted(int(e) for e in order[:size]))
    avail = tuple(int(e) for e in order[size : size + int(rng.integers(1, n - size + 1))])
    room = float(problem.cost_j[list(avail)].sum() * rng.uniform(0.2, 1.1))
    return members, avail, room, int(rng.integers(1, len(avail) + 1))


def best_below(problem, members, pool, room, k):
    """max Q(S ∪ B) over B ⊆ pool with |B| <= k and Σ_B c <= room (B may be empty)."""
    best = problem.quality(members)
    for size in range(1, k + 1):
        for extra in itertools.combinations(pool, size):
            if problem.cost_j[list(extra)].sum() <= room:
                best = max(best, problem.quality(members + extra))
    return best


@pytest.mark.parametrize("gate", GATES)
def test_each_bound_is_at_least_the_best_superset(gate):
    rng = np.random.default_rng(GATES.index(gate))
    for _ in range(60):
        problem = synthetic_problem(rng, int(rng.integers(3, 10)), 16, gate, duplicates=1)
        members, avail, room, k = random_node(rng, problem)
        truth = best_below(problem, members, avail, room, k)
        bounds = superset_bounds(problem, members, avail, room, k)
        if k <= 0 or problem.cost_j[list(avail)].min() > room:
            continue
        assert set(bounds) == BOUNDS
        for name, value in bounds.items():
            assert value >= truth - 1e-12, (name, value, truth)


@pytest.mark.parametrize("gate", GATES)
def test_child_bounds_cover_each_childs_subtree(gate):
    rng = np.random.default_rng(10 + GATES.index(gate))
    checked = 0
    for _ in range(40):
        problem = synthetic_problem(rng, int(rng.integers(3, 9)), 16, gate)
        members, avail, room, k = random_node(rng, problem)
        ws = Workspace(problem)
        num, den = ws.gp[list(members)].sum(axis=0), ws.g[list(members)].sum(axis=0)
        node = ws.evaluate(num, den, np.array(avail), room, k)
        costs = ws.cost[list(avail)]
        for j in range(len(avail)):
            later = np.array([i for i in rng.permutation(len(avail)) if i != j][: len(avail) // 2])
            if costs[j] > room:
                continue
            pool = tuple(avail[i] for i in later)
            truth = best_below(problem, members + (avail[j],), pool, room - costs[j], node.k - 1)
            for family in node.families:
                later = later.astype(np.intp)
                bound = max(piece.forced(j, later, costs, room) for piece in family)
                assert node.q + bound >= truth - 1e-12
                assert not family_below(family, j, later, costs, room, truth - node.q - 1e-12)
                checked += 1
    assert checked > 100


def test_knapsack_bound_is_at_least_the_best_knapsack():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 8))
        values = rng.normal(0.1, 1.0, n)
        costs = np.where(rng.random(n) < 0.2, 0.0, rng.uniform(0.1, 2.0, n))
        room, k = float(rng.uniform(0.0, 3.0)), int(rng.integers(0, n + 1))
        best = 0.0
        for size in range(k + 1):
            for pick in itertools.combinations(range(n), size):
                if costs[list(pick)].sum() <= room:
                    best = max(best, float(values[list(pick)].sum()))
        assert knapsack_bound(values, costs, room, k) >= best - 1e-12

"""Every pruning bound is at least the best quality reachable below its node (brute force)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ganglion.runtime.selection import bounds
from ganglion.runtime.selection.bounds import (
    Workspace,
    child_bounds,
    family_below,
    knapsack_bound,
    superset_bounds,
)
from ganglion.runtime.selection.synthetic import GATES, synthetic_problem

NAMES = {"knapsack", "ratio", "combined"}  # "ratio" once a size range needs it
REQUIRED = {"knapsack", "combined"}


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
        assert REQUIRED <= set(bounds) <= NAMES
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


@pytest.mark.parametrize("gate", GATES)
def test_bounds_with_the_parents_gate_sums_hold_below_it(gate):
    # the search's first pass at a child bounds it with its parent's gate sums: a node below
    # (one more member, fewer joinable experts, less room, a smaller cap) must stay covered
    rng = np.random.default_rng(60 + GATES.index(gate))
    checked = 0
    for _ in range(200):
        problem = synthetic_problem(rng, int(rng.integers(4, 11)), 16, gate, duplicates=1)
        members, avail, room, k = random_node(rng, problem)
        ws = Workspace(problem)
        num, den = ws.gp[list(members)].sum(axis=0), ws.g[list(members)].sum(axis=0)
        parent = ws.evaluate(num, den, np.array(avail), room, k)
        if parent.k < 2 or len(avail) < 2:
            continue
        e = avail[int(rng.integers(len(avail)))]
        rest = [a for a in avail if a != e]
        below = tuple(a for a in rest if rng.random() < 0.8) or (rest[0],)
        child_room = (room - problem.cost_j[e]) * rng.uniform(0.7, 1.0)
        child_k = int(rng.integers(1, parent.k))  # at most the parent's cap less one
        child = members + (e,)
        if problem.cost_j[list(below)].min() > child_room:
            continue
        c_num, c_den = num + ws.gp[e], den + ws.g[e]
        node = ws.evaluate(
            c_num, c_den, np.array(below), child_room, child_k, inherited=parent.sums
        )
        assert not node.exact
        truth = best_below(problem, tuple(sorted(child)), below, child_room, child_k)
        assert REQUIRED <= set(node.bounds) <= NAMES
        for name, value in node.bounds.items():
            assert value >= truth - 1e-12, (name, value, truth)
        checked += 1
    assert checked > 40


def test_a_first_pass_that_cannot_prune_reports_no_partial_bound():
    # with the parent's sums and a threshold the node cannot reach, the first pass stops at
    # the first size range that fails and must not report the ranges it skipped as a bound
    rng = np.random.default_rng(70)
    problem = synthetic_problem(rng, 16, 32, "random")
    ws = Workspace(problem)
    avail = np.arange(1, 16)
    room = float(problem.cost_j.sum())
    num, den = ws.gp[0].copy(), ws.g[0].copy()
    parent = ws.evaluate(num, den, avail, room, 15)
    child = ws.evaluate(
        num + ws.gp[1], den + ws.g[1], avail[1:], room, 13, -1e9, inherited=parent.sums
    )
    assert "combined" not in child.bounds and not child.families[1:]
    assert child.bound >= -1e9


def test_knapsack_bound_is_at_least_the_best_knapsack():
    rng = np.random.default_rng(0)
    tight = 0
    for trial in range(600):
        n = int(rng.integers(1, 8))
        values = rng.normal(0.1 if trial % 2 else -0.5, 1.0, n)  # mostly negative: lo binds
        costs = np.where(rng.random(n) < 0.2, 0.0, rng.uniform(0.1, 2.0, n))
        room, k = float(rng.uniform(0.0, 3.0)), int(rng.integers(0, n + 1))
        lo = int(rng.integers(0, k + 1)) if trial % 3 else 0
        best = -np.inf
        for size in range(lo, k + 1):
            for pick in itertools.combinations(range(n), size):
                if costs[list(pick)].sum() <= room:
                    best = max(best, float(values[list(pick)].sum()))
        bound = knapsack_bound(values, costs, room, k, lo)
        assert bound >= best - 1e-12, (values, costs, room, lo, k)
        tight += best > -np.inf and bound < max(best, 0.0) - 1e-9  # below what lo=0 allows
    assert tight > 20  # the minimum size is used, not only checked


def test_size_pieces_partition_the_sizes_at_any_threshold():
    # the combined family's pieces cover every |B| in [1, k] exactly once (split or not)
    rng = np.random.default_rng(90)
    split = 0
    for trial in range(40):
        problem = synthetic_problem(rng, 14, 16, GATES[trial % 3])
        ws = Workspace(problem)
        avail = np.arange(1, 14)
        room, k = float(problem.cost_j.sum()), int(rng.integers(2, 14))
        num, den = ws.gp[0].copy(), ws.g[0].copy()
        top = ws.evaluate(num, den, avail, room, k).bound
        for threshold in np.linspace(problem.quality((0,)), top, 5):
            node = ws.evaluate(num, den, avail, room, k, threshold)
            if len(node.families) < 2:
                continue  # cut before the size pieces
            sizes = sorted(s for p in node.families[1] for s in range(p.lo, p.hi + 1))
            assert sizes == list(range(1, node.k + 1))
            split += any(p.lo == p.hi > 1 for p in node.families[1])
    assert split > 5


def node_supersets(problem, members, avail, room, k, least=0):
    """Vectorized brute force: max Q(S ∪ B) over B ⊆ avail, least <= |B| <= k, Σ_B c <= room
    (-inf when there is none), and per sample the best ratio over every B ⊆ avail (sizes and
    energy ignored)."""
    n = len(avail)
    bits = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.float64)  # [2^n, n]
    g, gp = problem.gate, problem.gate * problem.p_true  # [M, N]
    num = gp[:, list(members)].sum(axis=1) + bits @ gp[:, list(avail)].T  # [2^n, M]
    den = g[:, list(members)].sum(axis=1) + bits @ g[:, list(avail)].T
    ratio = num / den
    size = bits.sum(axis=1)
    allowed = (size >= least) & (size <= k) & (bits @ problem.cost_j[list(avail)] <= room)
    best = float(ratio.mean(axis=1)[allowed].max()) if allowed.any() else -np.inf
    return best, ratio.max(axis=0)


@pytest.mark.parametrize("gate", GATES)
def test_every_size_range_bound_holds_with_many_joinable_experts(gate):
    # 12-17 joinable experts and k up to all of them: the ranges [8, 15] and [16, k] take part
    rng = np.random.default_rng(20 + GATES.index(gate))
    for _ in range(4):
        problem = synthetic_problem(rng, 19, 8, gate, duplicates=2)
        order = rng.permutation(19)
        members = tuple(sorted(int(e) for e in order[:2]))
        avail = tuple(int(e) for e in order[2 : 2 + int(rng.integers(12, 18))])
        room = float(problem.cost_j[list(avail)].sum() * rng.uniform(0.5, 1.1))
        k = int(rng.integers(8, len(avail) + 1))
        truth, _ = node_supersets(problem, members, avail, room, k)
        bounds = superset_bounds(problem, members, avail, room, k)
        assert REQUIRED <= set(bounds) <= NAMES
        for name, value in bounds.items():
            assert value >= truth - 1e-12, (name, value, truth)


def test_sized_pieces_standing_in_for_the_lp_cover_each_childs_subtree(monkeypatch):
    # with a threshold, a size range the sized bound already cuts keeps its sized piece (no
    # LP), split or not, in the combined family: the children's pre-checks must still cover
    # every subtree
    monkeypatch.setattr(bounds, "COMBINED_MIN", 0)
    rng = np.random.default_rng(80)
    stand_ins = 0
    for trial in range(30):
        problem = synthetic_problem(rng, 10, 8, GATES[trial % 3], duplicates=1)
        order = rng.permutation(10)
        members = (int(order[0]),)
        avail = np.array(sorted(int(e) for e in order[1:]))
        room = float(problem.cost_j[avail].sum() * rng.uniform(0.5, 1.1))
        k = int(rng.integers(4, 10))
        ws = Workspace(problem)
        num, den = ws.gp[members[0]].copy(), ws.g[members[0]].copy()
        top = superset_bounds(problem, members, tuple(avail), room, k)["knapsack"]
        costs = ws.cost[avail]
        for threshold in np.linspace(problem.quality(members), top, 12)[1:-1]:
            node = ws.evaluate(num, den, avail, room, k, threshold)
            if len(node.families) < 2:
                continue  # cut before the combined bound
            pieces = node.families[1]
            stand_ins += sum(p.lo > 1 and p.const == 0.0 for p in pieces)
            for j in range(avail.size - 1):
                later = np.arange(j + 1, avail.size, dtype=np.intp)
                if costs[j] > room:
                    continue
                child, rest, left = (*members, int(avail[j])), tuple(avail[later]), room - costs[j]
                for p in pieces:  # each piece on its own sizes: the child and lo-1..hi-1 more
                    truth, _ = node_supersets(problem, child, rest, left, p.hi - 1, p.lo - 1)
                    bound = p.forced(j, later, costs, room)
                    assert node.q + bound >= truth - 1e-12, (threshold, j, p.lo, p.hi)
    assert stand_ins > 10


def test_ratio_bound_is_each_samples_best_subset_exactly():
    rng = np.random.default_rng(30)
    for gate in GATES:
        problem = synthetic_problem(rng, 9, 24, gate)
        members, avail = (0, 4), (1, 2, 3, 5, 6, 7, 8)
        _, best = node_supersets(problem, members, avail, 1e9, len(avail))
        ratio = superset_bounds(problem, members, avail, 1e9, len(avail))["ratio"]
        assert abs(ratio - best.mean()) <= 1e-12


def test_child_bounds_equal_each_childs_family_bound():
    rng = np.random.default_rng(40)
    problem = synthetic_problem(rng, 16, 32, "random")
    ws = Workspace(problem)
    members, avail = [3], np.array([e for e in range(16) if e != 3])
    num, den = ws.gp[members].sum(axis=0), ws.g[members].sum(axis=0)
    room = float(problem.cost_j.sum() / 3)
    node = ws.evaluate(num, den, avail, room, 9)
    assert len(node.families) >= 2  # knapsack, combined (and coupled): the vectorized path sees all
    order = rng.permutation(avail.size)
    costs = ws.cost[avail]
    every = child_bounds(node.families, order, costs, room, avail.size)
    for j in range(avail.size):
        later = order[j + 1 :]
        one = min(max(p.forced(order[j], later, costs, room) for p in f) for f in node.families)
        assert abs(every[j] - one) <= 1e-12


def test_child_qualities_over_many_samples_match_the_problems_quality():
    # blocked, vectorized sums over 20,000 samples stay far inside the 1e-12 tie margin
    rng = np.random.default_rng(50)
    problem = synthetic_problem(rng, 6, 20_000, "trained")
    ws = Workspace(problem)
    num, den = ws.gp[[1, 4]].sum(axis=0), ws.g[[1, 4]].sum(axis=0)
    joined = ws.joined_quality(np.array([0, 2, 3, 5]), num, den)
    for q, e in zip(joined, (0, 2, 3, 5), strict=True):
        assert abs(q - problem.quality((1, 4, e))) <= 1e-13

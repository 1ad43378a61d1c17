"""The coupled bound (one set of other joiners for every sample), a first pass resumed by the
node's own, and the search's threads: each against brute force or the one-thread search."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ganglion.runtime.selection import solve, solver
from ganglion.runtime.selection.bound_kernels import coupled_gain, signed_terms
from ganglion.runtime.selection.bounds import Workspace, knapsack_bound
from ganglion.runtime.selection.synthetic import GATES, binding_budgets, synthetic_problem


def gate_sums(ws: Workspace, avail: np.ndarray, counts: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the sums of the c smallest and the c largest gates of ``avail``, c < counts."""
    ranked = np.sort(ws.g[avail], axis=0)  # [n, M] ascending
    zero = np.zeros((1, ranked.shape[1]))
    small = np.vstack([zero, np.cumsum(ranked, axis=0)])[:counts]
    large = np.vstack([zero, np.cumsum(ranked[::-1], axis=0)])[:counts]
    return small, large


@pytest.mark.parametrize("gate", GATES)
def test_coupled_coefficients_bound_each_experts_term_over_the_range(gate):
    rng = np.random.default_rng(500 + GATES.index(gate))
    tighter = 0
    for _ in range(25):
        problem = synthetic_problem(rng, 10, 16, gate)
        ws = Workspace(problem)
        order = rng.permutation(10)
        members, avail = order[: int(rng.integers(1, 3))], np.sort(order[3:])
        n, m = avail.size, problem.n_samples
        num, den = ws.gp[members].sum(axis=0), ws.g[members].sum(axis=0)
        r = num / den
        lo = int(rng.integers(2, n + 1))
        hi = int(rng.integers(lo, n + 1))
        small, large = gate_sums(ws, avail, n + 1)
        spans = (small[lo - 1], small[min(lo, n - 1)], large[hi - 1], large[hi])
        gates = np.ascontiguousarray(ws.g[avail])
        t0 = rng.uniform(0.0, 2.0) * gates.mean(axis=0) * (hi - 1)  # any tangent point holds
        coupled = np.empty(n)
        rows = np.empty((n, m)), np.empty((n, m), np.float32)
        normal = (den >= 2.0**-500).astype(np.float64)
        node = (avail, den, r, normal, np.flatnonzero(normal == 0.0))
        node += ((gates, gates.astype(np.float32), gates.max(axis=1)),)
        scratch = np.empty((n, n)), np.empty(n)
        coupled_gain(ws.g, ws.gp, node, spans, t0, (lo, hi), np.arange(n), rows, *scratch, coupled)
        sized = np.empty(n)
        signed_terms(ws.g, ws.gp, avail, den, r, *spans[::2], large[hi], np.empty((n, m)), sized)
        for size in range(lo, hi + 1):
            for pick in itertools.combinations(range(n), size):
                joined = avail[list(pick)]
                total = den + ws.g[joined].sum(axis=0)
                for j, e in zip(pick, joined, strict=True):
                    term = float(np.mean((ws.gp[e] - ws.g[e] * r) / total))
                    assert term <= coupled[j] + 1e-12, (size, pick, j)
        tighter += bool((coupled < sized - 1e-9).any())
    assert tighter > 5  # it is not the sized bound in disguise


def best_in_range(problem, members, avail, room, lo, hi):
    """Brute force: max Q(S ∪ B) over B ⊆ avail with lo <= |B| <= hi within room."""
    best = -np.inf
    for size in range(lo, hi + 1):
        for extra in itertools.combinations(avail, size):
            if problem.cost_j[list(extra)].sum() <= room:
                best = max(best, problem.quality(tuple(members) + extra))
    return best


def test_a_resumed_first_pass_leaves_every_piece_bounding_its_sizes():
    rng = np.random.default_rng(600)
    resumed = 0
    for trial in range(24):
        problem = synthetic_problem(rng, 13, 16, GATES[trial % 3])
        ws = Workspace(problem)
        room = float(problem.cost_j.sum() * rng.uniform(0.4, 1.0))
        parent = ws.evaluate(ws.gp[0].copy(), ws.g[0].copy(), np.arange(2, 13), room, 11)
        members, avail = (0, 2), np.arange(3, 13)
        num, den = ws.gp[[0, 2]].sum(axis=0), ws.g[[0, 2]].sum(axis=0)
        q = problem.quality(members)
        for threshold in np.linspace(q, q + 0.3, 6)[1:]:
            first = ws.evaluate(num, den, avail, room, 10, threshold, parent.sums)
            if first.partial is None:
                continue
            resumed += 1
            own = ws.evaluate(num, den, avail, room, 10, threshold, resume=first)
            costs = ws.cost[avail]
            for family in own.families[1:]:
                sizes = sorted(s for p in family for s in range(p.lo, p.hi + 1))
                assert sizes == list(range(1, own.k + 1))  # every size once
                for p in family:
                    truth = best_in_range(problem, members, tuple(avail), room, p.lo, p.hi)
                    bound = q + p.const + knapsack_bound(p.coef, costs, room, p.hi, p.lo)
                    assert bound >= truth - 1e-12, (threshold, p.lo, p.hi)
    assert resumed > 10


def test_threads_give_the_same_answer_and_the_same_work(monkeypatch):
    submitted = []
    pool = solver._pool

    def counting_pool(threads):
        real = pool(threads)

        class Counting:
            def submit(self, *args):
                submitted.append(threads)
                return real.submit(*args)

        return Counting()

    monkeypatch.setattr(solver, "SERIAL_S", 0.0)  # threads from the first assessment on
    monkeypatch.setattr(solver, "PARALLEL_TASK_S", 0.0)
    monkeypatch.setattr(solver, "_pool", counting_pool)
    rng = np.random.default_rng(77)
    for gate in GATES:
        problem = synthetic_problem(rng, 26, 96, gate)
        energy, latency = binding_budgets(problem, rng)
        before = len(submitted)
        alone = solve(problem, energy, latency, threads=1)
        assert len(submitted) == before  # one thread: no pool
        assert solve(problem, energy, latency, threads=3) == alone  # subset, Q, work
    assert submitted  # the pool did assess nodes


@pytest.mark.parametrize("threads", [0, -1, 1.5, "2"])
def test_a_thread_count_that_is_not_a_whole_number_above_zero_is_refused(threads):
    problem = synthetic_problem(np.random.default_rng(1), 4, 8)
    with pytest.raises(ValueError, match="threads"):
        solve(problem, 10.0, 100.0, threads=threads)


def test_tiny_weights_do_not_underflow_the_coupled_bound():
    # found in review: a sample whose weights on S and A are zeros (read as 1e-200) but one
    # tiny allowed weight made the chord's denominator near·far subnormal; its slope lost its
    # bits, the bound fell below the best superset and the optimum's root was cut
    from ganglion.runtime.selection import brute_force
    from ganglion.runtime.selection.problem import Expert, SelectionProblem

    tiny = 1.727e-124  # at least 1e-150 of its row's largest: allowed
    experts = tuple(Expert(name, 1.0, 1.0, 0.0, 0.0) for name in "abcdefg")
    gate = np.array([[1.0, 0, 0, 0, 0, 0, tiny], [0.01, 0.01, 0.01, 1.0, 0.001, 0.001, 0.01]])
    p_true = np.array([[0.6, 0.55, 0.55, 0, 1, 1, 0], [0.96, 0.55, 0.55, 1, 0, 0, 0]])
    problem = SelectionProblem(experts, 0.0, 0.0, gate, p_true)
    best = brute_force(problem, 100.0, 1e9)
    for threads in (1, 2):
        found = solve(problem, 100.0, 1e9, threads=threads)
        assert found.experts == best.experts == (3, 4, 5)
        assert abs(found.quality - best.quality) <= 1e-12


def test_assessments_left_ahead_are_released(monkeypatch):
    # found in review: a node left early (the threshold rose) kept the bytes of the
    # assessments drawn ahead counted, and past HELD_BYTES the threads stopped being used
    monkeypatch.setattr(solver, "SERIAL_S", 0.0)
    monkeypatch.setattr(solver, "PARALLEL_TASK_S", -1.0)  # every assessment on the threads
    rng = np.random.default_rng(4)
    problem = synthetic_problem(rng, 20, 64, "random")
    energy, latency = binding_budgets(problem, rng)
    search = solver._Search(problem, energy, latency, threads=2)
    roots = (
        (t, ([t], search.ws.gp[t].copy(), search.ws.g[t].copy(), np.arange(t + 1, 20), None))
        for t in range(19)
    )
    ahead = search.ahead(roots)
    next(ahead)
    assert search.held > 0  # the roots after the first are being assessed ahead
    ahead.close()  # what a node left early does
    assert search.held == 0

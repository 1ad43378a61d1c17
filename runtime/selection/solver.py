"""Exact MoE² expert-subset selection: branch and bound, and a brute-force reference.

Problem (``problem.py`` pins the float64 arithmetic): maximize
``Q(S) = mean_i Σ_{e∈S} g_ie·p_ie / Σ_{e∈S} g_ie`` over non-empty ``S`` subject to
``E(S) <= B_E`` and ``L(S) <= B_L``. ``E`` and ``L`` never decrease when an expert joins; ``Q``
can (a weak expert with a large gate weight lowers it), so every pruning rule below is an upper
bound on ``Q`` over all supersets, never a monotonicity assumption.

Ties. ``Q*`` is the largest ``Q`` of a feasible subset. Every feasible ``S`` with
``Q(S) >= Q* - TIE_TOLERANCE`` (1e-12) ties — ``Q``'s last bits depend on summation order, which
the formulation leaves open, so mathematically equal qualities must compare equal — and the
winner has the smallest key ``(E(S), L(S), |S|, sorted index tuple)``, ``E`` and ``L`` compared as
the exact float64 values ``problem.py`` defines. ``brute_force`` applies the same rule.

Search. Experts are ranked by their quality alone (best first). Root ``j`` holds the subsets
whose best-ranked member is expert ``j``; a node is a feasible subset ``S`` (recorded) and the
experts ``A`` that may still join. An expert leaves ``A`` when it cannot join ``S`` alone within
the budgets (``E`` and ``L`` only grow, so no larger set can take it); ``k``, the number that may
still join, is the latency cap of ``S``'s slowest member (``(d_max + base) + per·|S| <= B_L``,
and ``d_max`` only grows) and the count of the cheapest experts of ``A`` that fit the energy
left. Children are ``S ∪ {a_j}`` with ``A_j = {a_(j+1), ...}`` in a fixed order (by the knapsack
coefficient ``α`` below, best first), so each subset is visited once; a node that survives its
bounds with at most ``LEAF_SIZE`` joinable experts evaluates all its subsets at once instead.
A node (or child) is cut when an upper bound on ``Q`` over all its supersets is below
``Q_max - TIE_TOLERANCE`` (less a 1e-12 margin for rounding; ``Q_max`` the best seen) —
nothing in it can tie the optimum — or is at most ``Q(S)`` less that margin (no superset
reaches ``S``: none can be the optimum, and where one ties, ``S`` ties too with a smaller key).
Not "at most ``Q(S)`` plus the margin": a superset beating ``S`` by less than 1e-12 can be the
optimum, and hiding it lowers the tie window below the one brute force applies.
The incumbent is seeded by three greedy ascents. A child is first bounded with its parent's
per-sample gate sums (``bounds.GateSums``, valid at every node below, looser), which spares
its own per-sample sort; a child that pass does not cut is bounded again with its own sums
before its children are ordered and pre-checked (a leaf enumerates either way): that pass
keeps the size ranges the first one bounded and takes up the sizes it left.

Threads. The children of a node (and the roots) are assessed — both passes — up to ``AHEAD``
ahead of the one the search descends into, on ``threads`` threads (the bound loops release
the GIL); each assessment sees the threshold and the bounds' tally as they were when it was
drawn, so the answer and the subsets evaluated are the same on any number of threads. The
threads join once a search has run ``SERIAL_S`` and while an assessment takes over
``PARALLEL_TASK_S`` of CPU on average: below that, handing the GIL over costs more than it
saves.

Bounds (``bounds.py``), with ``r_i = num_i/den_i`` the ratio of ``S`` and ``w_ie =
g_ie (p_ie - r_i)``, for ``T = S ∪ B``, ``B ⊆ A``:

- knapsack. ``Q(T) - Q(S) = mean_i Σ_{e∈B} w_ie / (den_i + Σ_B g)``. A positive term is at most
  ``w_ie/(den_i + g_ie)`` (the denominator holds ``g_ie``), a negative one at most ``w_ie`` over
  the largest the denominator gets: ``den_i`` plus ``g_ie`` and the ``k-1`` largest gates of
  ``A``, and at most ``den_i`` plus the ``k`` largest (exact per-sample sums of sorted gates). So
  ``Q(T) <= Q(S) + Σ_{e∈B} α_e``: modular, hence bounded by a knapsack over energy and size,
  itself bounded by points of its LP dual.
- sized. The same with ``|B|`` in a range ``[lo, hi]``: the other joiners' gates sum to at
  least the ``lo-1`` smallest and at most the ``hi-1`` largest gates of ``A`` (per sample),
  which tightens both signs, and the knapsack takes at least ``lo`` experts: with fewer
  positive coefficients than that, the ``lo``-th largest (negative) prices a member
  (``μ·lo + FK((α - μ)^+)``, a point of the LP dual of ``lo <= Σx``). Ranges start at
  [2, 3], [4, 7], [8, 11], [12, 15], [16, 23], [24, k] (``|B| = 1`` is exact: the children's
  qualities); a range whose bound (this, the coupled or the combined one) does not cut is
  split in halves, down to single sizes, so a node pays for the sizes that need it. The node
  bound is the largest over the ranges.
- coupled. The sized bound takes each sample's worst case of the other joiners' gates on its
  own; one ``B`` serves every sample. Expert ``e``'s term ``mean_i w_ie/(a_ie + t_i)``
  (``a_ie = den_i + g_ie``, ``t_i`` the other joiners' gates, within the range's sums) is per
  sample at most a line ``κ_ie - γ_ie t_i``: the chord of the convex ``w/(a + t)`` over the
  range of ``t_i`` where ``w >= 0``, a tangent of the concave one where ``w < 0``. Summed,
  the term is at most ``β_e - Σ_{f∈B-e} C_ef`` with ``C_ef = mean_i γ_ie g_if`` (a matrix
  product), so at most ``β_e`` less the least sum of ``lo-1`` to ``hi-1`` entries of row
  ``e``: a per-expert coefficient again, and each term's smaller of it and the sized one is a
  modular bound over the range. On random gates it is about half the sized bound at the sizes
  that decide a node.
- ratio. ``Q(T) <= mean_i u_i``, ``u_i = max_{B⊆A} (num_i + Σ_B g p)/(den_i + Σ_B g)``: each
  sample alone can do no better. The best ``B`` is every expert whose ``p`` beats ``u_i``
  (Dinkelbach), a prefix of ``A`` by ``p`` descending: adding experts in that order while ``p``
  beats the running ratio reaches ``u_i`` exactly. It implies ``mean_i max_{e∈S∪A} p_ie`` (a
  renormalized convex combination never exceeds the max). Computed when a first range's
  sized bound does not cut.
- combined. Per sample, the gain is at most the knapsack terms and also at most the anchored
  form ``(u_i - r_i) + K_i(T)/D_i^hi`` where ``K_i(T) = N_i(T) - u_i D_i(T) <= 0`` and
  ``D_i^hi >= D_i(T)`` (``den_i`` plus the ``hi`` largest gates of ``A``). ``min`` of the two
  pieces is at most any convex combination ``λ_i``; for fixed ``λ`` the result is modular in
  ``B`` again, so a knapsack (with the range's ``lo``) bounds it; ``λ`` comes from a few
  Frank-Wolfe steps on the LP ``max_x mean_i min(piece_1, piece_2)`` over ``lo <= Σx <= hi``.
  One LP per range whose sized bound does not cut, skipped below ``COMBINED_MIN`` joinable
  experts; the range keeps the smallest bound as its piece (modular over its sizes), and
  where that is the LP's, a second family holds the coupled coefficients for the children.
  The coupled bound and the LP go in the order of their share of cuts so far in the search,
  the second (and the ratio bound) only while it cuts at least 5 % of its tries (and at one
  chance in 32): the LP decides nodes under trained gates, the coupled bound under random
  ones.
  Once a single size cannot be cut the node survives: a child's first pass stops there, a
  node's own pass keeps the ranges it has not split yet as they are (their pieces pre-check
  the children).
- inherited sums. A node's ``c`` largest gates of ``A`` (per sample) sum to at least those of
  any subset of ``A``, its ``c`` smallest to at most; the bounds put the largest sums only
  under non-positive numerators and the smallest only under non-negative ones, so a node below
  (``A`` a subset, ``k`` smaller) bounded with its parent's sums gets a larger, valid bound.
- children. Each modular bound of a node, with the child's expert forced in and a knapsack over
  the experts after it, bounds that child's whole subtree before it is evaluated (one compiled
  call for all the children); once the cheapest of them (top ``k-1`` of ``α`` after it, energy
  ignored) fails, every later child fails too (smaller ``α``, fewer experts after it).

The bounds' per-sample loops are compiled with numba (``bounds.py``), imported when the first
search starts so that ``import ganglion.runtime.selection`` stays light. The first use in a
process loads the compiled code: about 0.3 s with numba's cache warm, about 10 s to compile into
an empty cache; ``bounds.warm_up()`` does it up front.

Feasibility is exact: a child's ``E`` is recomputed in index order before it is recorded, and
the energy slack used to drop experts from ``A`` only loosens bounds.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import math
import os
import queue
import time
from collections.abc import Iterator
from time import perf_counter, thread_time  # the thread policy's clocks (a limit's: monotonic)
from typing import TYPE_CHECKING

import numpy as np

from ganglion.models.mixture import TIE_TOLERANCE
from ganglion.runtime.selection.problem import SelectionProblem, budget_limit

if TYPE_CHECKING:
    from ganglion.runtime.selection import bounds

    # a node's joinable experts, energy room, evaluation and children (None for a leaf), or
    # None when it is cut
    Assessed = tuple[np.ndarray, float, bounds.NodeEval, tuple | None] | None

ROUNDING = 1e-12  # margin for float rounding in bounds and search-order quality sums
BRUTE_FORCE_MAX_EXPERTS = 20  # 2^20 subsets
LEAF_SIZE = 6  # a surviving node with this few joinable experts enumerates its subsets
GRACE = 0.1  # share of a time limit spent past it bounding the subsets left unvisited
AHEAD = 10  # children (or roots) assessed ahead of the one descended into
SERIAL_S = 0.1  # seconds a search runs on one thread before it uses the others
PARALLEL_TASK_S = 3e-4  # ... and only while assessments take this much CPU (GIL handovers)
HELD_BYTES = 256 * 2**20  # assessments done ahead on the threads hold at most this


def _held_bytes(joinable: int, samples: int) -> int:
    """At most the bytes an assessed node with ``joinable`` experts holds: its gate sums
    ``[2k + 1, M]`` and its pieces' coefficients."""
    return 8 * ((2 * joinable + 1) * samples + 3 * joinable * joinable)


@functools.cache
def _pool(threads: int) -> concurrent.futures.ThreadPoolExecutor:
    """The threads searches with ``threads`` threads share (the bound loops release the GIL)."""
    return concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="moe2-search")


def default_threads() -> int:
    """The search threads ``solve`` uses unless told: the CPUs this process may run on, at
    most four."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


@dataclasses.dataclass(frozen=True)
class Selection:
    """A chosen subset: sorted expert indices, its Q, E, L, and how many subsets the search
    evaluated (``2^N - 1`` for brute force). ``exact`` is False only when a search stopped at
    its time limit with subsets left that might beat or tie this one; the best of them has a
    quality of at most ``quality + gap`` (``gap`` 0.0 when exact)."""

    experts: tuple[int, ...]
    quality: float
    energy_j: float
    latency_ms: float
    evaluated: int  # subsets whose quality the search computed
    exact: bool = True
    gap: float = 0.0


class _OutOfTime(Exception):
    """The search passed its deadline. Unwinding, each frame adds an upper bound on the
    quality of the subsets it had still to visit (``bound``); ``covered`` tells whether a
    frame has bounded the node being entered when time ran out."""

    def __init__(self) -> None:
        super().__init__("time limit")
        self.bound = -math.inf
        self.covered = False


def tie_key(problem: SelectionProblem, subset: tuple[int, ...]) -> tuple:
    """The tie-break key among equal-quality subsets: (E, L, |S|, sorted index tuple)."""
    members = tuple(sorted(subset))
    return (problem.energy(members), problem.latency(members), len(members), members)


def latency_caps(problem: SelectionProblem, latency_budget: float) -> np.ndarray:
    """``[N]`` the largest ``|S|`` a subset whose slowest member is each expert may have."""
    sizes = np.arange(1, problem.n_experts + 1, dtype=np.float64)
    lat = (problem.delay_ms[:, None] + problem.base_ms) + problem.per_expert_ms * sizes[None, :]
    return (lat <= latency_budget).sum(axis=1)


class _Search:
    """The branch and bound over one problem and one pair of budgets (their limits: a cost
    fits when it is at most these)."""

    def __init__(
        self,
        problem: SelectionProblem,
        energy_budget: float,
        latency_budget: float,
        deadline: float = math.inf,
        grace: float = 0.0,
        threads: int = 1,
    ):
        from ganglion.runtime.selection import bounds  # numba: loaded when a search runs

        self.problem = problem
        self.ws = bounds.Workspace(problem)
        self.threads = threads
        self.parallel_from = perf_counter() + SERIAL_S  # a short search stays on one thread
        self.task_s = 0.0  # CPU seconds an assessment takes, on average lately
        self.spare: queue.SimpleQueue = queue.SimpleQueue()  # a workspace per running task
        self.spare.put(self.ws.sibling())
        self.workspaces = 1  # in spare or in use
        self.held = 0  # bytes of assessments done ahead on the threads, not yet consumed
        self.child_bounds = bounds.child_bounds
        self.energy_budget = energy_budget
        self.latency_budget = latency_budget
        self.slack = 1e-9 * (1.0 + energy_budget)  # only loosens bounds
        self.cost = [float(c) for c in problem.cost_j]
        self.delay = [float(d) for d in problem.delay_ms]
        self.caps = [int(c) for c in latency_caps(problem, latency_budget)]
        self.q_max = -math.inf
        self.kept: dict[tuple[int, ...], float] = {}
        self.evaluated = 0
        self.deadline = deadline  # time.monotonic() past which the search stops
        self.pending = -math.inf  # bound on the subsets left unvisited at the deadline
        self.grace = grace  # seconds past the deadline spent bounding what is left

    def energy(self, members: list[int]) -> float:
        """E(S) for a sorted member list: the exact index-order float64 sum."""
        total = 0.0
        for e in members:
            total += self.cost[e]
        return total

    def threshold(self) -> float:
        """Subsets whose quality bound is below this cannot tie the optimum."""
        return self.q_max - TIE_TOLERANCE - ROUNDING

    def record(self, members: tuple[int, ...], q: float) -> None:
        """Note a feasible subset's quality; keep it while it may tie the optimum."""
        self.evaluated += 1
        if q > self.q_max:
            self.q_max = q
            if len(self.kept) > 64:
                floor = self.threshold()
                self.kept = {s: v for s, v in self.kept.items() if v >= floor}
        if q >= self.threshold():
            self.kept[members] = q

    def joinable(self, members: list[int], avail: np.ndarray) -> tuple[np.ndarray, int, float]:
        """Experts of ``avail`` that fit beside ``members`` alone, how many more may join
        (latency cap), and the energy room left (with slack)."""
        slowest = max(self.delay[e] for e in members)
        lead = max(members, key=lambda e: self.delay[e])
        k = self.caps[lead] - len(members)
        room = self.energy_budget - self.energy(members) + self.slack
        if k <= 0 or avail.size == 0:
            return avail[:0], 0, room
        problem = self.problem
        lat = (np.maximum(problem.delay_ms[avail], slowest) + problem.base_ms) + (
            problem.per_expert_ms * (len(members) + 1)
        )
        keep = (lat <= self.latency_budget) & (self.ws.cost[avail] <= room)
        return avail[keep], k, room

    def greedy(self, start: int) -> None:
        """Greedy ascent from ``{start}``: add the feasible expert that raises Q most."""
        members = [start]
        num, den = self.ws.gp[start].copy(), self.ws.g[start].copy()
        q = float(np.mean(num / den))
        while True:
            others = np.array([e for e in range(self.problem.n_experts) if e not in members])
            avail, k, _ = self.joinable(members, others)
            if k <= 0 or avail.size == 0:
                return
            qs = self.ws.joined_quality(avail, num, den)
            best = None
            for j in np.argsort(-qs, kind="stable"):
                if qs[j] <= q:
                    break
                joined = sorted(members + [int(avail[j])])
                if self.energy(joined) <= self.energy_budget:
                    best = int(avail[j])
                    break
            if best is None:
                return
            members = sorted(members + [best])
            num, den = num + self.ws.gp[best], den + self.ws.g[best]
            q = float(np.mean(num / den))
            self.record(tuple(members), q)

    def run(self) -> None:
        """Seed with greedy ascents, then search each root (experts ranked by own quality)."""
        problem = self.problem
        roots = [
            t
            for t in range(problem.n_experts)
            if self.caps[t] >= 1 and self.cost[t] <= self.energy_budget
        ]
        zero = np.zeros(problem.n_samples)
        alone = self.ws.joined_quality(np.array(roots, dtype=np.intp), zero, zero)
        singles = dict(zip(roots, alone.tolist(), strict=True))
        roots.sort(key=lambda t: (-singles[t], t))
        for t in roots:
            self.record((t,), singles[t])
        for t in roots[:3]:
            self.greedy(t)
        tasks = (
            (j, ([t], self.ws.gp[t].copy(), self.ws.g[t].copy(), self._later(roots, j), None))
            for j, t in enumerate(roots)
        )
        for j, task, found in self.ahead(tasks):
            if time.monotonic() > self.deadline:
                self.pending = self._roots_bound(roots, j)
                return
            try:
                if found is not None:
                    self.expand(*task[:3], *found)
            except _OutOfTime as stop:
                self.pending = max(stop.bound, self._roots_bound(roots, j + stop.covered))
                return

    @staticmethod
    def _later(roots: list[int], j: int) -> np.ndarray:
        """The experts root ``j``'s subsets may add: the roots ranked after it."""
        return np.array(roots[j + 1 :], dtype=np.intp)

    def _roots_bound(self, roots: list[int], start: int) -> float:
        """An upper bound on ``Q`` over the subsets of roots ``start`` onwards other than the
        roots alone (recorded already), for the roots left at the deadline: each root's node
        bounds (up to the first that cuts) while the grace lasts, then, for all the rest at
        once, the mean over samples of the best ``p_true`` among their experts."""
        stop, floor = time.monotonic() + self.grace, self.threshold()
        bound = -math.inf
        for j in range(start, len(roots)):
            if time.monotonic() > stop:
                best_p = self.problem.p_true[:, roots[j:]].max(axis=1)
                return max(bound, float(best_p.mean()) + ROUNDING)
            t = roots[j]
            avail, k, room = self.joinable([t], self._later(roots, j))
            if avail.size:
                num, den = self.ws.gp[t].copy(), self.ws.g[t].copy()  # writable: the loaded loops
                node = self.ws.evaluate(num, den, avail, room, k, floor)
                bound = max(bound, node.bound)
        return bound

    def assess(
        self,
        ws: bounds.Workspace,
        task: tuple,
        threshold: float,
        tally: np.ndarray,
    ) -> Assessed:
        """Bound node ``task = (members, num, den, avail, inherited)`` on workspace ``ws``: its
        joinable experts, energy room, evaluation and children (``plan``; None for a leaf), or
        None when a bound cuts it (or nothing may join). ``inherited``: the parent's gate sums,
        tried first (cheaper, looser); a node they do not cut is bounded again with its own."""
        members, num, den, avail, inherited = task
        avail, k, room = self.joinable(members, avail)
        if avail.size == 0:
            return None
        node = ws.evaluate(num, den, avail, room, k, threshold, inherited, tally)
        if node.bound < threshold or node.bound <= node.q - ROUNDING:
            return None
        if avail.size <= LEAF_SIZE:  # a leaf enumerates either way
            return avail, room, node, None
        if not node.exact:
            node = ws.evaluate(num, den, avail, room, k, threshold, None, tally, node)
            if node.bound < threshold or node.bound <= node.q - ROUNDING:
                return None
        return avail, room, node, self.plan(avail, room, node, threshold)

    def plan(
        self, avail: np.ndarray, room: float, node: bounds.NodeEval, threshold: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """The children of a node that survives its bounds: their order (by the knapsack
        coefficient ``α``, best first), each one's cheapest subtree bound ``quick`` (its ``α``
        and the ``k-1`` best after it, energy ignored: once it fails, every later child fails,
        with a smaller ``α`` and fewer experts after it), how many pass it at ``threshold``, and
        their subtree bounds from the node's modular bounds (``child_bounds``)."""
        k, alpha = node.k, node.families[0][0].coef
        order = np.argsort(-alpha, kind="stable")
        head = np.cumsum(np.maximum(alpha[order], 0.0))
        ends = np.minimum(np.arange(k, k + order.size), order.size) - 1
        quick = node.q + alpha[order] + (head[ends] - head)
        below = np.flatnonzero(quick < threshold)
        count = int(below[0]) if below.size else order.size
        subtree = self.child_bounds(node.families, order, self.ws.cost[avail], room, count)
        return order, quick, subtree, count

    def ahead(self, tasks: Iterator[tuple[int, tuple]]) -> Iterator[tuple[int, tuple, Assessed]]:
        """``(j, task, assess(task))`` for each ``(j, task)`` of ``tasks``, in order, with up to
        ``AHEAD`` assessed ahead of the one being consumed, on the search's threads
        when it has more than one. A task sees the threshold and the bound tally as they were
        when it was drawn (a tally change is merged when its task is consumed): the same answers
        and subsets evaluated whatever the number of threads."""
        tally, waiting = self.ws.tally, collections.deque()

        def one(task: tuple, threshold: float, mine: np.ndarray) -> tuple:
            ws, before, start = self.spare.get(), mine.copy(), thread_time()
            try:
                found = self.assess(ws, task, threshold, mine)
                return found, mine - before, thread_time() - start
            finally:
                self.spare.put(ws)

        def draw() -> bool:
            item = next(tasks, None)
            if item is None:
                return False
            args = (item[1], self.threshold(), tally.copy())
            size = _held_bytes(item[1][3].size, self.problem.n_samples)
            if (
                self.threads > 1
                and self.task_s > PARALLEL_TASK_S
                and perf_counter() > self.parallel_from
                and self.held + size <= HELD_BYTES
            ):
                while self.workspaces < self.threads:  # the other threads' scratch, once
                    self.spare.put(self.ws.sibling())
                    self.workspaces += 1
                self.held += size
                waiting.append((item, _pool(self.threads).submit(one, *args), size))
            else:
                waiting.append((item, args, 0))  # assessed when consumed
            return True

        try:
            while len(waiting) < AHEAD and draw():
                pass
            while waiting:
                (j, task), job, size = waiting.popleft()
                found, change, took = one(*job) if isinstance(job, tuple) else job.result()
                self.held -= size
                tally += change
                self.task_s += 0.05 * (took - self.task_s)  # a running mean of CPU seconds
                yield j, task, found
                draw()
        finally:  # left early (the threshold rose, the time ran out): drop what is ahead
            for _, job, size in waiting:
                if not isinstance(job, tuple):
                    job.cancel()  # not started yet: never runs; running: its answer is dropped
                self.held -= size

    def expand(
        self,
        members: list[int],
        num: np.ndarray,
        den: np.ndarray,
        avail: np.ndarray,
        room: float,
        node: bounds.NodeEval,
        plan: tuple | None,
    ) -> None:
        """Visit the children of an assessed node ``(members, avail)`` (``plan``: its
        children, from ``plan``; None for a leaf): each child is ``members`` plus one expert of
        ``avail``, with the experts after it (in bound order) still available; children are
        assessed ahead (``ahead``) and descended into in order."""
        if time.monotonic() > self.deadline:
            raise _OutOfTime
        if plan is None:
            self.enumerate(members, num, den, avail, node.k)
            return
        k = node.k
        order, quick, subtree, count = plan

        def left_after(j: int) -> float:
            """A bound on the subsets of child ``j`` onwards (their subtrees unvisited)."""
            return float(np.minimum(quick[j:count], node.q + subtree[j:count]).max())

        def children() -> Iterator[tuple[int, tuple]]:
            """The children to visit, recorded as they are drawn."""
            for j in range(count):
                if quick[j] < self.threshold():
                    return  # this child and every later one
                e = int(avail[order[j]])
                joined = sorted(members + [e])
                if subtree[j] < self.threshold() - node.q or (
                    self.energy(joined) > self.energy_budget
                ):
                    continue
                self.record(tuple(joined), float(node.child_q[order[j]]))
                if k > 1 and j + 1 < order.size:
                    later = avail[order[j + 1 :]]
                    yield j, (joined, num + self.ws.gp[e], den + self.ws.g[e], later, node.sums)

        for j, task, found in self.ahead(children()):
            if quick[j] < self.threshold():
                return  # the threshold rose: this child and every later one
            if found is None or subtree[j] < self.threshold() - node.q:
                continue
            try:
                self.expand(*task[:3], *found)
            except _OutOfTime as stop:  # child j's subtree and the later children are left
                stop.bound = max(stop.bound, left_after(j))
                stop.covered = True
                raise

    def enumerate(
        self, members: list[int], num: np.ndarray, den: np.ndarray, avail: np.ndarray, k: int
    ) -> None:
        """Every subset ``members ∪ B``, ``B ⊆ avail`` non-empty with ``|B| <= k``, at once:
        cheaper than bounding when ``avail`` is this small."""
        bits = _subset_bits(avail.size, k)  # [K, n]
        cols = np.array(sorted(members + avail.tolist()))
        membership = np.zeros((bits.shape[0], cols.size), dtype=bool)
        membership[:, np.searchsorted(cols, members)] = True
        membership[:, np.searchsorted(cols, avail)] = bits
        energy, latency = subset_costs(self.problem, cols, membership)
        fits = np.flatnonzero((energy <= self.energy_budget) & (latency <= self.latency_budget))
        if fits.size == 0:
            return
        onehot = bits[fits].astype(np.float64)
        joined_num = num + onehot @ self.ws.gp[avail]  # [K', M]
        quality = (joined_num / (den + onehot @ self.ws.g[avail])).mean(axis=1)
        floor = self.threshold()
        self.evaluated += int((quality < floor).sum())  # counted, cannot tie: not kept
        for j in np.flatnonzero(quality >= floor):
            self.record(tuple(int(e) for e in cols[membership[fits[j]]]), float(quality[j]))

    def result(self) -> Selection | None:
        """The tie-broken best among kept subsets, with canonical (index-order) Q; not exact
        when subsets left at the deadline may tie or beat it."""
        if not self.kept:
            return None
        exact = {s: self.problem.quality(s) for s in self.kept}
        best = max(exact.values())
        tied = [s for s, v in exact.items() if v >= best - TIE_TOLERANCE]
        chosen = min(tied, key=lambda s: tie_key(self.problem, s))
        found = _selection(self.problem, chosen, exact[chosen], self.evaluated)
        if self.pending < self.threshold():
            return found  # nothing left could tie it: exact
        gap = max(0.0, self.pending - found.quality)
        return dataclasses.replace(found, exact=False, gap=gap)


@functools.cache
def _subset_bits(n: int, k: int) -> np.ndarray:
    """``[K, n]`` every non-empty subset of ``n`` positions with at most ``k`` members."""
    bits = ((np.arange(1, 2**n)[:, None] >> np.arange(n)) & 1).astype(bool)
    bits = bits[bits.sum(axis=1) <= k]
    bits.setflags(write=False)
    return bits


def _selection(problem: SelectionProblem, subset: tuple[int, ...], q: float, n: int) -> Selection:
    members = tuple(sorted(subset))
    return Selection(members, q, problem.energy(members), problem.latency(members), n)


def check_time_limit(time_limit_s: float | None) -> None:
    """ValueError unless ``time_limit_s`` is None (no limit) or a number of seconds > 0."""
    if time_limit_s is not None and not time_limit_s > 0:
        raise ValueError(f"time_limit_s: expected > 0 seconds, got {time_limit_s}")


def solve(
    problem: SelectionProblem,
    energy_budget: float,
    latency_budget: float,
    time_limit_s: float | None = None,
    threads: int | None = None,
) -> Selection | None:
    """The exact best subset under both budgets (tie-broken; a cost fits within
    ``budget_limit``), or None when none fits.

    ``threads``: how many threads bound nodes (None: ``default_threads()``); the answer and
    the subsets evaluated do not depend on it.

    ``time_limit_s`` bounds the search (None: none; the compiled bound loops are loaded before
    its clock starts, ``bounds.warm_up``). A search that reaches it returns the best
    subset found so far (always feasible: every fitting single expert is recorded first),
    marked ``exact=False`` with ``gap`` bounding how much better the optimum can be, unless
    the subsets it had left could not tie it anyway."""
    check_time_limit(time_limit_s)
    deadline, grace = math.inf, 0.0
    if time_limit_s is not None:
        from ganglion.runtime.selection.bounds import warm_up

        warm_up()  # the compiled loops first (seconds into an empty cache): the clock is the search
        deadline, grace = time.monotonic() + time_limit_s, GRACE * time_limit_s
    if threads is not None and not (isinstance(threads, int) and threads >= 1):
        raise ValueError(f"threads: expected a whole number >= 1, got {threads!r}")
    search = _Search(
        problem,
        budget_limit(energy_budget),
        budget_limit(latency_budget),
        deadline,
        grace,
        default_threads() if threads is None else threads,
    )
    search.run()
    return search.result()


def subset_costs(
    problem: SelectionProblem, cols: np.ndarray, membership: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """E ``[K]`` and L ``[K]`` of subsets given as membership ``[K, C]`` over experts ``cols``
    (increasing): E accumulated in index order exactly like ``SelectionProblem.energy``."""
    energy = np.zeros(membership.shape[0])
    for j, e in enumerate(cols):
        energy = energy + np.where(membership[:, j], problem.cost_j[e], 0.0)  # + 0.0 is exact
    slowest = np.where(membership, problem.delay_ms[cols], -np.inf).max(axis=1)
    latency = (slowest + problem.base_ms) + problem.per_expert_ms * membership.sum(axis=1)
    return energy, latency


def subset_table(problem: SelectionProblem, masks: np.ndarray):
    """For bitmasks ``[K]`` (uint64): membership ``[K, N]``, E ``[K]``, L ``[K]``, Q ``[K]``."""
    n = problem.n_experts
    bits = ((masks[:, None] >> np.arange(n, dtype=np.uint64)) & np.uint64(1)).astype(bool)
    energy, latency = subset_costs(problem, np.arange(n), bits)
    onehot = bits.astype(np.float64)
    num = onehot @ (problem.gate * problem.p_true).T  # [K, M]
    den = onehot @ problem.gate.T
    return bits, energy, latency, (num / den).mean(axis=1)


def brute_force(
    problem: SelectionProblem, energy_budget: float, latency_budget: float, chunk: int = 4096
) -> Selection | None:
    """Every non-empty subset (vectorized, N <= 20), same tie rule as ``solve``."""
    n = problem.n_experts
    if n > BRUTE_FORCE_MAX_EXPERTS:
        raise ValueError(f"brute force takes at most {BRUTE_FORCE_MAX_EXPERTS} experts, got {n}")
    found: list[tuple[float, tuple]] = []  # (Q, key) of subsets that may tie
    best = -math.inf
    energy_budget, latency_budget = budget_limit(energy_budget), budget_limit(latency_budget)
    for start in range(1, 2**n, chunk):
        masks = np.arange(start, min(start + chunk, 2**n), dtype=np.uint64)
        bits, energy, latency, quality = subset_table(problem, masks)
        ok = (energy <= energy_budget) & (latency <= latency_budget)
        if not ok.any():
            continue
        best = max(best, float(quality[ok].max()))
        for j in np.flatnonzero(ok & (quality >= best - TIE_TOLERANCE)):
            members = tuple(int(e) for e in np.flatnonzero(bits[j]))
            key = (float(energy[j]), float(latency[j]), len(members), members)
            found.append((float(quality[j]), key))
    if not found:
        return None
    tied = [key for q, key in found if q >= best - TIE_TOLERANCE]
    members = min(tied)[3]
    return _selection(problem, members, problem.quality(members), 2**n - 1)

"""Upper bounds on MoE² quality over every superset of a search node (derivations: solver.py).

A node is a feasible subset ``S`` (per-sample sums ``num_i = Σ_S g p``, ``den_i = Σ_S g``, ratio
``r_i = num_i/den_i``) and the experts ``A`` that may still join: at most ``k`` of them within
``room`` joules. Every bound here is ``>= Q(S ∪ B)`` for every such ``B ⊆ A``; the solver prunes
with them and the tests check it.

The per-sample work runs in numba loops (``bound_kernels.py``, ``cache=True``: compiled on
first use, then loaded from ``__pycache__``): a node costs a few passes over ``[|A|, M]``
instead of dozens of numpy calls. Sums over samples are taken in blocks (error ~``(block +
M/block)`` ulps, far inside the solver's 1e-12 margin), the only reordering LLVM may do.
Per sample, the gates of ``A`` in rank order come from orders sorted once per problem, so the
sums of the ``j`` largest (or smallest) gates of ``A`` are exact, not ``j·max`` estimates.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ganglion.runtime.selection.bound_kernels import (
    blocked_mean,
    cheapest_fit,
    child_quality,
    first_ranges,
    forced_bounds,
    knapsack,
    mean_ratio,
    ranked_sums,
    signed_terms,
    size_pieces,
)
from ganglion.runtime.selection.problem import SelectionProblem

COMBINED_MIN = 10  # below this many joinable experts the LP costs more than the nodes it saves


def knapsack_bound(
    values: np.ndarray, costs: np.ndarray, room: float, k: int, lo: int = 0
) -> float:
    """Upper bound on ``max Σ_B values`` subject to ``Σ_B costs <= room`` and ``lo <= |B| <=
    k`` (``-inf`` when no ``B`` has an allowed size).

    Points of the LP relaxation's dual ``μ·s + FK((values - μ)^+)`` (``FK``: the greedy
    fractional knapsack on energy alone; ``s = k`` for ``μ >= 0``, ``s = lo`` for ``μ <= 0``):
    ``μ = 0`` gives ``FK(values^+)``; ``μ`` = the (k+1)-th largest value gives at most the sum of
    the k largest; with fewer than ``lo`` positive values, ``μ`` = the ``lo``-th largest gives at
    most the sum of the ``lo`` largest. Any ``μ`` is a bound.
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    costs = np.ascontiguousarray(costs, dtype=np.float64)
    return float(knapsack(values, costs, float(room), int(lo), int(k)))


@dataclass(frozen=True)
class Linear:
    """A modular bound: ``Q(S ∪ B) <= Q(S) + const + Σ_{e∈B} coef_e`` for every ``B`` of the
    node with ``lo <= |B| <= hi``. Forcing one expert in bounds each child's subtree."""

    const: float
    coef: np.ndarray  # [n] per expert of the node's avail
    lo: int
    hi: int

    def forced(self, j: int, later: np.ndarray, costs: np.ndarray, room: float) -> float:
        """Bound over the node's subsets ``B`` that contain position ``j``, the rest from
        positions ``later``."""
        left = room - costs[j]
        rest = knapsack_bound(self.coef[later], costs[later], left, self.hi - 1, self.lo - 1)
        return self.const + float(self.coef[j]) + rest


def family_below(
    pieces: list[Linear], j: int, later: np.ndarray, costs: np.ndarray, room: float, floor: float
) -> bool:
    """Whether a family bounds child ``j``'s subtree below ``floor`` (a gain over Q(S)): every
    piece must (together they cover every size); stops at the first that does not."""
    return all(piece.forced(j, later, costs, room) < floor for piece in pieces)


def child_bounds(
    families: list[list[Linear]], order: np.ndarray, costs: np.ndarray, room: float, count: int
) -> np.ndarray:
    """``[count]``: for the child at ``order[j]`` with ``order[j+1:]`` after it, the gain over
    ``Q(S)`` no subset of its subtree exceeds: the smallest over families of the largest over
    a family's pieces (``family_below`` for every child at once)."""
    bound = np.full(count, np.inf)
    out = np.empty(count)
    order = np.ascontiguousarray(order, dtype=np.intp)
    for pieces in families:
        consts = np.array([piece.const for piece in pieces])
        coefs = np.stack([piece.coef for piece in pieces])
        los = np.array([piece.lo for piece in pieces], dtype=np.intp)
        his = np.array([piece.hi for piece in pieces], dtype=np.intp)
        forced_bounds(consts, coefs, los, his, order, costs, room, count, out)
        np.minimum(bound, out, out=bound)
    return bound


@dataclass(frozen=True)
class GateSums:
    """Per sample, sums of a node's largest and smallest gates: ``large[c]`` ``[M]`` the ``c``
    largest of its ``A`` for every ``c <= k``, ``small[c]`` the ``c`` smallest for every
    ``c < k``. They stay valid at any node below (``A`` a subset): there the ``c`` largest sum
    to at most these and the ``c`` smallest to at least these, which only loosens a bound."""

    large: np.ndarray  # [k + 1, M]
    small: np.ndarray  # [k, M]


@dataclass
class NodeEval:
    """One node's evaluation: its quality, the size cap after energy, each child's quality
    ``[n]``, the bounds computed (by name), families of modular bounds for the children, and
    the gate sums it used (``exact``: of its own ``A``, not inherited)."""

    q: float
    k: int
    child_q: np.ndarray
    bounds: dict[str, float] = field(default_factory=dict)
    families: list[list[Linear]] = field(default_factory=list)  # each covers |B| in [1, k]
    sums: GateSums | None = None
    exact: bool = True
    partial: tuple | None = None  # a first pass stopped short: (pieces, u, sizes left)

    @property
    def bound(self) -> float:
        """The tightest bound computed."""
        return min(self.bounds.values())


class Workspace:
    """Expert-major copies of the problem ``[N, M]``, per-sample rank orders ``[M, N]`` and
    scratch buffers shared by all nodes."""

    def __init__(self, problem: SelectionProblem) -> None:
        self.g = np.ascontiguousarray(problem.gate.T)  # [N, M]
        self.p = np.ascontiguousarray(problem.p_true.T)  # [N, M]
        self.gp = self.g * self.p  # [N, M]
        self.cost = np.ascontiguousarray(problem.cost_j, dtype=np.float64)  # [N]
        # per sample, experts (uint8: N <= 64) and their values in rank order, read in sequence
        by_gate = np.argsort(problem.gate, axis=1, kind="stable")[:, ::-1]  # gate descending
        self.gate_order = np.ascontiguousarray(by_gate, dtype=np.uint8)  # [M, N]
        self.gate_sorted = np.ascontiguousarray(np.take_along_axis(problem.gate, by_gate, 1))
        by_p = np.argsort(-problem.p_true, axis=1, kind="stable")  # p descending
        self.p_order = np.ascontiguousarray(by_p, dtype=np.uint8)  # [M, N]
        self.p_sorted = np.take_along_axis(problem.p_true, by_p, 1)  # [M, N]
        self.g_by_p = np.take_along_axis(problem.gate, by_p, 1)  # [M, N]
        n, m = self.g.shape
        self._terms = np.empty((n, m))  # the knapsack-form terms of one size range
        self._beta = np.empty((n, m))
        # the coupled bound's lines and the gates of A, in double and single precision
        self._rows = (np.empty((n, m)), np.empty((n, m), np.float32))
        self._gates = (np.empty((n, m)), np.empty((n, m), np.float32), np.empty(n))
        self._pair = np.empty((n, n))
        self.tally = np.zeros((3, 3))  # (tries, cuts, chances) of the bounds a search adapts
        self._member = np.zeros(n, dtype=bool)

    def sibling(self) -> Workspace:
        """A workspace sharing this one's problem arrays (read only) with scratch of its own,
        for a search thread."""
        other = copy.copy(self)
        for name in ("_terms", "_beta", "_pair", "tally", "_member"):
            setattr(other, name, np.zeros_like(getattr(self, name)))
        for name in ("_rows", "_gates"):
            setattr(other, name, tuple(np.zeros_like(a) for a in getattr(self, name)))
        return other

    def joined_quality(self, avail: np.ndarray, num: np.ndarray, den: np.ndarray) -> np.ndarray:
        """``[n]`` ``Q(S ∪ {e})`` for each ``e`` of ``avail``; ``num``, ``den`` are S's sums
        (zeros: each expert alone)."""
        out = np.empty(avail.size)
        child_quality(self.g, self.gp, np.ascontiguousarray(avail, dtype=np.intp), num, den, out)
        return out

    def evaluate(
        self,
        num: np.ndarray,
        den: np.ndarray,
        avail: np.ndarray,
        room: float,
        k: int,
        threshold: float = -math.inf,
        inherited: GateSums | None = None,
        tally: np.ndarray | None = None,
        resume: NodeEval | None = None,
    ) -> NodeEval:
        """Bounds for node ``(S, avail)``; ``num``, ``den`` ``[M]`` are S's per-sample sums.

        Cheapest first; returns as soon as one is below ``threshold`` (``-inf``: all of them).
        ``inherited``: the gate sums of a node whose ``A`` contains ``avail`` and whose ``k`` is
        at least this one's (the parent's), used instead of sorting ``avail``'s own: looser,
        still valid, and the sorting walk is most of a cut child's cost. ``tally``: how often
        the coupled bound, the LP and the ratio bound have cut so far (``[3, 3]``: tries, cuts,
        chances each; updated), which orders and skips them (default: this workspace's).
        ``resume``: this node's first pass (with ``inherited`` sums) that stopped at a size it
        could not cut: its pieces so far are kept (valid, if looser) and the sizes it left are
        bounded with the node's own sums.
        """
        n, m = avail.size, num.size
        avail = np.ascontiguousarray(avail, dtype=np.intp)
        self._member[:] = False
        self._member[avail] = True
        costs = self.cost[avail]
        r = num / den
        if resume is not None and resume.partial is None:
            resume = None  # the first pass bounded every size: start again with own sums
        if resume is None:
            child_q = np.empty(n)
            child_quality(self.g, self.gp, avail, num, den, child_q)
            k = min(k, cheapest_fit(costs, room))
            node = NodeEval(float(mean_ratio(num, den)), k, child_q)
        else:
            node = NodeEval(resume.q, resume.k, resume.child_q)
        q, k, child_q = node.q, node.k, node.child_q
        if inherited is None:
            large = self._ranked(True, k + 1, m)  # sums of the largest gates of A
        else:
            large, node.exact = inherited.large, False
        # knapsack: a_ie = w⁺/(den + g_ie) + w⁻/(den + g_ie + the k-1 largest other gates)
        alpha = np.empty(n)
        signed_terms(
            self.g,
            self.gp,
            avail,
            den,
            r,
            np.zeros(m),
            large[max(k - 1, 0)],
            large[k],
            self._terms,
            alpha,
        )
        node.families.append([Linear(0.0, alpha, 1, k)])
        node.bounds["knapsack"] = q + float(knapsack(alpha, costs, room, 0, k))
        if k <= 0 or node.bound < threshold:
            return node
        if inherited is None:
            small = self._ranked(False, k, m)  # sums of the smallest gates of A
            node.sums = GateSums(large, small)
        else:
            small = inherited.small
        first_pass = inherited is not None and threshold > -math.inf
        if resume is None:
            exact = Linear(0.0, child_q - q, 1, 1)  # |B| = 1
            done = [(exact, exact, float(child_q.max()) - q)]  # (piece, coupled piece, value)
            u = np.full(m, np.nan)  # each sample's best on its own, computed when first needed
            start = first_ranges(k)
        else:
            done, u, start = resume.partial
        out_coef, out_value = np.empty((k, n)), np.empty(k)
        out_lo, out_hi, out_const = np.empty(k, np.intp), np.empty(k, np.intp), np.empty(k)
        out_alt = np.empty((k, n))
        left = np.empty(2 * k + 8, np.intp), np.empty(2 * k + 8, np.intp)
        count, status = size_pieces(
            ((self.g, self.gp, self.p), (self.g_by_p, self.p_sorted, self.p_order, self._member)),
            (avail, num, den, r, u),
            (small, large),
            costs,
            room,
            k,
            COMBINED_MIN,
            q,
            threshold - q,
            first_pass,
            (self._terms, self._beta, np.empty(m), self._rows, self._pair, np.empty(n))
            + (self._gates, np.empty(m)),
            (out_lo, out_hi, out_const, out_coef, out_value, out_alt),
            self.tally if tally is None else tally,
            start,
            left,
        )
        if not np.isnan(u[0]):
            node.bounds["ratio"] = float(blocked_mean(u))
        if status < 0:  # the ratio bound cuts: no pieces needed
            return node
        for j in range(count):
            lo_j, hi_j = int(out_lo[j]), int(out_hi[j])
            piece = Linear(float(out_const[j]), out_coef[j], lo_j, hi_j)
            done.append((piece, Linear(0.0, out_alt[j], lo_j, hi_j), float(out_value[j])))
        if status > 0:  # a first pass that cannot cut this node: the rest is its own pass's
            node.partial = (done, u, (left[0][:status].copy(), left[1][:status].copy()))
            return node
        node.bounds["combined"] = q + max(0.0, *(value for _, _, value in done))  # B = ∅ too
        node.families.append([piece for piece, _, _ in done])
        if any(piece.const != 0.0 for piece, _, _ in done):  # an LP piece: the coupled ones too
            node.families.append([coupled for _, coupled, _ in done])
        return node

    def _ranked(self, largest: bool, counts: int, m: int) -> np.ndarray:
        """``[counts, M]``: per sample, the sums of the ``c`` largest (or smallest) gates of the
        node's experts for every ``c < counts``."""
        wanted = np.arange(counts, dtype=np.intp)
        out = np.empty((counts, m))
        ranked_sums(self.gate_sorted, self.gate_order, self._member, wanted, largest, out)
        return out


@functools.cache
def warm_up() -> float:
    """Load every compiled loop above (compiling it into numba's cache when that is empty) by
    bounding one small node, once per process; returns the seconds that took. A process that
    must not pay this in its first ``solve`` (a server's first request, a timed command) calls
    it at start-up; a time-limited ``solve`` calls it before its clock starts."""
    from ganglion.runtime.selection.synthetic import synthetic_problem

    start = time.perf_counter()
    problem = synthetic_problem(np.random.default_rng(0), COMBINED_MIN + 2, 4)
    ws = Workspace(problem)
    avail = np.arange(1, problem.n_experts)
    room = float(problem.cost_j.sum())
    node = ws.evaluate(ws.gp[0].copy(), ws.g[0].copy(), avail, room, avail.size)
    order = np.argsort(-node.child_q)
    child_bounds(node.families, order, ws.cost[avail], room, avail.size)
    return time.perf_counter() - start


def superset_bounds(
    problem: SelectionProblem,
    members: tuple[int, ...],
    avail: tuple[int, ...],
    energy_room: float,
    k: int,
) -> dict[str, float]:
    """Every bound, by name, on Q over ``S ∪ B`` for ``B ⊆ avail`` with ``|B| <= k`` and
    ``Σ_B c <= energy_room``, exactly as the search computes it at node ``(members, avail)``."""
    ws = Workspace(problem)
    num = ws.gp[list(members)].sum(axis=0)
    den = ws.g[list(members)].sum(axis=0)
    return ws.evaluate(num, den, np.array(avail, dtype=np.intp), energy_room, k).bounds

"""Upper bounds on MoE² quality over every superset of a search node (derivations: solver.py).

A node is a feasible subset ``S`` (per-sample sums ``num_i = Σ_S g p``, ``den_i = Σ_S g``, ratio
``r_i = num_i/den_i``) and the experts ``A`` that may still join: at most ``k`` of them within
``room`` joules. Every bound here is ``>= Q(S ∪ B)`` for every such ``B ⊆ A``; the solver prunes
with them and the tests check it. Arrays are expert-major (``[n, M]``) and reuse one workspace:
on arrays this small numpy's time goes to allocating, not to arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ganglion.runtime.selection.problem import SelectionProblem

FW_STEPS = 6  # Frank-Wolfe steps for the combined bound (each step's bound is valid)
COMBINED_MIN = 10  # below this many joinable experts the LP costs more than the nodes it saves
_GAMMAS = np.array([0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0])  # its line-search grid


def knapsack_bound(values: np.ndarray, costs: np.ndarray, room: float, k: int) -> float:
    """Upper bound on ``max Σ_B values`` subject to ``Σ_B costs <= room`` and ``|B| <= k``.

    Points of the LP relaxation's dual ``min_{μ >= 0} μ·k + FK((values - μ)^+)`` (``FK``: the
    greedy fractional knapsack on energy alone): ``μ = 0`` gives ``FK(values^+)``; ``μ`` = the
    (k+1)-th largest value gives at most the sum of the k largest. Any ``μ`` is a bound.
    """
    keep = values > 0
    v, c = values[keep], costs[keep]
    n = v.size
    if n == 0 or k <= 0:
        return 0.0
    if k >= n and c.sum() <= room:
        return float(v.sum())  # everything positive fits: that is the maximum itself
    best = _fractional_knapsack(v, c, room)
    if k < n:
        top = np.argpartition(v, n - k - 1)  # top[n - k - 1] is the (k+1)-th largest
        mu = float(v[top[n - k - 1]])
        head = top[n - k :]
        best = min(best, mu * k + _fractional_knapsack(v[head] - mu, c[head], room))
    return best


def _fractional_knapsack(v: np.ndarray, c: np.ndarray, room: float) -> float:
    """``max Σ v_e x_e`` over ``x ∈ [0, 1]^n`` with ``Σ c_e x_e <= room`` (v >= 0, c >= 0)."""
    ratio = np.divide(v, c, out=np.full(v.size, np.inf), where=c > 0)  # free items first
    order = np.argsort(-ratio, kind="stable")
    vs, cs = v[order], c[order]
    spent = np.cumsum(cs)
    whole = int(np.searchsorted(spent, room, side="right"))
    total = float(vs[:whole].sum())
    if whole < vs.size:  # cs[whole] > 0 here: a free item never exceeds the room
        left = room - (float(spent[whole - 1]) if whole else 0.0)
        total += float(vs[whole]) * max(left, 0.0) / float(cs[whole])
    return total


def _fractional_point(values: np.ndarray, costs: np.ndarray, room: float, k: int) -> np.ndarray:
    """A good point of ``{x ∈ [0,1]^n : c·x <= room, Σx <= k}`` for ``values`` (greedy)."""
    x = np.zeros_like(values)
    ratio = np.divide(values, costs, out=np.full(values.size, np.inf), where=costs > 0)
    order = np.argsort(-ratio, kind="stable")
    left, count = room, 0.0
    for e in order:
        if values[e] <= 0 or count >= k or left <= 0:
            break
        share = min(1.0, k - count, left / costs[e] if costs[e] > 0 else 1.0)
        x[e] = share
        left -= share * costs[e]
        count += share
    return x


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
        rest = knapsack_bound(self.coef[later], costs[later], room - costs[j], self.hi - 1)
        return self.const + float(self.coef[j]) + rest


def family_below(
    pieces: list[Linear], j: int, later: np.ndarray, costs: np.ndarray, room: float, floor: float
) -> bool:
    """Whether a family bounds child ``j``'s subtree below ``floor`` (a gain over Q(S)): every
    piece must (together they cover every size); stops at the first that does not."""
    return all(piece.forced(j, later, costs, room) < floor for piece in pieces)


@dataclass
class NodeEval:
    """One node's evaluation: its quality, the size cap after energy, each child's quality
    ``[n]``, the bounds computed (by name) and families of modular bounds for the children."""

    q: float
    k: int
    child_q: np.ndarray
    bounds: dict[str, float] = field(default_factory=dict)
    families: list[list[Linear]] = field(default_factory=list)  # each covers |B| in [1, k]

    @property
    def bound(self) -> float:
        """The tightest bound computed."""
        return min(self.bounds.values())


class Workspace:
    """Expert-major copies of the problem and scratch buffers ``[N, M]`` shared by all nodes."""

    def __init__(self, problem: SelectionProblem) -> None:
        self.g = np.ascontiguousarray(problem.gate.T)  # [N, M]
        self.p = np.ascontiguousarray(problem.p_true.T)  # [N, M]
        self.gp = self.g * self.p  # [N, M]
        self.cost = np.asarray(problem.cost_j)  # [N]
        self._buf = [np.empty(self.g.shape) for _ in range(9)]
        self._mask = np.empty(self.g.shape, dtype=bool)

    def evaluate(
        self,
        num: np.ndarray,
        den: np.ndarray,
        avail: np.ndarray,
        room: float,
        k: int,
        threshold: float = -math.inf,
    ) -> NodeEval:
        """Bounds for node ``(S, avail)``; ``num``, ``den`` ``[M]`` are S's per-sample sums.

        Cheapest first; returns as soon as one is below ``threshold`` (``-inf``: all of them).
        """
        n = avail.size
        g, gp, p, d, w, a, t, t1, t2 = (buf[:n] for buf in self._buf)
        np.take(self.g, avail, axis=0, out=g)
        np.take(self.gp, avail, axis=0, out=gp)
        np.take(self.p, avail, axis=0, out=p)
        r = num / den  # [M]
        np.add(g, den, out=d)  # den_i + g_ie
        np.add(gp, num, out=a)
        np.divide(a, d, out=a)  # R_ie: the ratio of S ∪ {e}
        costs = self.cost[avail]
        node = NodeEval(float(r.mean()), min(k, _fits(costs, room)), a.mean(axis=1))
        q, k = node.q, node.k
        np.multiply(g, r, out=w)
        np.subtract(gp, w, out=w)  # w_ie = g_ie (p_ie - r_i)
        gmax, gsum = g.max(axis=0), g.sum(axis=0)
        # knapsack: a_ie = w⁺/(den + g_ie) + w⁻/(den + g_ie + the k-1 largest other gates)
        alpha = _signed_gain(w, d, 0.0, np.minimum(max(k - 1, 0) * gmax, gsum), a, t1, t2)
        node.families.append([Linear(0.0, alpha, 1, k)])
        node.bounds["knapsack"] = q + knapsack_bound(alpha, costs, room, k)
        if k <= 0 or node.bound < threshold:
            return node
        sized, gmin = -math.inf, g.min(axis=0)
        for lo, hi in _size_buckets(k):  # |B| in [lo, hi]: tighter denominators
            small = (lo - 1) * gmin  # the other joiners' gates sum to at least this
            big = np.minimum((hi - 1) * gmax, gsum)  # ... and to at most this
            gain = _signed_gain(w, d, small, big, t, t1, t2)
            sized = max(sized, q + knapsack_bound(gain, costs, room, hi))
            if sized >= threshold > -math.inf:
                break  # cannot prune; skip the other buckets
        else:
            node.bounds["sized"] = sized
            if node.bound < threshold:
                return node
        u = self._best_ratio(num, den, r, g, gp, p, t)  # [M] each sample's best on its own
        node.bounds["ratio"] = float(u.mean())
        if node.bound < threshold or (n < COMBINED_MIN and threshold > -math.inf):
            return node
        gs = t1  # [n, M] each sample's gates over A, ascending
        np.copyto(gs, g)
        gs.sort(axis=0)
        pieces = [Linear(0.0, node.child_q - q, 1, 1)]  # exact for |B| = 1
        combined = max(q, float(node.child_q.max()))  # B = ∅ or one expert
        for lo, hi in _size_buckets(k)[:0:-1]:  # largest sizes first: usually the binding ones
            small = gs[: lo - 1].sum(axis=0)  # the other lo-1 joiners' gates, at least
            big = gs[n - hi + 1 :].sum(axis=0)  # ... and at most
            _signed_gain(w, d, small, big, a, t, t2)
            # anchored: Q(T) - Q(S) <= mean_i (u_i - r_i) + K_i(T)/D_i^hi with
            # K_i(T) = N_i(T) - u_i D_i(T) <= 0 and D_i^hi >= D_i(T) for |B| <= hi
            d_hi = den + gs[n - hi :].sum(axis=0)  # [M]
            offset = (u - r) + (num - u * den) / d_hi  # [M]
            np.subtract(p, u, out=t)
            np.multiply(t, g, out=t)
            np.divide(t, d_hi, out=t)  # β_ie = g_ie (p_ie - u_i) / D_i^hi
            value, lin = _two_piece_lp(offset, t, a, costs, room, hi, threshold - q)
            pieces.append(Linear(lin.const, lin.coef, lo, hi))
            combined = max(combined, q + value)  # all buckets even if it cannot prune:
        node.bounds["combined"] = combined  # the children's pre-checks use every piece
        node.families.append(pieces)
        return node

    def _best_ratio(self, num, den, r, g, gp, p, tmp) -> np.ndarray:
        """``[M]`` per sample ``max_{B⊆A} (num + Σ_B g p)/(den + Σ_B g)`` (Dinkelbach: the
        best ``B`` is every expert whose ``p`` beats the ratio; iterate to the fixed point)."""
        lam = r.copy()
        mask = self._mask[: g.shape[0]]
        for _ in range(g.shape[0] + 2):
            np.greater(p, lam, out=mask)
            np.multiply(gp, mask, out=tmp)
            top = num + tmp.sum(axis=0)
            np.multiply(g, mask, out=tmp)
            new = top / (den + tmp.sum(axis=0))
            if not (new > lam).any():
                return lam
            np.maximum(lam, new, out=lam)
        return np.maximum(lam, p.max(axis=0))  # not settled (rounding): the plain max bound


def _signed_gain(w, d, small, big, out, t1, t2) -> np.ndarray:
    """``[n]`` mean_i of ``w⁺/(d + small_i) + w⁻/(d + big_i)``; the terms stay in ``out``."""
    np.maximum(w, 0.0, out=t1)
    np.add(d, small, out=t2)
    np.divide(t1, t2, out=t1)
    np.minimum(w, 0.0, out=out)
    np.add(d, big, out=t2)
    np.divide(out, t2, out=out)
    np.add(out, t1, out=out)
    return out.mean(axis=1)


def _two_piece_lp(c1, a1, a2, costs, room, k, stop) -> tuple[float, Linear]:
    """Bound on ``max_B mean_i min(c1_i + Σ_B a1_ie, Σ_B a2_ie)`` over the node's ``B``.

    LP dual: for any ``λ ∈ [0,1]^M``, ``mean_i (1-λ_i) c1_i + Σ_B mean_i ((1-λ_i) a1_ie +
    λ_i a2_ie)`` bounds it for every ``B`` (a modular bound, returned for the children), so its
    knapsack bound does too. λ marks the smaller piece at the primal point of a few
    Frank-Wolfe steps with a line search on a grid. Stops once below ``stop``.
    """
    m = c1.size
    x = np.zeros(a1.shape[0])
    s1, s2 = c1.copy(), np.zeros(m)  # [M] the two pieces at x
    best, lin = math.inf, Linear(0.0, np.zeros(0), 1, k)
    previous = math.inf
    for step in range(FW_STEPS):
        lam = (s2 < s1).astype(np.float64)  # [M]
        nu = (a1 @ (1.0 - lam) + a2 @ lam) / m  # [n]
        const = float(((1.0 - lam) * c1).mean())
        value = const + knapsack_bound(nu, costs, room, k)
        if value < best:
            best, lin = value, Linear(const, nu, 1, k)
        if best < stop or (step >= 2 and best - stop > (FW_STEPS - step) * (previous - best)):
            break  # pruned, or too slow to get there
        previous = best
        dx = _fractional_point(nu, costs, room, k) - x
        d1, d2 = dx @ a1, dx @ a2
        along = np.minimum(s1 + _GAMMAS[:, None] * d1, s2 + _GAMMAS[:, None] * d2).mean(axis=1)
        gamma = float(_GAMMAS[int(np.argmax(along))]) or 1.0 / (step + 2)
        x += gamma * dx
        s1 += gamma * d1
        s2 += gamma * d2
    return best, lin


def _fits(costs: np.ndarray, room: float) -> int:
    """How many of the cheapest experts fit in ``room`` together (a cap on ``|B|``)."""
    return int(np.searchsorted(np.cumsum(np.sort(costs)), room, side="right"))


def _size_buckets(k: int) -> list[tuple[int, int]]:
    """Ranges of ``|B|`` bounded separately: [1, 1], [2, 3], [4, k] (clipped to k)."""
    return [(lo, min(hi, k)) for lo, hi in ((1, 1), (2, 3), (4, 64)) if lo <= k]


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

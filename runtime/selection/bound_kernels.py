"""The compiled per-sample loops of the MoE² bounds (``bounds.py``), numba with ``cache=True``:
compiled on first use, then loaded from ``__pycache__``. Sums over samples are taken in blocks
of ``_BLOCK``; ``_SUMS`` lets LLVM reorder those sums, and nothing else."""

from __future__ import annotations

import numba
import numpy as np

from ganglion.kernels import numba_cache  # noqa: F401 - before the first cache=True

# compile-time constants of the loops below (numba freezes globals when it compiles)
FW_STEPS = 6  # Frank-Wolfe steps for the combined bound (each step's bound is valid)
_GAMMAS = np.array([0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0])  # its line-search grid
_BLOCK = 256  # samples per partial sum
_SUMS = {"reassoc", "nsz"}  # fastmath flags: reorder sums (vectorized), nothing else
# error_model="numpy": no ZeroDivisionError checks (they stop vectorization); every
# denominator here is a positive gate sum, and zero costs are tested before dividing

# ---- compiled loops ------------------------------------------------------------------------


@numba.njit(inline="always")
def block_size(b, blocks, m):  # noqa: ANN001, ANN202
    """Samples in block ``b`` of ``blocks``: ``_BLOCK``, the last one the rest of ``m``."""
    return _BLOCK if b < blocks - 1 else m - b * _BLOCK


@numba.njit(cache=True, error_model="numpy")
def fractional_knapsack(v, c, room):  # noqa: ANN001, ANN202
    """``max Σ v_e x_e`` over ``x ∈ [0, 1]^n`` with ``Σ c_e x_e <= room`` (v >= 0, c >= 0):
    greedy by value per joule, free items first."""
    ratio = np.empty(v.size)
    for e in range(v.size):
        ratio[e] = v[e] / c[e] if c[e] > 0 else np.inf
    total, left = 0.0, room
    for e in np.argsort(-ratio):
        if c[e] <= 0:
            total += v[e]
        elif c[e] <= left:
            total += v[e]
            left -= c[e]
        else:
            total += v[e] * max(left, 0.0) / c[e]
            break
    return total


@numba.njit(cache=True, error_model="numpy")
def knapsack(values, costs, room, k):  # noqa: ANN001, ANN202
    """``knapsack_bound``'s arithmetic (see there)."""
    n = 0
    for e in range(values.size):
        n += values[e] > 0
    if n == 0 or k <= 0:
        return 0.0
    v, c = np.empty(n), np.empty(n)
    j, spent = 0, 0.0
    for e in range(values.size):
        if values[e] > 0:
            v[j], c[j] = values[e], costs[e]
            spent += costs[e]
            j += 1
    if k >= n and spent <= room:
        return v.sum()  # everything positive fits: that is the maximum itself
    best = fractional_knapsack(v, c, room)
    if k < n:
        rank = np.argsort(v)
        mu = v[rank[n - k - 1]]  # the (k+1)-th largest
        head = rank[n - k :]
        best = min(best, mu * k + fractional_knapsack(v[head] - mu, c[head], room))
    return best


@numba.njit(cache=True, error_model="numpy")
def fractional_point(values, costs, room, k):  # noqa: ANN001, ANN202
    """A good point of ``{x ∈ [0,1]^n : c·x <= room, Σx <= k}`` for ``values`` (greedy)."""
    x = np.zeros(values.size)
    ratio = np.empty(values.size)
    for e in range(values.size):
        ratio[e] = values[e] / costs[e] if costs[e] > 0 else np.inf
    left, count = room, 0.0
    for e in np.argsort(-ratio):
        if values[e] <= 0 or count >= k or left <= 0:
            break
        share = min(1.0, k - count, left / costs[e] if costs[e] > 0 else 1.0)
        x[e] = share
        left -= share * costs[e]
        count += share
    return x


@numba.njit(cache=True, error_model="numpy", fastmath=_SUMS)
def mean_ratio(num, den):  # noqa: ANN001, ANN202
    """``mean_i num_i / den_i``."""
    m, total = num.size, 0.0
    blocks = (m + _BLOCK - 1) // _BLOCK
    for b in range(blocks):
        base, part = b * _BLOCK, 0.0
        for t in range(block_size(b, blocks, m)):
            i = base + t
            part += num[i] / den[i]
        total += part
    return total / m


@numba.njit(cache=True, error_model="numpy", fastmath=_SUMS)
def child_quality(g, gp, avail, num, den, out):  # noqa: ANN001, ANN202
    """``out[j] = Q(S ∪ {a_j}) = mean_i (gp + num_i) / (g + den_i)`` for each ``a_j`` of A."""
    m = num.size
    blocks = (m + _BLOCK - 1) // _BLOCK
    for j in range(avail.size):
        ge, gpe = g[avail[j]], gp[avail[j]]
        total = 0.0
        for b in range(blocks):
            base, part = b * _BLOCK, 0.0
            for t in range(block_size(b, blocks, m)):
                i = base + t
                part += (gpe[i] + num[i]) / (ge[i] + den[i])
            total += part
        out[j] = total / m


@numba.njit(cache=True, error_model="numpy")
def ranked_sums(values, order, member, counts, forward, out):  # noqa: ANN001, ANN202
    """``out[c, i]``: the sum of the first ``counts[c]`` gates of sample ``i`` among the experts
    with ``member[e]``, walking ``values[i]`` (sample ``i``'s gates sorted, ``order[i]`` their
    experts) from the front (``forward``) or the back (``counts`` ascending; past the last
    member, all). Sequential reads; the only branch taken is at a wanted count."""
    last, n = counts.size - 1, order.shape[1]
    for i in range(values.shape[0]):
        row, rank = values[i], order[i]
        total, seen, c = 0.0, 0, 0
        while c <= last and counts[c] <= 0:
            out[c, i] = 0.0
            c += 1
        if c <= last:
            want = counts[c]
            for step in range(n):
                idx = step if forward else n - 1 - step
                inside = member[rank[idx]]
                total += row[idx] if inside else 0.0
                seen += inside
                if seen == want:
                    while c <= last and counts[c] == want:
                        out[c, i] = total
                        c += 1
                    if c > last:
                        break
                    want = counts[c]
        while c <= last:
            out[c, i] = total
            c += 1


@numba.njit(inline="always")
def signed_term(w, low, high1, high2):  # noqa: ANN001, ANN202
    """``w⁺/low + w⁻/min(high1, high2)`` with one division."""
    return w / (low if w >= 0.0 else (high1 if high1 < high2 else high2))


@numba.njit(cache=True, error_model="numpy", fastmath=_SUMS)
def signed_gains(g, gp, avail, den, r, small, big1, big, out):  # noqa: ANN001, ANN202
    """``out[j] = mean_i w⁺/(den + g + small) + w⁻/(den + min(g + big1, big))`` for each
    ``a_j`` of A, with ``w = g (p - r)``: ``signed_terms`` averaged over samples."""
    m = den.size
    blocks = (m + _BLOCK - 1) // _BLOCK
    for j in range(avail.size):
        ge, gpe = g[avail[j]], gp[avail[j]]
        total = 0.0
        for b in range(blocks):
            base, part = b * _BLOCK, 0.0
            for t in range(block_size(b, blocks, m)):
                i = base + t
                w = gpe[i] - ge[i] * r[i]
                low, high = den[i] + ge[i] + small[i], den[i] + ge[i] + big1[i]
                part += signed_term(w, low, high, den[i] + big[i])
            total += part
        out[j] = total / m


@numba.njit(cache=True, error_model="numpy")
def best_ratio(g_sorted, p_sorted, order, member, num, den, out):  # noqa: ANN001, ANN202
    """``out[i] = max_{B⊆A} (num_i + Σ_B g p)/(den_i + Σ_B g)``: walk A by ``p`` descending
    (``p_sorted[i]``, ``g_sorted[i]`` sample ``i``'s values in that order, ``order[i]`` their
    experts) while ``p`` beats the ratio; the best ``B`` is that prefix (Dinkelbach). ``p >
    top/bottom`` is tested as ``p·bottom > top`` (``bottom > 0``): no division in the chain."""
    for i in range(g_sorted.shape[0]):
        top, bottom = num[i], den[i]
        row_g, row_p, rank = g_sorted[i], p_sorted[i], order[i]
        for idx in range(rank.size):
            if member[rank[idx]]:
                if row_p[idx] * bottom <= top:
                    break
                top += row_g[idx] * row_p[idx]
                bottom += row_g[idx]
        out[i] = top / bottom


@numba.njit(cache=True, error_model="numpy", fastmath=_SUMS)
def two_piece_lp(c1, a1, a2, costs, room, k, stop, nu_out):  # noqa: ANN001, ANN202
    """Bound on ``max_B mean_i min(c1_i + Σ_B a1_ie, Σ_B a2_ie)`` over the node's ``B``.

    LP dual: for any ``λ ∈ [0,1]^M``, ``mean_i (1-λ_i) c1_i + Σ_B mean_i ((1-λ_i) a1_ie +
    λ_i a2_ie)`` bounds it for every ``B`` (a modular bound, for the children too), so its
    knapsack bound does too. λ marks the smaller piece at the primal point of a few Frank-Wolfe
    steps with a line search on a grid. Stops once below ``stop``. Returns (bound, const) and
    leaves the best λ's coefficients in ``nu_out``.
    """
    n, m = a1.shape
    blocks = (m + _BLOCK - 1) // _BLOCK
    x, s1, s2 = np.zeros(n), c1.copy(), np.zeros(m)
    nu, d1, d2, lam = np.empty(n), np.empty(m), np.empty(m), np.empty(m)
    along = np.empty(_GAMMAS.size)
    best, best_const, previous = np.inf, 0.0, np.inf
    for step in range(FW_STEPS):
        const = 0.0
        for i in range(m):
            lam[i] = 1.0 if s2[i] < s1[i] else 0.0  # the smaller piece
            const += (1.0 - lam[i]) * c1[i]
        const /= m
        for e in range(n):
            row1, row2, total = a1[e], a2[e], 0.0
            for b in range(blocks):
                base, part = b * _BLOCK, 0.0
                for t in range(block_size(b, blocks, m)):
                    i = base + t
                    part += row1[i] + lam[i] * (row2[i] - row1[i])  # a blend: vectorizes
                total += part
            nu[e] = total / m
        value = const + knapsack(nu, costs, room, k)
        if value < best:
            best, best_const = value, const
            nu_out[:] = nu
        if best < stop or (step >= 2 and best - stop > (FW_STEPS - step) * (previous - best)):
            break  # pruned, or too slow to get there
        previous = best
        dx = fractional_point(nu, costs, room, k) - x
        d1[:] = 0.0
        d2[:] = 0.0
        for e in range(n):
            if dx[e] != 0.0:
                for i in range(m):
                    d1[i] += dx[e] * a1[e, i]
                    d2[i] += dx[e] * a2[e, i]
        for t in range(_GAMMAS.size):
            total = 0.0
            for i in range(m):
                one, two = s1[i] + _GAMMAS[t] * d1[i], s2[i] + _GAMMAS[t] * d2[i]
                total += one if one < two else two
            along[t] = total / m
        gamma = _GAMMAS[np.argmax(along)]
        if gamma == 0.0:
            gamma = 1.0 / (step + 2)
        x += gamma * dx
        s1 += gamma * d1
        s2 += gamma * d2
    return best, best_const


@numba.njit(cache=True, error_model="numpy")
def combined_range(
    g,
    gp,
    p,
    avail,
    num,
    den,
    r,
    u,
    low,
    high1,
    high2,
    costs,
    room,
    hi,
    stop,
    terms,
    beta,
    offset,
    coef,
):  # noqa: ANN001, ANN202
    """One size range ``[lo, hi]`` of the combined bound: the knapsack-form ``terms`` (the
    per-sample terms ``signed_gains`` averages, ``low``/``high1``/``high2`` the range's gate
    sums), the anchored piece
    ``offset_i + Σ_B beta_ie`` with ``D_i^hi = den_i + high2_i`` (``u_i - r_i + (num_i - u_i
    den_i)/D_i^hi`` and ``g_ie (p_ie - u_i)/D_i^hi``), then ``two_piece_lp`` on them. Returns
    its (bound, const) and leaves the coefficients in ``coef``."""
    m = den.size
    inv = np.empty(m)  # 1 / D_i^hi
    for i in range(m):
        inv[i] = 1.0 / (den[i] + high2[i])
        offset[i] = (u[i] - r[i]) + (num[i] - u[i] * den[i]) * inv[i]
    for j in range(avail.size):
        ge, gpe, pe, row, anchored = g[avail[j]], gp[avail[j]], p[avail[j]], terms[j], beta[j]
        for i in range(m):
            w = gpe[i] - ge[i] * r[i]
            lo_d, hi_d = den[i] + ge[i] + low[i], den[i] + ge[i] + high1[i]
            row[i] = signed_term(w, lo_d, hi_d, den[i] + high2[i])
            anchored[i] = (pe[i] - u[i]) * ge[i] * inv[i]
    return two_piece_lp(offset, beta, terms, costs, room, hi, stop, coef)


@numba.njit(cache=True, error_model="numpy")
def forced_bounds(consts, coefs, his, order, costs, room, count, out):  # noqa: ANN001, ANN202
    """For ``j < count``: ``out[j]`` = the largest over pieces ``p`` of ``consts[p] +
    coefs[p, order[j]] +`` the knapsack bound of ``coefs[p]`` over ``order[j+1:]`` within
    ``room - costs[order[j]]`` and ``his[p] - 1`` experts."""
    n = order.size
    for j in range(count):
        pos, rest = order[j], n - j - 1
        v, c = np.empty(rest), np.empty(rest)
        for t in range(rest):
            c[t] = costs[order[j + 1 + t]]
        best = -np.inf
        for piece in range(consts.size):
            for t in range(rest):
                v[t] = coefs[piece, order[j + 1 + t]]
            left = room - costs[pos]
            value = consts[piece] + coefs[piece, pos] + knapsack(v, c, left, his[piece] - 1)
            best = max(best, value)
        out[j] = best


# ---- bounds --------------------------------------------------------------------------------

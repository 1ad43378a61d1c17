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
_RANGES = ((2, 3), (4, 7), (8, 15), (16, 31), (32, 64))  # |B| ranges bounded first (1: exact)
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
def cheapest_fit(costs, room):  # noqa: ANN001, ANN202
    """How many of the cheapest experts fit in ``room`` together (their costs summed from the
    cheapest up, in that order): a cap on ``|B|``."""
    total, count = 0.0, 0
    for c in np.sort(costs):
        total += c
        if total > room:
            break
        count += 1
    return count


@numba.njit(cache=True, error_model="numpy")
def knapsack(values, costs, room, lo, hi):  # noqa: ANN001, ANN202
    """``knapsack_bound``'s arithmetic (see there)."""
    if hi < lo or values.size < lo:
        return -np.inf  # no subset has an allowed size
    n = 0
    for e in range(values.size):
        n += values[e] > 0
    if n < lo:  # fewer gains than members required: the lo-th largest value prices a member
        rank = np.argsort(values)
        mu = values[rank[values.size - lo]]  # the lo-th largest (<= 0)
        top = rank[values.size - lo + 1 :]
        return mu * lo + fractional_knapsack(values[top] - mu, costs[top], room)
    if n == 0 or hi <= 0:
        return 0.0
    v, c = np.empty(n), np.empty(n)
    j, spent = 0, 0.0
    for e in range(values.size):
        if values[e] > 0:
            v[j], c[j] = values[e], costs[e]
            spent += costs[e]
            j += 1
    if hi >= n and spent <= room:
        return v.sum()  # everything positive fits: that is the maximum itself
    best = fractional_knapsack(v, c, room)
    if hi < n:
        rank = np.argsort(v)
        mu = v[rank[n - hi - 1]]  # the (hi+1)-th largest
        head = rank[n - hi :]
        best = min(best, mu * hi + fractional_knapsack(v[head] - mu, c[head], room))
    return best


@numba.njit(cache=True, error_model="numpy")
def fractional_point(values, costs, room, lo, hi):  # noqa: ANN001, ANN202
    """A good point of ``{x ∈ [0,1]^n : c·x <= room, lo <= Σx <= hi}`` for ``values``
    (greedy by value per joule, then filled up to ``lo`` by value)."""
    x = np.zeros(values.size)
    ratio = np.empty(values.size)
    for e in range(values.size):
        ratio[e] = values[e] / costs[e] if costs[e] > 0 else np.inf
    left, count = room, 0.0
    for e in np.argsort(-ratio):
        if values[e] <= 0 or count >= hi or left <= 0:
            break
        share = min(1.0, hi - count, left / costs[e] if costs[e] > 0 else 1.0)
        x[e] = share
        left -= share * costs[e]
        count += share
    if count < lo:
        for e in np.argsort(-values):
            share = min(1.0 - x[e], lo - count)
            x[e] += share
            count += share
            if count >= lo:
                break
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
def blocked_mean(values):  # noqa: ANN001, ANN202
    """``mean_i values_i`` in blocks (as ``mean_ratio``)."""
    m, total = values.size, 0.0
    blocks = (m + _BLOCK - 1) // _BLOCK
    for b in range(blocks):
        base, part = b * _BLOCK, 0.0
        for t in range(block_size(b, blocks, m)):
            part += values[base + t]
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
def two_piece_lp(c1, a1, a2, costs, room, lo, k, stop, nu_out):  # noqa: ANN001, ANN202
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
        value = const + knapsack(nu, costs, room, lo, k)
        if value < best:
            best, best_const = value, const
            nu_out[:] = nu
        if best < stop or (step >= 2 and best - stop > (FW_STEPS - step) * (previous - best)):
            break  # pruned, or too slow to get there
        previous = best
        dx = fractional_point(nu, costs, room, lo, k) - x
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


@numba.njit(cache=True, error_model="numpy", fastmath=_SUMS)
def signed_terms(g, gp, avail, den, r, low, high1, high2, terms, gain):  # noqa: ANN001, ANN202
    """The knapsack-form terms of one size range, per expert and sample (``terms[j, i]`` =
    ``w⁺/(den + g + low) + w⁻/(den + min(g + high1, high2))``, ``w = g (p - r)``), and their
    means over samples in ``gain[j]`` (each expert's knapsack coefficient)."""
    m = den.size
    blocks = (m + _BLOCK - 1) // _BLOCK
    for j in range(avail.size):
        ge, gpe, row = g[avail[j]], gp[avail[j]], terms[j]
        total = 0.0
        for b in range(blocks):
            base, part = b * _BLOCK, 0.0
            for t in range(block_size(b, blocks, m)):
                i = base + t
                w = gpe[i] - ge[i] * r[i]
                lo_d, hi_d = den[i] + ge[i] + low[i], den[i] + ge[i] + high1[i]
                row[i] = signed_term(w, lo_d, hi_d, den[i] + high2[i])
                part += row[i]
            total += part
        gain[j] = total / m


@numba.njit(cache=True, error_model="numpy")
def anchored_piece(g, p, avail, num, den, r, u, high2, beta, offset):  # noqa: ANN001, ANN202
    """The anchored piece of a size range: ``offset_i + Σ_B beta_ie`` with ``D_i^hi = den_i +
    high2_i``: ``u_i - r_i + (num_i - u_i den_i)/D_i^hi`` and ``g_ie (p_ie - u_i)/D_i^hi``."""
    m = den.size
    inv = np.empty(m)  # 1 / D_i^hi
    for i in range(m):
        inv[i] = 1.0 / (den[i] + high2[i])
        offset[i] = (u[i] - r[i]) + (num[i] - u[i] * den[i]) * inv[i]
    for j in range(avail.size):
        ge, pe, row = g[avail[j]], p[avail[j]], beta[j]
        for i in range(m):
            row[i] = (pe[i] - u[i]) * ge[i] * inv[i]


@numba.njit(cache=True, error_model="numpy")
def size_pieces(arrays, node, sums, costs, room, k, lp_min, q, stop, first_pass, scratch, out):  # noqa: ANN001, ANN202
    """Modular bounds (pieces) on the gain over ``Q(S)`` for every ``|B|`` in ``[2, k]``.

    The ranges ``_RANGES`` first, largest sizes first. A range gets the sized bound (the
    knapsack bound of its ``signed_terms``' means with ``lo <= |B| <= hi``); if that does not
    get below ``stop``, the ratio bound (``u``, each sample's best alone, computed once: ``u[0]``
    NaN until then; status 2, stopping, when its mean less ``q`` is below ``stop``) and, with
    ``lp_min`` joinable experts or more, the combined LP over the same terms and the anchored
    piece (the smaller of the two bounds is the range's piece). A range still at or above
    ``stop`` is split in two halves (each bounds its sizes more tightly: more gate sums are
    forced in, ``lo`` more members' terms count), down to single sizes; once a single size
    fails, the node survives: ``first_pass`` stops there (status 1), otherwise the ranges left
    keep their pieces unsplit (they serve the children's pre-checks). Pieces are written to
    ``out`` (at most ``k - 1``: they partition ``[2, k]``). Returns (pieces, status).

    ``arrays``: the workspace's ``(g, gp, p)`` and, for the ratio bound, ``(g_by_p, p_sorted,
    p_order, member)``; ``node``: ``(avail, num, den, r, u)``; ``sums``: ``(small, large)``;
    ``scratch``: ``(terms, beta, offset)``; ``out``: ``(lo, hi, const, coef, value)``."""
    (g, gp, p), (g_by_p, p_sorted, p_order, member) = arrays
    avail, num, den, r, u = node
    small, large = sums
    terms, beta, offset = scratch
    out_lo, out_hi, out_const, out_coef, out_value = out
    n = avail.size
    stack_lo, stack_hi = np.empty(2 * k + 8, np.intp), np.empty(2 * k + 8, np.intp)
    top = 0
    for lo0, hi0 in _RANGES:
        if lo0 <= k:
            stack_lo[top], stack_hi[top] = lo0, min(hi0, k)
            top += 1
    gain, coef = np.empty(n), np.empty(n)
    pieces = 0
    failed = False
    while top > 0:
        top -= 1
        lo, hi = stack_lo[top], stack_hi[top]
        signed_terms(g, gp, avail, den, r, small[lo - 1], large[hi - 1], large[hi], terms, gain)
        value, const = knapsack(gain, costs, room, lo, hi), 0.0
        coef[:] = gain
        if value >= stop and np.isnan(u[0]):
            best_ratio(g_by_p, p_sorted, p_order, member, num, den, u)
            if blocked_mean(u) - q < stop:
                return pieces, 2
        if value >= stop and n >= lp_min:
            anchored_piece(g, p, avail, num, den, r, u, large[hi], beta, offset)
            lp, lp_const = two_piece_lp(
                offset, beta[:n], terms[:n], costs, room, lo, hi, stop, out_coef[pieces]
            )
            if lp < value:
                value, const = lp, lp_const
                coef[:] = out_coef[pieces]
        if value >= stop and lo < hi and not failed:  # split: each half bounds more tightly
            mid = (lo + hi) // 2
            stack_lo[top], stack_hi[top] = lo, mid
            stack_lo[top + 1], stack_hi[top + 1] = mid + 1, hi  # popped first
            top += 2
            continue
        out_lo[pieces], out_hi[pieces], out_const[pieces] = lo, hi, const
        out_coef[pieces] = coef
        out_value[pieces] = value
        pieces += 1
        if value >= stop:
            if first_pass:
                return pieces, 1
            failed = True  # the node survives: its other sizes keep their coarser pieces
    return pieces, 0


@numba.njit(cache=True, error_model="numpy")
def forced_bounds(consts, coefs, los, his, order, costs, room, count, out):  # noqa: ANN001, ANN202
    """For ``j < count``: ``out[j]`` = the largest over pieces ``p`` of ``consts[p] +
    coefs[p, order[j]] +`` the knapsack bound of ``coefs[p]`` over ``order[j+1:]`` within
    ``room - costs[order[j]]`` and ``los[p] - 1`` to ``his[p] - 1`` experts."""
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
            rest_bound = knapsack(v, c, left, los[piece] - 1, his[piece] - 1)
            value = consts[piece] + coefs[piece, pos] + rest_bound
            best = max(best, value)
        out[j] = best


# ---- bounds --------------------------------------------------------------------------------

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
_RANGES = ((2, 3), (4, 7), (8, 11), (12, 15), (16, 23), (24, 64))  # first |B| ranges (1: exact)
_SUMS = {"reassoc", "nsz"}  # fastmath flags: reorder sums (vectorized), nothing else
# coupled_gain's single-precision product: unit roundoff, a bound on what underflow adds per
# term (inputs at most _SINGLE_MAX, gates at most 1; so also where a library set the CPU to
# flush subnormals to zero: 2^40 · 2^-126 < 2^-80), and the largest row sum it takes
_SINGLE_REL = 2.0**-24
_SINGLE_ABS = 2.0**-80
_SINGLE_MAX = 2.0**40
_TINY_DEN = 2.0**-500  # below it, line_terms divides twice (a product of two could underflow)
# error_model="numpy": no ZeroDivisionError checks (they stop vectorization); every
# denominator here is a positive gate sum, and zero costs are tested before dividing


def first_ranges(k: int) -> tuple[np.ndarray, np.ndarray]:
    """The size ranges ``size_pieces`` starts from at a node that takes up to ``k`` more
    experts (``_RANGES`` within ``k``), as a stack: ``(lo, hi)`` arrays, the last range bounded
    first."""
    ranges = [(lo, min(hi, k)) for lo, hi in _RANGES if lo <= k]
    return np.array([lo for lo, _ in ranges], np.intp), np.array([hi for _, hi in ranges], np.intp)


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


@numba.njit(cache=True, nogil=True, error_model="numpy")
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
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


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_SUMS)
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


@numba.njit(inline="always", error_model="numpy", fastmath=_SUMS)
def line_terms(g, gp, e, node, spans, t0, row):  # noqa: ANN001, ANN202
    """``coupled_gain``'s lines for expert ``e``: ``row[i] = γ_ie / M`` (in ``row``'s precision)
    and the return value ``β_e = mean_i κ_ie``. ``node = (den, r, normal, tiny)``: the samples
    in ``tiny`` (``den_i < _TINY_DEN``; ``normal`` is 0 there, 1 elsewhere) divide twice,
    ``(w / near) / far``, after the loop: there the product ``near · far`` could fall below the
    smallest normal number and lose its bits (a sample whose weights on S and A are all but
    zero); elsewhere it is at least ``2^-1000``."""
    den, r, normal, tiny = node
    low1, low2, high1, high2 = spans
    m = den.size
    blocks = (m + _BLOCK - 1) // _BLOCK
    per_sample = 1.0 / m
    ge, gpe = g[e], gp[e]
    total = 0.0
    for b in range(blocks):
        base, part = b * _BLOCK, 0.0
        for t in range(block_size(b, blocks, m)):
            i = base + t
            w, a = gpe[i] - ge[i] * r[i], den[i] + ge[i]
            least = max(low1[i], low2[i] - ge[i])
            most = min(high1[i], high2[i] - ge[i])
            near, far, d = a + least, a + most, a + t0[i]
            product = near * far if w >= 0.0 else d * d
            if tiny.size:  # 0 where tiny (a loop-invariant test: the loop is compiled twice)
                w, product = w * normal[i], product + (1.0 - normal[i])
            scale = w / product
            part += scale * (near + most if w >= 0.0 else d + t0[i])
            row[i] = scale * per_sample
        total += part
    for i in tiny:
        w, a = gpe[i] - ge[i] * r[i], den[i] + ge[i]
        least = max(low1[i], low2[i] - ge[i])
        most = min(high1[i], high2[i] - ge[i])
        near, far, d = a + least, a + most, a + t0[i]
        scale = (w / near) / far if w >= 0.0 else (w / d) / d  # |w / near| <= 1: no overflow
        total += scale * (near + most if w >= 0.0 else d + t0[i])
        row[i] = scale * per_sample
    return total * per_sample


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath=_SUMS)
def coupled_gain(g, gp, node, spans, t0, size, picked, rows, pair, row_sums, out):  # noqa: ANN001, ANN202
    """Per-expert bounds on each term of the gain over the sizes ``[lo, hi]`` (``size``),
    coupled across samples through the other joiners' gates: ``out[j]`` for the expert at
    position ``picked[j]`` of ``A``.

    Expert ``e``'s term is ``mean_i w_ie/(a_ie + t_i)``, ``a_ie = den_i + g_ie`` and ``t_i`` the
    other joiners' gates, ``low_ie <= t_i <= high_ie`` (``spans = (low1, low2, high1, high2)``:
    ``low_ie = max(low1_i, low2_i - g_ie)``, the ``lo - 1`` smallest gates of ``A`` or the
    ``lo`` smallest less ``e``'s own; ``high_ie`` likewise from above). Per sample the term is
    at most a line in ``t_i``: the chord over ``[low_ie, high_ie]`` where ``w >= 0`` (``w/(a +
    t)`` is convex), the tangent at ``t0_i`` where ``w < 0`` (concave there; any ``t0_i`` is
    valid). The line is ``κ_ie - γ_ie t_i``, so the term is at most ``β_e - Σ_{f∈F} C_ef``, ``F``
    the other joiners, ``β_e = mean_i κ_ie`` and ``C_ef = mean_i γ_ie g_if`` (one matrix
    product for every ``e`` picked), and so at most ``β_e`` less the smallest sum of ``lo - 1``
    to ``hi - 1`` entries of row ``e`` off the diagonal. One ``F`` for every sample: what the
    per-sample worst case of the sized bound cannot see (measured on the hardest benchmark
    instance: about half the sized bound at the sizes that decide a node). ``node``:
    ``(avail, den, r, normal, tiny, gates)`` (``normal``, ``tiny``: see ``line_terms``), ``gates``
    ``node_gates``' A's gate rows; ``rows``, ``pair``:
    scratch ``[|A|, M]``, ``[|A|, |A|]``."""
    avail, den, r, normal, tiny, (gates, gates32, gate_max) = node
    rows, rows32 = rows
    lo, hi = size
    n, m, count = avail.size, den.size, picked.size
    largest = 0.0
    for j in range(count):  # single precision first: the product is twice as fast
        out[j] = line_terms(g, gp, avail[picked[j]], (den, r, normal, tiny), spans, t0, rows32[j])
        size_j = 0.0
        for i in range(m):
            size_j += abs(rows32[j, i])
        largest = max(largest, size_j)
        row_sums[j] = size_j  # Σ_i |γ_ie| of the single-precision row
    if largest <= _SINGLE_MAX:
        pair[:count, :n] = np.dot(rows32[:count], gates32[:n].T)
        # the product's worst rounding (inputs, products, sums), less: a lower bound on C
        rel = _SINGLE_REL * (m + 4) / (1.0 - _SINGLE_REL * (m + 4))
        for j in range(count):
            for f in range(n):
                pair[j, f] -= rel * row_sums[j] * (1.0 + 1e-6) * gate_max[f] + _SINGLE_ABS * m
    else:  # too large for single precision: double
        for j in range(count):
            line_terms(g, gp, avail[picked[j]], (den, r, normal, tiny), spans, t0, rows[j])
        pair[:count, :n] = np.dot(rows[:count], gates[:n].T)
    most = min(hi - 1, n - 1)  # other joiners: lo - 1 to hi - 1 of the n - 1 others
    ranked = np.empty(max(most, 1))
    for j in range(count):
        row = pair[j]
        kept = 0  # ranked[:kept]: the smallest entries so far, ascending
        for f in range(n):
            v = row[f]
            if f == picked[j] or (kept == most and v >= ranked[kept - 1]):
                continue
            c = kept if kept < most else most - 1
            while c > 0 and ranked[c - 1] > v:
                ranked[c] = ranked[c - 1]
                c -= 1
            ranked[c] = v
            kept = min(kept + 1, most)
        taken = 0.0
        for c in range(most):
            if c >= lo - 1 and ranked[c] >= 0.0:
                break
            taken += ranked[c]
        out[j] -= taken


@numba.njit(cache=True, nogil=True, error_model="numpy")
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
def node_gates(g, avail, gates, mean_gate):  # noqa: ANN001, ANN202
    """``gates = (rows, rows32, row_max)``: the gate rows of ``A``'s experts in double and
    single precision and each one's largest gate (for the product's rounding bound), and
    ``mean_gate`` their mean per sample."""
    rows, rows32, row_max = gates
    n = avail.size
    mean_gate[:] = 0.0
    for j in range(n):
        rows[j] = g[avail[j]]
        rows32[j] = rows[j]
        row_max[j] = rows[j].max() * (1.0 + 1e-7)  # at least the single-precision gate too
        mean_gate += rows[j]
    mean_gate /= n


@numba.njit(cache=True, nogil=True, error_model="numpy")
def couple(g, gp, node, spans, mean_gate, size, costs, room, stop, first_pass, scratch, gain):  # noqa: ANN001, ANN202
    """Lower ``gain`` (per-expert bounds over the sizes ``[lo, hi]``) to ``coupled_gain``'s
    where smaller, the experts with the largest ``gain`` first, in batches of ``hi + 4``;
    returns the knapsack bound of the result. Stops once that is below ``stop``, and in a first
    pass also once no expert left has a ``gain`` among the ``hi`` largest (the batches done
    decide the bound). The tangent point is ``mean_gate`` times ``hi - 1`` (measured: tighter
    than the range's middle size, 2026-12-05). ``scratch``: ``(rows, pair, coupled)``."""
    rows, pair, coupled = scratch
    sizes = np.empty(gain.size)
    lo, hi = size
    n = gain.size
    t0 = mean_gate * (hi - 1.0)
    order = np.argsort(-gain)
    done, batch = 0, max(hi + 4, 8)
    value = np.inf
    while done < n:
        picked = order[done : done + batch]
        coupled_gain(
            g, gp, node, spans, t0, size, picked, rows, pair, sizes, coupled[: picked.size]
        )
        for j in range(picked.size):
            gain[picked[j]] = min(gain[picked[j]], coupled[j])
        done += picked.size
        value = knapsack(gain, costs, room, lo, hi)
        if value < stop or done >= n:
            break
        if first_pass and gain[order[done]] <= np.sort(gain)[max(n - hi, 0)]:
            break
    return value


# the bounds whose use a search adapts: a tally row each of (tries, cuts, chances)
_COUPLED, _LP, _RATIO = 0, 1, 2


@numba.njit(inline="always")
def success(tally, check):  # noqa: ANN001, ANN202
    """The share of ``check``'s tries that cut, a prior of 1/2 first."""
    return (tally[check, 1] + 1.0) / (tally[check, 0] + 2.0)


@numba.njit(inline="always")
def worth(tally, check, floor):  # noqa: ANN001, ANN202
    """Whether to try ``check`` at this chance: while it cuts at least ``floor`` of its
    tries, and at one chance in 32 regardless (its share is kept up to date)."""
    tally[check, 2] += 1
    return success(tally, check) >= floor or tally[check, 2] % 32 == 0


@numba.njit(inline="always")
def tried(tally, check, cut):  # noqa: ANN001, ANN202
    """Count one try of ``check`` and whether it cut."""
    tally[check, 0] += 1
    tally[check, 1] += cut


@numba.njit(cache=True, nogil=True, error_model="numpy")
def size_pieces(  # noqa: ANN201
    arrays,
    node,
    sums,
    costs,
    room,
    k,
    lp_min,
    q,
    stop,
    first_pass,
    scratch,
    out,
    tally,
    start,
    left,  # noqa: ANN001
):
    """Modular bounds (pieces) on the gain over ``Q(S)`` for every ``|B|`` in ``[2, k]``.

    The size ranges ``start`` (a stack: the last is bounded first). A range gets the sized
    bound (the knapsack bound of its ``signed_terms``' means with ``lo <= |B| <= hi``); if that
    does not get below ``stop``, the ratio bound (``u``, each sample's best alone, computed
    once: ``u[0]`` NaN until then; status -1, stopping, when its mean less ``q`` is below
    ``stop``), then the coupled bound (``couple``) and, with ``lp_min`` joinable experts or
    more, the combined LP over the sized terms and the anchored piece; the smallest bound is
    the range's piece. The coupled bound and the LP go in the order of their share of cuts
    so far (``tally``), and the second one and the ratio bound are skipped while they rarely
    cut (``worth``). A range still at or above ``stop`` is split in two halves (each bounds
    its sizes more tightly: a narrower chord, more gate sums forced in, ``lo`` more members'
    terms count), down to single sizes; once a single size fails, the node survives: a
    ``first_pass`` stops there, writing that size and the ranges it had left to ``left`` and
    returning their count as its status (the node's own pass resumes with them); otherwise
    the ranges left keep their pieces unsplit (they serve the children's pre-checks). Pieces
    are written to ``out`` (at most ``k - 1``: they partition the sizes of ``start``), each
    with the coupled (or sized) coefficients in ``alt`` where the LP's is the piece. Returns
    (pieces, status): status 0 when every range is bounded.

    ``arrays``: the workspace's ``(g, gp, p)`` and, for the ratio bound, ``(g_by_p, p_sorted,
    p_order, member)``; ``node``: ``(avail, num, den, r, u)``; ``sums``: ``(small, large)``;
    ``scratch``: ``(terms, beta, offset, rows, pair, coupled, gates, mean_gate)``; ``out``:
    ``(lo, hi, const, coef, value, alt)``; ``tally``: ``[3, 3]`` (tries, cuts, chances) of the
    coupled bound, the LP and the ratio bound, updated; ``start``: ``(lo, hi)`` arrays;
    ``left``: ``(lo, hi)`` arrays of at least ``2k + 8``."""
    (g, gp, p), (g_by_p, p_sorted, p_order, member) = arrays
    avail, num, den, r, u = node
    small, large = sums
    terms, beta, offset, rows, pair, coupled, gates, mean_gate = scratch
    out_lo, out_hi, out_const, out_coef, out_value, out_alt = out
    n = avail.size
    stack_lo, stack_hi = np.empty(2 * k + 8, np.intp), np.empty(2 * k + 8, np.intp)
    top = start[0].size
    stack_lo[:top], stack_hi[:top] = start
    gain, coef = np.empty(n), np.empty(n)
    pieces = 0
    failed = False
    have_gates = False
    normal = (den >= _TINY_DEN).astype(np.float64)  # line_terms divides twice where 0
    tiny = np.flatnonzero(normal == 0.0)
    while top > 0:
        top -= 1
        lo, hi = stack_lo[top], stack_hi[top]
        signed_terms(g, gp, avail, den, r, small[lo - 1], large[hi - 1], large[hi], terms, gain)
        value, const = knapsack(gain, costs, room, lo, hi), 0.0
        coef[:] = gain
        out_alt[pieces] = gain
        if value >= stop and np.isnan(u[0]) and worth(tally, _RATIO, 0.05):
            best_ratio(g_by_p, p_sorted, p_order, member, num, den, u)
            cut = blocked_mean(u) - q < stop
            tried(tally, _RATIO, cut)
            if cut:
                return pieces, -1
        first = _COUPLED if success(tally, _COUPLED) > success(tally, _LP) else _LP
        for attempt in range(2):
            method = first if attempt == 0 else 1 - first
            if value < stop or (method == _LP and n < lp_min) or (method == _COUPLED and n < 2):
                continue
            if attempt == 1 and not worth(tally, method, 0.05):
                continue  # rarely cuts what the other left: tried one chance in 32
            if method == _COUPLED:
                if not have_gates:
                    node_gates(g, avail, gates, mean_gate)
                    have_gates = True
                found = couple(
                    g,
                    gp,
                    (avail, den, r, normal, tiny, gates),
                    (small[lo - 1], small[min(lo, k - 1)], large[hi - 1], large[hi]),
                    mean_gate,
                    (lo, hi),
                    costs,
                    room,
                    stop,
                    first_pass,
                    (rows, pair, coupled),
                    out_alt[pieces],
                )
                found_const = 0.0
                if found < value:
                    coef[:] = out_alt[pieces]
            else:
                if np.isnan(u[0]):
                    best_ratio(g_by_p, p_sorted, p_order, member, num, den, u)
                anchored_piece(g, p, avail, num, den, r, u, large[hi], beta, offset)
                found, found_const = two_piece_lp(
                    offset, beta[:n], terms[:n], costs, room, lo, hi, stop, out_coef[pieces]
                )
                if found < value:
                    coef[:] = out_coef[pieces]
            tried(tally, method, found < stop)
            if found < value:
                value, const = found, found_const
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
            if first_pass:  # this size and the ranges left, for the node's own pass
                left_lo, left_hi = left
                left_lo[:top], left_hi[:top] = stack_lo[:top], stack_hi[:top]
                left_lo[top], left_hi[top] = lo, hi
                return pieces - 1, top + 1
            failed = True  # the node survives: its other sizes keep their coarser pieces
    return pieces, 0


@numba.njit(cache=True, nogil=True, error_model="numpy")
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

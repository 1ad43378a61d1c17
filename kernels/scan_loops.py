"""The compiled float LIF loops and the decode sum over time (numba), without torch.

``kernels/lif/cpu.py`` wraps them for torch tensors (the torch backend's CPU paths, its
reference: ``kernels/lif/reference.py``); ONNX Runtime's layer-wise run
(``runtime/backends/onnx_layerwise.py``) calls them on numpy arrays, so a node without torch
runs them too. Every operation rounds as the reference's does (fp32 multiply, then add, no FMA:
numba contracts nothing without ``fastmath``), so spikes and final potentials are equal bit for
bit (``tests/kernels/test_lif_cpu.py``; where two NaNs meet, which one's payload comes out is
LLVM's choice, as it is torch's). A current constant over time (an input expanded along
T, stride 0) is read from its one row. The scans take each sample's neurons through all steps
at once, a group of them held in registers with their parameters (``scan_sample``): per step
and neuron one current is read and one spike written. numba compiles each loop on first use and
caches the machine code beside this file (``cache=True``).
"""

from __future__ import annotations

import numba
import numpy as np

from ganglion.kernels import numba_cache  # noqa: F401 - before the first cache=True
from ganglion.kernels.simd import (
    LANES,
    vadd,
    vgreater,
    vload,
    vmul,
    vpair_sums,
    vscale,
    vstore,
    vsub,
    vwhere,
)

GROUP = 4 * LANES  # neurons ``scan_sample`` holds in registers through all steps


@numba.njit(cache=True, nogil=True)
def float_scan_loop(current, t_step, steps, gain, v0, decay, threshold, bias, v_reset, zero_reset):  # noqa: ANN001, ANN202
    """Step t reads current[t * t_step]; v0 [B, N] -> (spikes [steps, B, N], v [B, N]).
    C-contiguous arrays; each sample's neurons go through all steps at once
    (``scan_sample``)."""
    check_neurons(current, t_step, steps, v0, gain, decay, threshold, bias, v_reset)
    batch, n = v0.shape
    v = v0.copy()
    spikes = np.empty((steps, batch, n), np.float32)
    flat_current, flat_spikes, flat_v = current.reshape(-1), spikes.reshape(-1), v.reshape(-1)
    for b in range(batch):
        scan_sample(
            flat_current, b * n, t_step * batch * n, flat_spikes, b * n, batch * n, flat_v,
            b * n, steps, gain, decay, threshold, bias, v_reset, zero_reset,
        )  # fmt: skip
    return spikes, v


@numba.njit(cache=True, nogil=True)
def check_neurons(current, t_step, steps, v0, gain, decay, threshold, bias, v_reset):  # noqa: ANN001, ANN202, E501
    """ValueError unless ``current`` [S', B, N] holds a row block ``t·t_step`` for every step
    ``t < steps``, ``v0`` is [B, N] and each parameter [N]: what the loops' unchecked indexing
    assumes."""
    batch, n = v0.shape
    if current.shape[1] != batch or current.shape[2] != n or t_step < 0 or steps < 0:
        raise ValueError("neuron scan: the current does not fit the potentials")
    if steps > 0 and (steps - 1) * t_step >= current.shape[0]:
        raise ValueError("neuron scan: the current has fewer steps than asked for")
    check_parameters(n, gain, decay, threshold, bias, v_reset)


@numba.njit(cache=True, nogil=True)
def check_parameters(n, gain, decay, threshold, bias, v_reset):  # noqa: ANN001, ANN202
    """ValueError unless each of the neurons' parameters holds ``n`` values."""
    shapes = (gain.shape[0], decay.shape[0], threshold.shape[0], bias.shape[0], v_reset.shape[0])
    for size in shapes:
        if size != n:
            raise ValueError("neurons: a parameter is not one value per neuron")


@numba.njit(cache=True, nogil=True, inline="always")
def _neuron(current, v, gain, decay, threshold, bias, v_reset, zero_reset):  # noqa: ANN001, ANN202
    """One neuron, one step -> (its spike, 1.0 or 0.0, and its new potential): the reference's
    update, ``x = v·decay + bias + current·gain``, a spike where ``x > threshold``, then the
    reset."""
    x = v * decay + bias + current * gain
    fired = np.float32(x > threshold)
    if zero_reset:
        return fired, v_reset if fired else x
    return fired, x - fired * threshold


@numba.njit(cache=True, nogil=True, inline="always")
def _neuron_vector(current, v, gain, decay, threshold, bias, v_reset, zero_reset):  # noqa: ANN001, ANN202
    """``_neuron`` on ``LANES`` neurons (vectors), each lane rounded as the scalar one."""
    x = vadd(vadd(vmul(v, decay), bias), vmul(current, gain))
    fired = vgreater(x, threshold)
    if zero_reset:
        return fired, vwhere(fired, v_reset, x)
    return fired, vsub(x, vmul(fired, threshold))


@numba.njit(cache=True, nogil=True, inline="always")
def scan_sample(
    current, c_at, c_step, spikes, s_at, s_step, v, v_at, steps,
    gain, decay, threshold, bias, v_reset, zero_reset, pooled_lines=False,
):  # noqa: ANN001, ANN202, E501  # fmt: skip
    """One sample's N neurons through ``steps`` steps, time innermost: step t reads the
    currents at ``current[c_at + t·c_step :]`` and writes the spikes at ``spikes[s_at +
    t·s_step :]``; the potentials at ``v[v_at :]`` are updated in place (flat C-contiguous
    arrays, unchecked). ``GROUP`` neurons at a time stay in registers through all steps with
    their parameters, so a step loads one current and stores one spike per neuron; each neuron
    computes ``_neuron``'s arithmetic. ``pooled_lines``: the neurons are images [C, H,
    ``LANES``] with H even and N a multiple of ``GROUP`` (the caller checks), and each step
    writes the 2x2 means of its spikes (N/4 of them, as ``spike_mean_2x2``) in their place: a
    group is two pairs of lines, pooled in registers."""
    n = gain.shape[0]
    for k in range(0, n - n % GROUP, GROUP):
        k1, k2, k3 = k + LANES, k + 2 * LANES, k + 3 * LANES
        g0, g1, g2, g3 = vload(gain, k), vload(gain, k1), vload(gain, k2), vload(gain, k3)
        d0, d1, d2, d3 = vload(decay, k), vload(decay, k1), vload(decay, k2), vload(decay, k3)
        h0, h1 = vload(threshold, k), vload(threshold, k1)
        h2, h3 = vload(threshold, k2), vload(threshold, k3)
        b0, b1, b2, b3 = vload(bias, k), vload(bias, k1), vload(bias, k2), vload(bias, k3)
        r0, r1 = vload(v_reset, k), vload(v_reset, k1)
        r2, r3 = vload(v_reset, k2), vload(v_reset, k3)
        at = v_at + k
        v0, v1 = vload(v, at), vload(v, at + LANES)
        v2, v3 = vload(v, at + 2 * LANES), vload(v, at + 3 * LANES)
        for t in range(steps):
            c = c_at + t * c_step + k
            f0, v0 = _neuron_vector(vload(current, c), v0, g0, d0, h0, b0, r0, zero_reset)
            f1, v1 = _neuron_vector(vload(current, c + LANES), v1, g1, d1, h1, b1, r1, zero_reset)
            c += 2 * LANES
            f2, v2 = _neuron_vector(vload(current, c), v2, g2, d2, h2, b2, r2, zero_reset)
            f3, v3 = _neuron_vector(vload(current, c + LANES), v3, g3, d3, h3, b3, r3, zero_reset)
            if pooled_lines:  # lines f0, f1 then f2, f3 added, then adjacent columns
                means = vscale(vpair_sums(vadd(f0, f1), vadd(f2, f3)), np.float32(0.25))
                vstore(spikes, s_at + t * s_step + k // 4, means)
                continue
            o = s_at + t * s_step + k
            vstore(spikes, o, f0)
            vstore(spikes, o + LANES, f1)
            vstore(spikes, o + 2 * LANES, f2)
            vstore(spikes, o + 3 * LANES, f3)
        vstore(v, at, v0)
        vstore(v, at + LANES, v1)
        vstore(v, at + 2 * LANES, v2)
        vstore(v, at + 3 * LANES, v3)
    for k in range(n - n % GROUP, n):
        vk = v[v_at + k]
        for t in range(steps):
            spikes[s_at + t * s_step + k], vk = _neuron(
                current[c_at + t * c_step + k], vk, gain[k], decay[k], threshold[k], bias[k],
                v_reset[k], zero_reset,
            )  # fmt: skip
        v[v_at + k] = vk


@numba.njit(cache=True, nogil=True)
def float_scan_pool_loop(
    current, t_step, steps, gain, v0, decay, threshold, bias, v_reset, zero_reset, image
):  # noqa: ANN001, ANN202, E501
    """``float_scan_loop`` and then 2x2 average pooling of its spikes, in one pass: each
    sample's spikes, N = C·H·W neurons (``image`` = (C, H, W)), are pooled while still in
    cache and never stored -> (pooled [steps, B, C, H // 2, W // 2], v [B, N]).
    The pooled values are those of ``mean_2x2``, bit for bit: a window of 0/1 spikes sums to a
    small whole number in any order, and a quarter of it is exact (in ``scan_sample``'s
    registers for images ``LANES`` wide, ``spike_mean_2x2`` where H and W are even,
    ``mean_2x2`` itself where not)."""
    check_neurons(current, t_step, steps, v0, gain, decay, threshold, bias, v_reset)
    batch, n = v0.shape
    channels, height, width = image
    if channels * height * width != n:
        raise ValueError("float_scan_pool_loop: image (C, H, W) does not hold the N neurons")
    even = height % 2 == 0 and width % 2 == 0
    v = v0.copy()
    pooled = np.empty((steps, batch, channels, height // 2, width // 2), np.float32)
    flat_current, flat_v = current.reshape(-1), v.reshape(-1)
    if width == LANES and even and n % GROUP == 0:  # pooled in registers (``scan_sample``)
        quarter_n = n // 4
        for b in range(batch):
            scan_sample(
                flat_current, b * n, t_step * batch * n, pooled.reshape(-1), b * quarter_n,
                batch * quarter_n, flat_v, b * n, steps, gain, decay, threshold, bias, v_reset,
                zero_reset, True,
            )  # fmt: skip
        return pooled, v
    rows = np.empty((steps, n), np.float32)  # one sample's spikes of every step
    pairs = np.empty(n // 2, np.float32)  # scratch of spike_mean_2x2
    flat_rows = rows.reshape(-1)
    for b in range(batch):
        scan_sample(
            flat_current, b * n, t_step * batch * n, flat_rows, 0, n, flat_v, b * n, steps,
            gain, decay, threshold, bias, v_reset, zero_reset,
        )  # fmt: skip
        for t in range(steps):
            if even:
                spike_mean_2x2(rows[t], width, pairs, pooled[t, b].reshape(-1))
            else:
                mean_2x2(rows[t].reshape(channels, height, width), pooled[t, b])
    return pooled, v


@numba.njit(cache=True, nogil=True, inline="always")
def spike_mean_2x2(row, width, pairs, out):  # noqa: ANN001, ANN202
    """``row`` [C·H·W] of 0/1 spikes, H and W even -> ``out`` [C·H/2·W/2] 2x2 window means,
    equal to ``mean_2x2``'s (module docstring); ``pairs`` [C·H·W/2] scratch. Each pair of lines
    is added first, then adjacent columns of those sums: where W and the number of windows are
    multiples of ``LANES``, ``LANES`` windows per step in registers, else through ``pairs`` one
    by one."""
    quarter_n, quarter = row.shape[0] // 4, np.float32(0.25)
    top = column = 0  # where the next line sums start: the first line of a pair, a column
    if width % LANES == 0 and quarter_n % LANES == 0:  # a vector of sums stays in one line
        for k in range(0, quarter_n, LANES):
            first = vadd(vload(row, top + column), vload(row, top + width + column))
            top, column = _next_columns(top, column, LANES, width)
            second = vadd(vload(row, top + column), vload(row, top + width + column))
            top, column = _next_columns(top, column, LANES, width)
            vstore(out, k, vscale(vpair_sums(first, second), quarter))
        return
    for j in range(2 * quarter_n):
        pairs[j] = row[top + column] + row[top + width + column]
        top, column = _next_columns(top, column, 1, width)
    for k in range(quarter_n):
        out[k] = (pairs[2 * k] + pairs[2 * k + 1]) * quarter


@numba.njit(cache=True, nogil=True, inline="always")
def _next_columns(top, column, count, width):  # noqa: ANN001, ANN202
    """``spike_mean_2x2``'s walk: ``count`` columns on along a pair of lines starting at flat
    ``top``, or the next pair of lines (two lines down) once the line ends."""
    if column + count < width:
        return top, column + count
    return top + 2 * width, 0


@numba.njit(cache=True, nogil=True)
def mean_2x2(x, out):  # noqa: ANN001, ANN202
    """x [M, H, W] -> out [M, H // 2, W // 2]: each 2x2 window as (((a + b) + c) + d) / 4,
    ``F.avg_pool2d``'s rounding for stride 2 (the window fixed at compile time)."""
    m_count, oh, ow = out.shape
    area = np.float32(4)
    for m in range(m_count):
        for oy in range(oh):
            top, bottom, line = x[m, 2 * oy], x[m, 2 * oy + 1], out[m, oy]
            for ox in range(ow):
                left = 2 * ox
                line[ox] = (((top[left] + top[left + 1]) + bottom[left]) + bottom[left + 1]) / area


@numba.njit(cache=True, nogil=True)
def float_step_loop(current, v0, gain, decay, threshold, bias, v_reset, zero_reset):  # noqa: ANN001, ANN202
    """One step of ``float_scan_loop``: C-contiguous current and v0 [B, *shape] holding N =
    len(gain) neurons per sample -> (spikes, v) like v0 (kept); the same arithmetic."""
    n = gain.shape[0]
    check_parameters(n, gain, decay, threshold, bias, v_reset)
    if n == 0 or current.size != v0.size or v0.size % n:
        raise ValueError("neuron step: the current does not fit the potentials")
    v, spikes = v0.copy(), np.empty_like(v0)
    flat_current, flat_spikes, flat_v = current.reshape(-1), spikes.reshape(-1), v.reshape(-1)
    for b in range(v0.size // n):
        scan_sample(
            flat_current, b * n, 0, flat_spikes, b * n, 0, flat_v, b * n, 1,
            gain, decay, threshold, bias, v_reset, zero_reset,
        )  # fmt: skip
    return spikes, v


@numba.njit(cache=True, nogil=True)
def time_sum_loop(values, t_step, steps, total):  # noqa: ANN001, ANN202
    """values[t * t_step] for t < steps added into total [B, M] in time order."""
    batch, m = total.shape
    for t in range(steps):
        row = values[t * t_step]
        for b in range(batch):
            for k in range(m):
                total[b, k] += row[b, k]

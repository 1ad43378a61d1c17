"""The compiled float LIF loops and the decode sum over time (numba), without torch.

``kernels/lif/cpu.py`` wraps them for torch tensors (the torch backend's CPU paths, its
reference: ``kernels/lif/reference.py``); ONNX Runtime's layer-wise run
(``runtime/backends/onnx_layerwise.py``) calls them on numpy arrays, so a node without torch
runs them too. Every operation rounds as the reference's does (fp32 multiply, then add, no FMA:
numba contracts nothing without ``fastmath``), so spikes and final potentials are equal bit for
bit (``tests/kernels/test_lif_cpu.py``). A current constant over time (an input expanded along
T, stride 0) is read from its one row. numba compiles each loop on first use and caches the
machine code beside this file (``cache=True``).
"""

from __future__ import annotations

import numba
import numpy as np

from ganglion.kernels import numba_cache  # noqa: F401 - before the first cache=True
from ganglion.kernels.simd import LANES, vadd, vload, vpair_sums, vscale, vstore


@numba.njit(cache=True, nogil=True)
def float_scan_loop(current, t_step, steps, gain, v0, decay, threshold, bias, v_reset, zero_reset):  # noqa: ANN001, ANN202
    """Step t reads current[t * t_step]; v0 [B, N] -> (spikes [steps, B, N], v [B, N]).
    C-contiguous arrays, so the inner loop is unit-stride."""
    check_neurons(current, t_step, steps, v0, gain, decay, threshold, bias, v_reset)
    batch, n = v0.shape
    v = v0.copy()
    spikes = np.empty((steps, batch, n), np.float32)
    for t in range(steps):
        c, s = current[t * t_step], spikes[t]
        for b in range(batch):
            neurons_step(c[b], v[b], s[b], gain, decay, threshold, bias, v_reset, zero_reset)
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
def neurons_step(current, v, spikes, gain, decay, threshold, bias, v_reset, zero_reset):  # noqa: ANN001, ANN202
    """One sample's N neurons, one step: ``v`` [N] updated in place, ``spikes`` [N] written."""
    for k in range(v.shape[0]):
        x = v[k] * decay[k] + bias[k] + current[k] * gain[k]
        fired = x > threshold[k]
        spikes[k] = fired
        if zero_reset:
            v[k] = v_reset[k] if fired else x
        else:
            v[k] = x - np.float32(fired) * threshold[k]


@numba.njit(cache=True, nogil=True)
def float_scan_pool_loop(
    current, t_step, steps, gain, v0, decay, threshold, bias, v_reset, zero_reset, image
):  # noqa: ANN001, ANN202, E501
    """``float_scan_loop`` and then 2x2 average pooling of its spikes, in one pass: each
    sample's spikes of a step, N = C·H·W neurons (``image`` = (C, H, W)), are pooled while
    still in cache and never stored -> (pooled [steps, B, C, H // 2, W // 2], v [B, N]).
    The pooled values are those of ``mean_2x2``, bit for bit: a window of 0/1 spikes sums to a
    small whole number in any order, and a quarter of it is exact (``spike_mean_2x2`` where H
    and W are even, ``mean_2x2`` itself where not)."""
    check_neurons(current, t_step, steps, v0, gain, decay, threshold, bias, v_reset)
    batch, n = v0.shape
    channels, height, width = image
    if channels * height * width != n:
        raise ValueError("float_scan_pool_loop: image (C, H, W) does not hold the N neurons")
    even = height % 2 == 0 and width % 2 == 0
    v = v0.copy()
    row = np.empty(n, np.float32)  # one sample's spikes of one step
    pairs = np.empty(n // 2, np.float32)  # scratch of spike_mean_2x2
    pooled = np.empty((steps, batch, channels, height // 2, width // 2), np.float32)
    for t in range(steps):
        c = current[t * t_step]
        for b in range(batch):
            neurons_step(c[b], v[b], row, gain, decay, threshold, bias, v_reset, zero_reset)
            if even:
                spike_mean_2x2(row, width, pairs, pooled[t, b].reshape(-1))
            else:
                mean_2x2(row.reshape(channels, height, width), pooled[t, b])
    return pooled, v


@numba.njit(cache=True, nogil=True)
def spike_mean_2x2(row, width, pairs, out):  # noqa: ANN001, ANN202
    """``row`` [C·H·W] of 0/1 spikes, H and W even -> ``out`` [C·H/2·W/2] 2x2 window means,
    equal to ``mean_2x2``'s (module docstring); ``pairs`` [C·H·W/2] scratch. Adjacent columns
    are added first along the whole row (``LANES`` pairs per vector), then pairs of lines."""
    half_n = row.shape[0] // 2
    quarter = np.float32(0.25)
    for k in range(0, half_n - half_n % LANES, LANES):
        vstore(pairs, k, vpair_sums(row, 2 * k))
    for k in range(half_n - half_n % LANES, half_n):
        pairs[k] = row[2 * k] + row[2 * k + 1]
    half = width // 2  # a line of pairs, and of outputs
    for line in range(half_n // width):
        top, o = 2 * line * half, line * half
        if half % LANES == 0:
            for x in range(0, half, LANES):
                both = vadd(vload(pairs, top + x), vload(pairs, top + half + x))
                vstore(out, o + x, vscale(both, quarter))
        else:
            for x in range(half):
                out[o + x] = (pairs[top + x] + pairs[top + half + x]) * quarter


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
    len(gain) neurons per sample -> (spikes, v) like v0 (kept); the same arithmetic, in order."""
    n = gain.shape[0]
    check_parameters(n, gain, decay, threshold, bias, v_reset)
    v, spikes = np.empty_like(v0), np.empty_like(v0)
    c, v_in = current.reshape(-1, n), v0.reshape(-1, n)  # [B, N] views
    v_out, s = v.reshape(-1, n), spikes.reshape(-1, n)
    for b in range(v_in.shape[0]):  # a loop per reset, so LLVM vectorizes it
        cb, vb, ob, sb = c[b], v_in[b], v_out[b], s[b]
        if zero_reset:
            for k in range(n):
                x = vb[k] * decay[k] + bias[k] + cb[k] * gain[k]
                fired = x > threshold[k]
                sb[k] = fired
                ob[k] = v_reset[k] if fired else x
        else:
            for k in range(n):
                x = vb[k] * decay[k] + bias[k] + cb[k] * gain[k]
                fired = np.float32(x > threshold[k])
                sb[k] = fired
                ob[k] = x - fired * threshold[k]
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

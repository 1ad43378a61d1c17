"""A convolution, the plain neurons only it feeds and the 2x2 average pool only they feed, in
one compiled pass per image (numba).

In a converted spiking CNN each convolution after the first feeds a neuron layer whose spikes
only a 2x2 average pool reads. Run apart, the convolution writes its output in [O, OH, OW]
order (a transpose of its channels-last accumulators), the neuron scan reads it back and the
pool walks the spikes two columns at a time. Here each image's accumulators
(``cpu.accumulate_image``, channels last) get the bias; a sample's outputs of every step then
go through the neuron scan in that order (``scan_loops.scan_sample``, time innermost), with the
neurons' parameters and potentials permuted to it once per call, and the spikes are pooled a
vector of channels at a time. Each value is computed as the three loops compute it: the
convolution's ``acc + bias``, the neuron update of ``scan_loops._neuron`` (the same
arithmetic per neuron, only the order of the neurons and steps differs), and window means of
0/1 spikes, whole numbers over four in any order. So the pooled spikes and final potentials equal
``conv2d_loop``, then ``float_scan_loop``, then ``mean_2x2`` bit for bit
(``tests/kernels/test_conv_cpu.py``).
"""

from __future__ import annotations

import numba
import numpy as np

from ganglion.kernels import numba_cache  # noqa: F401 - before the first cache=True
from ganglion.kernels.conv.cpu import accumulate_image, check_layout
from ganglion.kernels.scan_loops import check_parameters, scan_sample
from ganglion.kernels.simd import (
    LANES,
    vadd,
    vload,
    vscale,
    vstore,
    vzip_high,
    vzip_low,
    vzip_pairs_high,
    vzip_pairs_low,
)


@numba.njit(cache=True, nogil=True)
def fits(o_count, oh, ow):  # noqa: ANN001, ANN201
    """Whether the one pass takes a convolution of ``o_count`` output channels and output
    sides ``oh``, ``ow``: whole vectors of channels, even sides."""
    return o_count % LANES == 0 and oh % 2 == 0 and ow % 2 == 0 and oh > 0 and ow > 0


@numba.njit(cache=True, nogil=True)
def conv_scan_pool_loop(
    x,
    flipped,
    conv_bias,
    pad_h,
    pad_w,
    out_hw,
    gain,
    v0,
    decay,
    threshold,
    bias,
    v_reset,
    zero_reset,
):  # noqa: ANN001, ANN202, E501
    """x [S, B, C, H, W] -> (pooled [S, B, O, OH/2, OW/2], v [B, N]): the convolution
    (``flipped`` from ``cpu.flip_weight``, ``conv_bias`` [O], stride 1, output sides ``out_hw``
    = (OH, OW), both even; O a multiple of ``LANES``), then the neurons (N = O·OH·OW,
    parameters [N] and potentials ``v0`` [B, N] in [O, OH, OW] order, kept) stepping through
    S steps, then 2x2 pooling of their spikes. ValueError where the arrays do not fit together
    (``check_layout``, ``fits``, one parameter per neuron)."""
    steps, batch, c_count = x.shape[0], x.shape[1], x.shape[2]
    o_count = conv_bias.shape[0]
    oh, ow = out_hw
    check_layout(x.shape[2:], flipped, o_count, pad_h, pad_w, oh, ow)
    positions = oh * ow
    n = o_count * positions
    if not fits(o_count, oh, ow) or v0.shape[0] != batch or v0.shape[1] != n:
        raise ValueError("conv_scan_pool_loop: channels, sides or potentials do not fit")
    check_parameters(n, gain, decay, threshold, bias, v_reset)
    # channels-last copies of everything indexed by neuron: neuron o·P + p of [O, OH, OW]
    # order (P = OH·OW positions) goes to p·O + o, read in order, written a channel apart
    params = np.empty((6, n), np.float32)
    for o in range(o_count):
        for p in range(positions):
            k, i = p * o_count + o, o * positions + p
            params[0, k], params[1, k], params[2, k] = gain[i], decay[i], threshold[i]
            params[3, k], params[4, k], params[5, k] = bias[i], v_reset[i], conv_bias[o]
    v = np.empty((batch, n), np.float32)
    for b in range(batch):
        for o in range(o_count):
            for p in range(positions):
                v[b, p * o_count + o] = v0[b, o * positions + p]
    listed, values = np.empty(c_count, np.int64), np.empty(c_count, np.float32)
    # one sample's convolution outputs of every step, then (written over them) its spikes
    rows = np.empty((steps, n), np.float32)
    flat_rows, flat_v = rows.reshape(-1), v.reshape(-1)
    window = np.empty(o_count, np.float32)  # one window's means, channels in order
    pooled = np.empty((steps, batch, o_count, oh // 2, ow // 2), np.float32)
    quarter, line = np.float32(0.25), ow * o_count
    for b in range(batch):
        for t in range(steps):
            acc = rows[t]
            accumulate_image(x[t, b], flipped, o_count, oh, ow, pad_h, pad_w, listed, values, acc)
            for k in range(n):
                acc[k] = acc[k] + params[5, k]  # the convolution's output: acc + bias
        scan_sample(
            flat_rows, 0, n, flat_rows, 0, n, flat_v, b * n, steps,
            params[0], params[1], params[2], params[3], params[4], zero_reset,
        )  # fmt: skip
        for t in range(steps):
            spikes, image = rows[t], pooled[t, b]
            if oh == ow == 4:  # four windows: a vector of channels each, stored transposed
                flat = image.reshape(-1)
                for o in range(0, o_count, LANES):
                    w0 = _window(spikes, o, o_count, line, quarter)
                    w1 = _window(spikes, 2 * o_count + o, o_count, line, quarter)
                    w2 = _window(spikes, 2 * line + o, o_count, line, quarter)
                    w3 = _window(spikes, 2 * line + 2 * o_count + o, o_count, line, quarter)
                    _store_transposed(w0, w1, w2, w3, flat, 4 * o)
                continue
            for py in range(oh // 2):
                for px in range(ow // 2):
                    top = 2 * py * line + 2 * px * o_count
                    for o in range(0, o_count, LANES):
                        vstore(window, o, _window(spikes, top + o, o_count, line, quarter))
                    for o in range(o_count):
                        image[o, py, px] = window[o]
    v_out = np.empty_like(v0)
    for b in range(batch):
        for o in range(o_count):  # written in order
            for p in range(positions):
                v_out[b, o * positions + p] = v[b, p * o_count + o]
    return pooled, v_out


@numba.njit(cache=True, nogil=True, inline="always")
def _window(spikes, top, o_count, line, quarter):  # noqa: ANN001, ANN202
    """The 2x2 means of ``LANES`` channels of channels-last ``spikes`` from flat ``top`` (the
    window's first position; ``o_count`` apart along a line, ``line`` apart down)."""
    upper = vadd(vload(spikes, top), vload(spikes, top + o_count))
    lower = vadd(vload(spikes, top + line), vload(spikes, top + line + o_count))
    return vscale(vadd(upper, lower), quarter)


@numba.njit(cache=True, nogil=True, inline="always")
def _store_transposed(w0, w1, w2, w3, out, at):  # noqa: ANN001, ANN202
    """Four vectors of ``LANES`` channels (one per position) stored channel by channel from
    flat ``at``: each channel's four positions in order, ``4·LANES`` floats."""
    t0, t1 = vzip_low(w0, w1), vzip_high(w0, w1)  # c0p0 c0p1 c1p0 c1p1 ...
    t2, t3 = vzip_low(w2, w3), vzip_high(w2, w3)  # c0p2 c0p3 c1p2 c1p3 ...
    vstore(out, at, vzip_pairs_low(t0, t2))  # c0p0 c0p1 c0p2 c0p3 c1p0 ...
    vstore(out, at + LANES, vzip_pairs_high(t0, t2))
    vstore(out, at + 2 * LANES, vzip_pairs_low(t1, t3))
    vstore(out, at + 3 * LANES, vzip_pairs_high(t1, t3))

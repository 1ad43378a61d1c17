"""A 2-D convolution of few input channels, vectors along the output's columns (numba).

``cpu.accumulate_image`` walks the inputs and skips the zeros: fast on spikes, but on a dense
image of one or a few channels (the first convolution of a CNN, reading the input itself) each
input adds into a few dozen accumulators kept in memory, and its channels-last result is then
transposed. This loop walks the outputs instead: for each output row it holds ``LANES``
consecutive columns of ``O_BLOCK`` output channels in registers, adds every tap in (ky, kx, c)
order (one fused multiply-add each, ``kernels.simd``), adds the bias and stores the vectors
where ``F.conv2d``'s [O, OH, OW] layout wants them. It reads a zero-padded copy of each image
and adds every tap, where ``conv2d_loop`` skips the padding and the zero inputs: ``fma(w, 0,
acc)`` is ``acc``, except that it can turn an ``acc`` of -0 (a product too small for fp32 gives
one) into +0, which the bias added last maps to the same output unless the bias is -0
(``layer.CpuConv2d`` refuses such layers). So every output gets ``conv2d_loop``'s bits
(``tests/kernels/test_conv_cpu.py``). It takes outputs of at least ``O_BLOCK``
channels and ``LANES`` columns; where a count is not a multiple, the last block of channels or
vector of columns ends at the last one, overlapping the one before it (those outputs are
computed twice, to the same bits).
"""

from __future__ import annotations

import numba
import numpy as np

from ganglion.kernels import numba_cache  # noqa: F401 - before the first cache=True
from ganglion.kernels.conv.cpu import check_layout
from ganglion.kernels.simd import LANES, sload, vadd, vfma, vload, vsplat, vstore

O_BLOCK = 8  # output channels whose vectors the loop holds in registers at once


@numba.njit(cache=True, nogil=True)
def conv2d_columns_loop(x, flipped, bias, pad_h, pad_w, out, padded):  # noqa: ANN001, ANN202
    """x [N, C, H, W] -> out [N, O, OH, OW] (stride 1, dilation 1, one group; C-contiguous;
    O >= ``O_BLOCK``, OW >= ``LANES``); ``flipped`` from ``cpu.flip_weight``; ``padded``
    [C, H + 2·pad_h, W + 2·pad_w] scratch. ValueError where the arrays do not fit together."""
    o_count, c_count, h, w = bias.shape[0], x.shape[1], x.shape[2], x.shape[3]
    oh, ow = out.shape[2], out.shape[3]
    check_layout(x.shape[1:], flipped, o_count, pad_h, pad_w, oh, ow)
    ph, pw = h + 2 * pad_h, w + 2 * pad_w
    fits = out.shape[0] == x.shape[0] and out.shape[1] == o_count
    if not fits or o_count < O_BLOCK or ow < LANES or padded.shape != (c_count, ph, pw):
        raise ValueError("conv2d_columns_loop: out or padded does not fit the convolution")
    padded[:] = 0
    source = padded.reshape(-1)
    for n in range(x.shape[0]):
        padded[:, pad_h : pad_h + h, pad_w : pad_w + w] = x[n]
        image = out[n].reshape(-1)
        for i in range(-(-o_count // O_BLOCK)):
            o = min(i * O_BLOCK, o_count - O_BLOCK)  # the last block ends at the last channel
            _block_rows(source, flipped, bias, o, ph, pw, oh, ow, image)


@numba.njit(cache=True, nogil=True, inline="always")
def _block_rows(source, flipped, bias, o, ph, pw, oh, ow, image):  # noqa: ANN001, ANN202
    """Output channels ``o`` .. ``o + O_BLOCK - 1`` of one image (``source``: its padded copy,
    flat; ``image``: its output, flat)."""
    kh, c_count, row_length = flipped.shape
    o_count = bias.shape[0]
    kw = row_length // o_count
    taps = flipped.reshape(-1)
    zero = vsplat(np.float32(0))
    plane = oh * ow
    for y in range(oh):
        for i in range(-(-ow // LANES)):
            col = min(i * LANES, ow - LANES)  # the last vector ends at the last column
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
            for ky in range(kh):
                for kx in range(kw):
                    for c in range(c_count):
                        v = vload(source, (c * ph + y + ky) * pw + col + kx)
                        t = (ky * c_count + c) * row_length + (kw - 1 - kx) * o_count + o
                        a0 = vfma(sload(taps, t), v, a0)
                        a1 = vfma(sload(taps, t + 1), v, a1)
                        a2 = vfma(sload(taps, t + 2), v, a2)
                        a3 = vfma(sload(taps, t + 3), v, a3)
                        a4 = vfma(sload(taps, t + 4), v, a4)
                        a5 = vfma(sload(taps, t + 5), v, a5)
                        a6 = vfma(sload(taps, t + 6), v, a6)
                        a7 = vfma(sload(taps, t + 7), v, a7)
            at = o * plane + y * ow + col
            vstore(image, at, vadd(a0, vsplat(bias[o])))
            vstore(image, at + plane, vadd(a1, vsplat(bias[o + 1])))
            vstore(image, at + 2 * plane, vadd(a2, vsplat(bias[o + 2])))
            vstore(image, at + 3 * plane, vadd(a3, vsplat(bias[o + 3])))
            vstore(image, at + 4 * plane, vadd(a4, vsplat(bias[o + 4])))
            vstore(image, at + 5 * plane, vadd(a5, vsplat(bias[o + 5])))
            vstore(image, at + 6 * plane, vadd(a6, vsplat(bias[o + 6])))
            vstore(image, at + 7 * plane, vadd(a7, vsplat(bias[o + 7])))

"""The compiled loop of ``kernels.conv`` (numba): a 2-D convolution in oneDNN's arithmetic.

For a 3×3 fp32 convolution at a batch of two or more, ``F.conv2d`` on the CPU calls oneDNN's
direct kernel, which computes each output as ``acc = 0``, then one fused multiply-add
``acc = fma(x, w, acc)`` per valid tap in ``(ky, kx, c)`` order, then ``acc + bias``. This loop
does the same, so where the machine's oneDNN does (``CpuConv2d`` checks it per layer and input
shape) the two are equal bit for bit. A zero input is skipped: ``fma(0, w, acc) == acc`` for a
finite ``w`` (the spike inputs of a spiking program are mostly zeros).

The loop walks the inputs, not the outputs: for each input position and channel it adds the
value times a contiguous run of the weights to a contiguous run of accumulators, one per
(output column, output channel). The weights are laid out for that once per layer
(``flip_weight``). numba compiles it on first use and caches the machine code beside this file.
"""

from __future__ import annotations

import numba
import numpy as np

from ganglion.kernels.fma import fma32


def flip_weight(weight: np.ndarray) -> np.ndarray:
    """``weight`` [O, C, KH, KW] -> [KH, C, KW·O] with ``[ky, c, j·O + o] = weight[o, c, ky,
    KW-1-j]``: the taps one input position gives a row of outputs, contiguous."""
    o, c, kh, kw = weight.shape
    flipped = weight[:, :, :, ::-1].transpose(2, 1, 3, 0)
    return np.ascontiguousarray(flipped, dtype=np.float32).reshape(kh, c, kw * o)


@numba.njit(cache=True, nogil=True)
def conv2d_loop(x, flipped, bias, pad_h, pad_w, out, acc):  # noqa: ANN001, ANN202
    """x [N, C, H, W] -> out [N, O, OH, OW] (stride 1, dilation 1, one group); ``flipped`` from
    ``flip_weight``; ``acc`` [OH·OW·O] scratch. Inputs are visited in (iy, ix, c) order, so
    each output takes its taps in (ky, kx, c) order."""
    n_count, c_count, h, w = x.shape
    kh = flipped.shape[0]
    o_count = bias.shape[0]
    kw = flipped.shape[2] // o_count
    oh, ow = out.shape[2], out.shape[3]
    for n in range(n_count):
        acc[:] = 0
        for iy in range(h):
            ky_lo = max(0, iy + pad_h - oh + 1)
            ky_hi = min(kh, iy + pad_h + 1)
            for ix in range(w):
                kx_lo = max(0, ix + pad_w - ow + 1)
                kx_hi = min(kw, ix + pad_w + 1)
                if kx_hi <= kx_lo:
                    continue
                first_column = ix + pad_w - (kx_hi - 1)
                j0 = (kw - kx_hi) * o_count
                length = (kx_hi - kx_lo) * o_count
                for c in range(c_count):
                    v = x[n, c, iy, ix]
                    if v == 0:
                        continue
                    for ky in range(ky_lo, ky_hi):
                        start = ((iy + pad_h - ky) * ow + first_column) * o_count
                        a = acc[start : start + length]
                        taps = flipped[ky, c, j0 : j0 + length]
                        for j in range(length):
                            a[j] = fma32(v, taps[j], a[j])
        image = out[n]
        for o in range(o_count):
            b = bias[o]
            for y in range(oh):
                for col in range(ow):
                    image[o, y, col] = acc[(y * ow + col) * o_count + o] + b

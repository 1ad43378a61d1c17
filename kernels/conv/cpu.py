"""The compiled loop of ``kernels.conv`` (numba): a 2-D convolution in oneDNN's arithmetic.

For a 3×3 fp32 convolution at a batch of two or more, ``F.conv2d`` on the CPU calls oneDNN's
direct kernel, which computes each output as ``acc = 0``, then one fused multiply-add
``acc = fma(x, w, acc)`` per valid tap in ``(ky, kx, c)`` order, then ``acc + bias``. This loop
does the same, so where the machine's oneDNN does (``CpuConv2d`` checks it per layer and input
shape) the two are equal bit for bit. A zero input is skipped: ``fma(0, w, acc) == acc`` for a
finite ``w`` but for the sign of a zero ``acc``, which the bias added last erases unless it is
-0 (``CpuConv2d`` refuses that); the spike inputs of a spiking program are mostly zeros.

The loop walks the inputs, not the outputs: for each input position it first lists the channels
whose value is not zero (without a branch per channel), then, for each kernel row, adds each
listed value times a contiguous run of the weights to a contiguous run of accumulators, one per
(output column, output channel). The run is taken ``BLOCK`` (4·``LANES``) accumulators at a
time, held in registers (``kernels.simd``) while every listed channel adds into them, then
``LANES`` at a time, then one by one: each accumulator still takes its taps in (ky, kx, c)
order, each with one rounding. The weights are laid out for that once per layer
(``flip_weight``). numba compiles it on first use and caches the machine code beside this file.
"""

from __future__ import annotations

import numba
import numpy as np

from ganglion.kernels import numba_cache  # noqa: F401 - before the first cache=True
from ganglion.kernels.fma import fma32
from ganglion.kernels.simd import LANES, vfma, vload, vstore

BLOCK = 4 * LANES  # accumulators the loop holds in registers at once
PROBE_ROWS = (2, 67)  # rows of the inputs a library's convolution is compared with the loop at
PROBE_MAX_VALUES = 1 << 23  # floats a probe may hold, inputs and outputs (32 MiB)


def probe_fits(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> bool:
    """Whether probing a convolution from ``in_shape`` to ``out_shape`` (per row) stays within
    ``PROBE_MAX_VALUES``: a layer whose probe would be larger keeps the library's kernel (the
    shapes may come from a file)."""
    per_row = int(np.prod(in_shape, dtype=np.int64)) + int(np.prod(out_shape, dtype=np.int64))
    return max(PROBE_ROWS) * per_row <= PROBE_MAX_VALUES


def probe_inputs(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Inputs [rows, *shape] for each of ``PROBE_ROWS``, half zeros (as spikes are), the rest
    normal, the same every call: where the loop gives a library's bits on all of them, it is
    taken to give them on that layer (``layer.CpuConv2d``, ONNX Runtime's layer-wise run).
    Callers check ``probe_fits`` first."""
    rng = np.random.default_rng(0)
    inputs = []
    for rows in PROBE_ROWS:
        x = rng.standard_normal((rows, *shape)).astype(np.float32)
        inputs.append(x * (rng.random(x.shape) < 0.5))
    return inputs


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
    o_count, c_count = bias.shape[0], x.shape[1]
    oh, ow = out.shape[2], out.shape[3]
    check_layout(x.shape[1:], flipped, o_count, pad_h, pad_w, oh, ow)
    if out.shape[0] != x.shape[0] or out.shape[1] != o_count or acc.shape[0] < oh * ow * o_count:
        raise ValueError("conv2d_loop: out or acc does not fit the convolution")
    listed = np.empty(c_count, np.int64)  # channels whose input is not zero, in order
    values = np.empty(c_count, np.float32)
    for n in range(x.shape[0]):
        accumulate_image(x[n], flipped, o_count, oh, ow, pad_h, pad_w, listed, values, acc)
        image = out[n]
        for o in range(o_count):
            b = bias[o]
            for y in range(oh):
                for col in range(ow):
                    image[o, y, col] = acc[(y * ow + col) * o_count + o] + b


@numba.njit(cache=True, nogil=True)
def check_layout(image_shape, flipped, o_count, pad_h, pad_w, oh, ow):  # noqa: ANN001, ANN202
    """ValueError unless ``flipped`` [KH, C, KW·O] takes images of ``image_shape`` (C, H, W)
    to [O, OH, OW] with paddings ``pad_h``, ``pad_w`` >= 0: what ``accumulate_image``'s
    unchecked indexing assumes."""
    c_count, h, w = image_shape
    kh, row_length = flipped.shape[0], flipped.shape[2]
    if flipped.shape[1] != c_count or o_count < 1 or row_length % o_count or pad_h < 0 or pad_w < 0:
        raise ValueError("convolution: the weights do not fit the input or the output channels")
    if oh != h + 2 * pad_h - kh + 1 or ow != w + 2 * pad_w - row_length // o_count + 1:
        raise ValueError("convolution: the output sides do not follow from the input's")
    if oh < 1 or ow < 1:
        raise ValueError("convolution: an empty output")


@numba.njit(cache=True, nogil=True, inline="always")
def accumulate_image(image, flipped, o_count, oh, ow, pad_h, pad_w, listed, values, acc):  # noqa: ANN001, ANN202, E501
    """One image [C, H, W]: ``acc`` [OH·OW·O] (channels last: ``acc[(y·OW + x)·O + o]``) set to
    the convolution's sums before the bias, each output's taps in (ky, kx, c) order;
    ``listed`` and ``values`` [C] scratch. Unchecked: callers check ``check_layout`` first."""
    c_count, h, w = image.shape
    kh, row_length = flipped.shape[0], flipped.shape[2]
    kw = row_length // o_count
    taps = flipped.reshape(-1)
    acc[:] = 0
    for iy in range(h):
        ky_lo = max(0, iy + pad_h - oh + 1)
        ky_hi = min(kh, iy + pad_h + 1)
        for ix in range(w):
            kx_lo = max(0, ix + pad_w - ow + 1)
            kx_hi = min(kw, ix + pad_w + 1)
            if kx_hi <= kx_lo:
                continue
            count = 0
            for c in range(c_count):
                v = image[c, iy, ix]
                listed[count], values[count] = c, v
                count += v != 0
            if count == 0:
                continue
            first_column = ix + pad_w - (kx_hi - 1)
            j0 = (kw - kx_hi) * o_count
            length = (kx_hi - kx_lo) * o_count
            blocks_end = length - length % BLOCK
            vectors_end = length - length % LANES
            for ky in range(ky_lo, ky_hi):
                start = ((iy + pad_h - ky) * ow + first_column) * o_count
                tap_row = ky * c_count * row_length + j0  # + c * row_length: channel c
                for j in range(0, blocks_end, BLOCK):
                    a0, a1 = vload(acc, start + j), vload(acc, start + j + LANES)
                    a2, a3 = vload(acc, start + j + 2 * LANES), vload(acc, start + j + 3 * LANES)
                    for q in range(count):
                        v, t = values[q], tap_row + listed[q] * row_length + j
                        a0 = vfma(v, vload(taps, t), a0)
                        a1 = vfma(v, vload(taps, t + LANES), a1)
                        a2 = vfma(v, vload(taps, t + 2 * LANES), a2)
                        a3 = vfma(v, vload(taps, t + 3 * LANES), a3)
                    vstore(acc, start + j, a0)
                    vstore(acc, start + j + LANES, a1)
                    vstore(acc, start + j + 2 * LANES, a2)
                    vstore(acc, start + j + 3 * LANES, a3)
                for j in range(blocks_end, vectors_end, LANES):
                    a0 = vload(acc, start + j)
                    for q in range(count):
                        a0 = vfma(values[q], vload(taps, tap_row + listed[q] * row_length + j), a0)
                    vstore(acc, start + j, a0)
                for j in range(vectors_end, length):
                    total = acc[start + j]
                    for q in range(count):
                        total = fma32(values[q], taps[tap_row + listed[q] * row_length + j], total)
                    acc[start + j] = total

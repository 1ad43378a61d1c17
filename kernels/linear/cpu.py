"""The compiled loop of ``kernels.linear`` (numba): a fully connected layer in MKL's arithmetic.

For an fp32 ``F.linear`` of more than a few rows, single-threaded, MKL (2024.2, AVX-512,
measured here for 64 to 4,096 inputs) computes each output as ``c = bias``, then for each
block of the inputs (``mkl_blocks``) ``acc = 0``, one fused multiply-add ``acc = fma(x_k, w_k,
acc)`` per input in order, and ``c = c + acc``; below a few rows it sums in another order, and
with more threads it splits the inputs otherwise above 768 of them. The blocks depend on the
number of outputs too (``mkl_blocks`` lists the layouts seen). This loop does the former
at every row count, so where the machine's MKL does (``CpuLinear`` checks it per layer and
thread count) a row's bits no longer depend on how many rows came with it.

A zero input is skipped: ``fma(0, w, acc)`` only changes the sign of a zero ``acc`` (for a
finite ``w``), and that sign cannot reach the output unless ``c`` is -0, which only a bias of
-0 starts (``CpuLinear`` leaves such layers to ``F.linear``); the spike inputs of a spiking
program are mostly zeros. The loop runs over the outputs innermost (one accumulator each,
``weight_t`` row by row), which LLVM vectorizes. numba compiles it on first use and caches the
machine code beside this file.
"""

from __future__ import annotations

import numba
import numpy as np

from ganglion.kernels import numba_cache  # noqa: F401 - before the first cache=True
from ganglion.kernels.fma import fma32

BLOCK = 384  # MKL's longest block of inputs summed into one accumulator (measured)


def mkl_blocks(inputs: int) -> list[np.ndarray]:
    """Candidate block bounds ``[0, ..., inputs]`` of MKL's sum over ``inputs``, the more
    common first (measured: one block up to 384; above that, for a few outputs, blocks of 384
    until at most 768 are left, which split in two halves, the first one larger when odd; for
    many outputs, blocks of 384 and the rest). ``CpuLinear`` keeps the one that matches."""
    halves, rest = [], inputs
    while rest > 2 * BLOCK:
        halves.append(BLOCK)
        rest -= BLOCK
    if rest > BLOCK:
        halves += [rest - rest // 2, rest // 2]
    elif rest:
        halves.append(rest)
    plain = [BLOCK] * (inputs // BLOCK) + ([inputs % BLOCK] if inputs % BLOCK else [])
    found = []
    for sizes in (halves, plain):
        bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.intp)
        if not any(np.array_equal(bounds, b) for b in found):
            found.append(bounds)
    return found


@numba.njit(cache=True, nogil=True)
def linear_loop(x, weight_t, bias, blocks, out, acc, part):  # noqa: ANN001, ANN202
    """x [M, K] -> out [M, N] = x @ weight_t + bias in the order above; ``weight_t`` [K, N]
    (the weight transposed, C-contiguous), ``blocks`` one of ``mkl_blocks(K)``, ``acc`` and
    ``part`` [N] scratch."""
    n_count = bias.shape[0]
    for m in range(x.shape[0]):
        acc[:] = bias
        for j in range(blocks.shape[0] - 1):
            part[:] = 0
            for k in range(blocks[j], blocks[j + 1]):
                v = x[m, k]
                if v == 0:
                    continue
                w = weight_t[k]
                for n in range(n_count):
                    part[n] = fma32(v, w[n], part[n])
            for n in range(n_count):
                acc[n] = acc[n] + part[n]
        out[m] = acc
    return out


def transpose_weight(weight: np.ndarray) -> np.ndarray:
    """``weight`` [N, K] -> [K, N] fp32, C-contiguous: one input's weights to every output."""
    return np.ascontiguousarray(weight.T, dtype=np.float32)

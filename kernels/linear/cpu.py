"""The compiled loop of ``kernels.linear`` (numba): a fully connected layer in MKL's arithmetic.

For an fp32 ``F.linear`` of more than a few rows, MKL (2024.2, AVX-512, up to 128 inputs
measured) computes each output as ``acc = 0``, one fused multiply-add ``acc = fma(x_k, w_k,
acc)`` per input in order, then ``acc + bias``; below a few rows it sums in another order. This
loop does the former at every row count, so where the machine's MKL does (``CpuLinear`` checks
it per layer) a row's bits no longer depend on how many rows came with it. A zero input is
skipped: ``fma(0, w, acc) == acc`` for a finite ``w`` (``acc`` starts at +0 and is never -0),
and the spike inputs of a spiking program are mostly zeros. The loop runs over the outputs
innermost (one accumulator each, ``weight_t`` row by row), which LLVM vectorizes. numba compiles
it on first use and caches the machine code beside this file.
"""

from __future__ import annotations

import numba
import numpy as np

from ganglion.kernels.fma import fma32


@numba.njit(cache=True, nogil=True)
def linear_loop(x, weight_t, bias, out, acc):  # noqa: ANN001, ANN202
    """x [M, K] -> out [M, N] = x @ weight_t + bias, in the order above; ``weight_t`` [K, N]
    (the weight transposed, C-contiguous), ``acc`` [N] scratch."""
    n_count = bias.shape[0]
    for m in range(x.shape[0]):
        acc[:] = 0
        for k in range(x.shape[1]):
            v = x[m, k]
            if v == 0:
                continue
            w = weight_t[k]
            for n in range(n_count):
                acc[n] = fma32(v, w[n], acc[n])
        row = out[m]
        for n in range(n_count):
            row[n] = acc[n] + bias[n]
    return out


def transpose_weight(weight: np.ndarray) -> np.ndarray:
    """``weight`` [N, K] -> [K, N] fp32, C-contiguous: one input's weights to every output."""
    return np.ascontiguousarray(weight.T, dtype=np.float32)

"""``kernels.simd``: a vector fused multiply-add rounds each lane as the scalar ``fma32`` does."""

import numba
import numpy as np
import pytest

from ganglion.kernels.fma import fma32
from ganglion.kernels.simd import LANES, vfma, vload, vstore


@numba.njit
def _vector_fma(scale, x, acc):  # noqa: ANN001, ANN202
    out = np.empty_like(acc)
    for j in range(0, acc.size, LANES):
        vstore(out, j, vfma(scale, vload(x, j), vload(acc, j)))
    return out


@numba.njit
def _scalar_fma(scale, x, acc):  # noqa: ANN001, ANN202
    out = np.empty_like(acc)
    for j in range(acc.size):
        out[j] = fma32(scale, x[j], acc[j])
    return out


def test_vector_fma_rounds_once_per_lane_like_the_scalar_one():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(64 * LANES).astype(np.float32)
    acc = rng.standard_normal(64 * LANES).astype(np.float32)
    scale = np.float32(1.0 / 3.0)
    got = _vector_fma(scale, x, acc)
    assert np.array_equal(got, _scalar_fma(scale, x, acc))
    assert not np.array_equal(got, scale * x + acc)  # two roundings differ somewhere


def test_a_float64_scalar_is_refused_not_rounded():
    @numba.njit
    def scaled(scale, x):  # noqa: ANN001, ANN202
        out = np.empty_like(x)
        vstore(out, 0, vfma(scale, vload(x, 0), vload(x, 0)))
        return out

    x = np.ones(LANES, np.float32)
    assert np.array_equal(scaled(np.float32(2.0), x), np.full(LANES, 3.0, np.float32))
    with pytest.raises(numba.core.errors.TypingError):
        scaled(2.0, x)  # a float64


def test_a_read_only_array_is_not_written():
    @numba.njit
    def copy_into(target, x):  # noqa: ANN001, ANN202
        vstore(target, 0, vload(x, 0))

    x = np.ones(LANES, np.float32)
    target = np.zeros(LANES, np.float32)
    copy_into(target, x)
    assert np.array_equal(target, x)
    target.flags.writeable = False
    with pytest.raises(numba.core.errors.TypingError):
        copy_into(target, x)

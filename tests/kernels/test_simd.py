"""``kernels.simd``: a vector fused multiply-add rounds each lane as the scalar ``fma32`` does."""

import numba
import numpy as np
import pytest

from ganglion.kernels.fma import fma32
from ganglion.kernels.simd import (
    LANES,
    sload,
    vfma,
    vgreater,
    vload,
    vmul,
    vpair_sums,
    vsplat,
    vstore,
    vsub,
    vwhere,
    vzip_high,
    vzip_low,
    vzip_pairs_high,
    vzip_pairs_low,
)


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


@numba.njit
def _lane_ops(a, b, flags):  # noqa: ANN001, ANN202
    out = np.empty((7, a.size), np.float32)
    for j in range(0, a.size, LANES):
        x, y = vload(a, j), vload(b, j)
        vstore(out[0], j, vsub(x, y))
        vstore(out[1], j, vmul(x, y))
        vstore(out[2], j, vgreater(x, y))
        vstore(out[3], j, vwhere(vload(flags, j), x, y))
        vstore(out[4], j, vsplat(sload(a, j + 1)))
    for j in range(0, a.size, 2 * LANES):
        vstore(out[5], j // 2, vpair_sums(vload(a, j), vload(a, j + LANES)))
    x, y = vload(a, 0), vload(b, 0)
    vstore(out[6], 0, vzip_low(x, y))
    vstore(out[6], LANES, vzip_high(x, y))
    vstore(out[6], 2 * LANES, vzip_pairs_low(x, y))
    vstore(out[6], 3 * LANES, vzip_pairs_high(x, y))
    return out


def test_lane_operations_equal_numpys_lane_by_lane():
    rng = np.random.default_rng(1)
    a = rng.standard_normal(4 * LANES).astype(np.float32)
    b = rng.standard_normal(4 * LANES).astype(np.float32)
    a[:3], b[:3] = [np.nan, 1.0, -0.0], [1.0, np.nan, 0.0]  # NaN either side; zeros of two signs
    flags = (rng.random(4 * LANES) < 0.5).astype(np.float32)
    flags[0] = np.nan  # not zero: takes the first
    out = _lane_ops(a, b, flags)
    np.testing.assert_array_equal(out[0], a - b)
    np.testing.assert_array_equal(out[1], a * b)
    assert np.array_equal(out[2], (a > b).astype(np.float32))  # NaN compares false
    np.testing.assert_array_equal(out[3], np.where(flags != 0, a, b))
    np.testing.assert_array_equal(out[4], np.repeat(a[1::LANES], LANES))
    np.testing.assert_array_equal(out[5][: 2 * LANES], a[0::2] + a[1::2])
    assert np.signbit(out[0][2]) == np.signbit(a[2] - b[2])
    x, y = a[:LANES], b[:LANES]
    zipped = np.stack([x, y], axis=1).reshape(-1)  # x0 y0 x1 y1 ...
    pairs = np.stack([x.reshape(-1, 2), y.reshape(-1, 2)], axis=1).reshape(-1)  # x0 x1 y0 y1 ..
    np.testing.assert_array_equal(out[6][: 2 * LANES], zipped)
    np.testing.assert_array_equal(out[6][2 * LANES : 3 * LANES], pairs[:LANES])
    np.testing.assert_array_equal(out[6][3 * LANES :], pairs[LANES:])

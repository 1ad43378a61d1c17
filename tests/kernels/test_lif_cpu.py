"""The compiled CPU loops (``kernels/lif/cpu.py``, numba) against their PyTorch references:
bit-exact spikes and final states, the time-ordered decode sum, and average pooling."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganglion.kernels.lif import cpu, lif_fixed_scan, lif_scan
from ganglion.kernels.lif.reference import lif_fixed_scan_reference, lif_scan_reference
from ganglion.models.spiking.layers import tiled_mean

SHAPES = [(1, 1, 1), (6, 1, 37), (5, 3, 50), (19, 2, 45), (7, 4, 100)]  # 100: groups of 32, a tail


def _float_args(t: int, b: int, n: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(t * 1000 + b * 100 + n)
    current = torch.randn(t, b, n, generator=g)
    v0 = torch.randn(b, n, generator=g)
    decay = torch.rand(n, generator=g)
    threshold = torch.rand(n, generator=g) + 0.5
    bias = torch.randn(n, generator=g) * 0.1
    v_reset = torch.randn(n, generator=g) * 0.1
    return current, v0, decay, threshold, bias, v_reset


def _fixed_args(t: int, b: int, n: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(t * 1000 + b * 100 + n)
    a_in = torch.randint(-(2**15), 2**15, (t, b, n), generator=g, dtype=torch.int32)
    u0 = torch.randint(-(2**23) + 1, 2**23, (b, n), generator=g, dtype=torch.int32)
    v0 = torch.randint(-(2**23) + 1, 2**23, (b, n), generator=g, dtype=torch.int32)
    du = torch.randint(0, 4096, (n,), generator=g)
    dv = torch.randint(0, 4096, (n,), generator=g)
    bias_mant = torch.randint(-4096, 4096, (n,), generator=g)
    bias_exp = torch.randint(0, 8, (n,), generator=g)
    vth = torch.randint(0, 2**17, (n,), generator=g) // torch.randint(1, 2**12, (n,), generator=g)
    return a_in, u0, v0, du, dv, bias_mant, bias_exp, vth


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-N{}".format(*s))
def test_compiled_lif_scan_is_bit_exact_with_reference(shape, reset):
    args = _float_args(*shape)
    ref_spikes, ref_v = lif_scan_reference(*args, reset=reset)
    spikes, v = cpu.lif_scan_cpu(*args, reset=reset)
    assert ref_spikes.sum() > 0  # the case exercises spikes and resets
    assert torch.equal(spikes, ref_spikes)
    assert torch.equal(v, ref_v)


def test_compiled_lif_scan_reads_a_current_expanded_over_time():
    current, v0, *params = _float_args(7, 3, 20)
    expanded = current[:1].expand(7, 3, 20)
    got = cpu.lif_scan_cpu(expanded, v0, *params)
    want = lif_scan_reference(expanded.contiguous(), v0, *params)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-N{}".format(*s))
def test_compiled_lif_fixed_scan_is_bit_exact_with_reference(shape):
    args = _fixed_args(*shape)
    ref = lif_fixed_scan_reference(*args)
    out = cpu.lif_fixed_scan_cpu(*args)
    for name, r, o in zip(("spikes", "u", "v"), ref, out, strict=True):
        assert o.dtype == r.dtype, name
        assert torch.equal(o, r), name


def test_dispatch_uses_the_reference_when_kernels_are_off(monkeypatch):
    args = _float_args(5, 2, 9)
    on = lif_scan(*args)
    monkeypatch.setenv("GANGLION_KERNELS", "0")
    off = lif_scan(*args)
    assert all(torch.equal(a, b) for a, b in zip(on, off, strict=True))
    fixed = _fixed_args(5, 2, 9)
    assert all(
        torch.equal(a, b)
        for a, b in zip(lif_fixed_scan(*fixed), lif_fixed_scan_reference(*fixed), strict=True)
    )


def test_time_sum_adds_steps_in_time_order():
    values = torch.randn(9, 4, 6) * torch.logspace(-6, 6, 6)  # rounding depends on the order
    total = torch.randn(4, 6)
    want = total.clone()
    for t in range(values.shape[0]):
        want.add_(values[t])
    cpu.time_sum_into(values, total)
    assert torch.equal(total, want)


@pytest.mark.parametrize(
    "shape,kernel",
    [
        ((4, 3, 8, 8), (2, 2)),
        ((2, 5, 7, 9), (3, 2)),
        ((3, 2, 7, 5), (2, 2)),
        ((64, 32, 8, 9), (2, 2)),
    ],
    ids=["2x2", "3x2-odd", "2x2-odd", "2x2-large"],
)
def test_tiled_mean_equals_avg_pool2d_bit_for_bit(shape, kernel):
    x = torch.randn(*shape) * torch.logspace(-3, 3, shape[-1])
    want = F.avg_pool2d(x, kernel, kernel)
    assert torch.equal(cpu.tiled_mean(x, kernel), want)
    assert torch.equal(tiled_mean(x, kernel), want)


@pytest.mark.parametrize(
    "image",
    [(4, 8, 8), (3, 7, 5), (1, 2, 2), (2, 4, 32), (5, 6, 10), (4, 6, 8), (3, 6, 8), (1, 2, 24)],
    # even, lanes: lines a vector wide, pooled in registers (lanes: groups across channels);
    # wide: lines of vectors; tail: N/2 % LANES; half: a vector wide, but an odd number of
    # line pairs (N/4 windows not a multiple of LANES)
    ids=["even", "odd", "one", "wide", "tail", "lanes", "half-8", "half-24"],
)
@pytest.mark.parametrize("t_step", [0, 1], ids=["constant", "per-step"])
@pytest.mark.parametrize("zero_reset", [False, True], ids=["subtract", "zero"])
def test_scan_then_pool_in_one_pass_equals_the_two_loops(image, t_step, zero_reset):
    """The fused loop's pooled spikes and final potentials are the scan's, then the pool's."""
    from ganglion.kernels.scan_loops import float_scan_loop, float_scan_pool_loop

    steps, batch, n = 6, 3, math.prod(image)
    g = torch.Generator().manual_seed(3)
    current = (torch.rand(steps if t_step else 1, batch, n, generator=g) * 2).numpy()
    v0 = (torch.rand(batch, n, generator=g) * 0.5).numpy()
    gain, decay, bias, v_reset = (torch.rand(n, generator=g).numpy() for _ in range(4))
    threshold = (torch.rand(n, generator=g) + 0.5).numpy()
    args = (current, t_step, steps, gain, v0, decay, threshold, bias, v_reset, zero_reset)
    spikes, v = float_scan_loop(*args)
    pooled, v_fused = float_scan_pool_loop(*args, image)
    c, h, w = image
    want = F.avg_pool2d(torch.from_numpy(spikes).reshape(steps * batch, c, h, w), 2, 2)
    assert 0 < spikes.sum() < spikes.size  # some neurons fire, not all
    assert np.array_equal(pooled, want.numpy().reshape(steps, batch, c, h // 2, w // 2))
    assert np.array_equal(v_fused, v) and not np.shares_memory(v_fused, v0)


def test_scan_loops_refuse_arrays_that_do_not_fit_together():
    """The compiled loops index without bounds checks: they check their arrays first."""
    from ganglion.kernels.scan_loops import float_scan_loop, float_scan_pool_loop, float_step_loop

    n, batch = 16, 2
    params = [np.ones(n, np.float32) for _ in range(5)]
    current, v0 = np.ones((3, batch, n), np.float32), np.zeros((batch, n), np.float32)
    args = (current, 1, 3, params[0], v0, *params[1:], False)
    float_scan_loop(*args)
    with pytest.raises(ValueError, match="image"):
        float_scan_pool_loop(*args, (4, 4, 4))  # 64 neurons in the image, 16 in v0
    with pytest.raises(ValueError, match="fewer steps"):
        float_scan_loop(current, 1, 4, params[0], v0, *params[1:], False)
    with pytest.raises(ValueError, match="parameter"):
        float_scan_loop(current, 1, 3, params[0][:8], v0, *params[1:], False)
    with pytest.raises(ValueError, match="current"):
        float_scan_loop(current, 1, 3, params[0], np.zeros((batch + 1, n), np.float32),
                        *params[1:], False)  # fmt: skip
    with pytest.raises(ValueError, match="parameter"):
        float_step_loop(current[0], v0, params[0], params[1][:8], *params[2:], False)

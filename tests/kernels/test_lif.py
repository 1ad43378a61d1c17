"""LIF kernels against their references, and the fixed-point model against hand-derived
Loihi 2 arithmetic."""

import pytest
import torch

from ganglion.kernels.launch import Launch
from ganglion.kernels.lif import lif_fixed_scan, lif_scan
from ganglion.kernels.lif.reference import lif_fixed_scan_reference, lif_scan_reference
from ganglion.kernels.lif.triton import lif_fixed_scan_triton, lif_scan_triton
from ganglion.kernels.testing import kernel_test_device

DEVICE = kernel_test_device()  # "cuda" when the suite runs compiled (TRITON_INTERPRET=0)

# [T, B, N]: 1400 lanes span several blocks; T = 19 spans several time tiles and ends mid-tile
SHAPES = [(1, 1, 1), (6, 1, 37), (5, 3, 50), (3, 2, 700), (19, 2, 45)]
LAUNCHES = [Launch(32, 1, 1), Launch(16, 2, 1), Launch(64, 16, 2)]


def _float_args(t: int, b: int, n: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(t * 1000 + b * 100 + n)
    current = torch.randn(t, b, n, generator=g).to(dtype)
    v0 = torch.randn(b, n, generator=g)
    decay = torch.rand(n, generator=g)
    threshold = torch.rand(n, generator=g) + 0.5
    bias = torch.randn(n, generator=g) * 0.1
    v_reset = torch.randn(n, generator=g) * 0.1
    return tuple(x.to(DEVICE) for x in (current, v0, decay, threshold, bias, v_reset))


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
    return tuple(x.to(DEVICE) for x in (a_in, u0, v0, du, dv, bias_mant, bias_exp, vth))


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-N{}".format(*s))
def test_lif_scan_kernel_matches_reference(shape, dtype, reset):
    args = _float_args(*shape, dtype)
    ref_spikes, ref_v = lif_scan_reference(*args, reset=reset)
    spikes, v = lif_scan_triton(*args, reset=reset)
    assert spikes.dtype == dtype and v.dtype == torch.float32
    assert torch.equal(spikes, ref_spikes)
    assert torch.equal(v, ref_v)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-N{}".format(*s))
def test_lif_fixed_scan_kernel_matches_reference(shape):
    args = _fixed_args(*shape)
    ref = lif_fixed_scan_reference(*args)
    out = lif_fixed_scan_triton(*args)
    for name, r, o in zip(("spikes", "u", "v"), ref, out, strict=True):
        assert o.dtype == r.dtype, name
        assert torch.equal(o, r), name


@pytest.mark.parametrize("launch", LAUNCHES, ids=str)
def test_lif_kernels_match_reference_for_any_launch_shape(launch):
    args = _float_args(21, 3, 40, torch.float16)
    got, want = lif_scan_triton(*args, launch=launch), lif_scan_reference(*args)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    args = _fixed_args(21, 3, 40)
    got, want = lif_fixed_scan_triton(*args, launch=launch), lif_fixed_scan_reference(*args)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("use_kernel", [False, True], ids=["reference", "kernel"])
def test_lif_scan_equals_repeated_steps(use_kernel):
    current, v, *params = _float_args(7, 2, 33, torch.float32)
    spikes, v_final = lif_scan(current, v, *params, use_kernel=use_kernel)
    for t in range(current.shape[0]):
        s_t, v = lif_scan(current[t : t + 1], v, *params, use_kernel=use_kernel)
        assert torch.equal(s_t[0], spikes[t])
    assert torch.equal(v, v_final)


@pytest.mark.parametrize("use_kernel", [False, True], ids=["reference", "kernel"])
def test_lif_fixed_scan_equals_repeated_steps(use_kernel):
    a_in, u, v, *params = _fixed_args(9, 2, 21)
    spikes, u_final, v_final = lif_fixed_scan(a_in, u, v, *params, use_kernel=use_kernel)
    for t in range(a_in.shape[0]):
        s_t, u, v = lif_fixed_scan(a_in[t : t + 1], u, v, *params, use_kernel=use_kernel)
        assert torch.equal(s_t[0], spikes[t])
    assert torch.equal(u, u_final) and torch.equal(v, v_final)


def _trunc_scale(x: int, keep: int) -> int:
    """``x * keep / 4096`` rounded toward zero, in plain Python integers."""
    prod = x * keep
    return -((-prod) >> 12) if prod < 0 else prod >> 12


def _loihi_neuron_step(a: int, u: int, v: int, du: int, dv: int, bias: int, vth: int):
    """One neuron, one step, as derived from Lava's ``PyLifModelBitAcc`` (see lif/README.md)."""
    u = _trunc_scale(u, 4096 - (du + 1)) + a * 64
    if u > 2**23:
        u -= 2**24
    elif u <= -(2**23):
        u += 2**24
    v = min(max(_trunc_scale(v, 4096 - dv) + u + bias, -(2**23) + 1), 2**23 - 1)
    spike = v > vth * 64
    return int(spike), u, 0 if spike else v


def test_fixed_point_arithmetic_by_hand():
    assert _loihi_neuron_step(0, -5, 0, 0, 0, 0, 10**6)[1] == -4  # trunc(-4.9988) toward zero
    assert _loihi_neuron_step(2**15 - 1, 2**23 - 1, 0, 0, 0, 0, 10**6)[1] < 0  # 24-bit wrap
    assert _loihi_neuron_step(0, 2**23, 2**23 - 1, 4095, 0, 0, 2**17)[2] == 2**23 - 1  # clip
    for a, u, v, du, dv in [
        (7, -5, 3, 0, 0),
        (-300, 2**22, -(2**22), 4095, 1),
        (2**15 - 1, 2**23 - 1, 0, 0, 0),
    ]:
        ref = lif_fixed_scan(
            torch.tensor([[[a]]], dtype=torch.int32),
            torch.tensor([[u]], dtype=torch.int32),
            torch.tensor([[v]], dtype=torch.int32),
            *(torch.tensor([x]) for x in (du, dv, 0, 0, 2**16)),
        )
        spike, u1, v1 = _loihi_neuron_step(a, u, v, du, dv, 0, 2**16)
        assert [int(x) for x in ref] == [spike, u1, v1]


def test_tiny_network_matches_hand_derived_arithmetic():
    """3 inputs -> Dense -> 4 LIF -> Dense -> 2 LIF, stepped one timestep at a time."""
    g = torch.Generator().manual_seed(3)
    w1 = torch.randint(-128, 128, (4, 3), generator=g)
    w2 = torch.randint(-128, 128, (2, 4), generator=g)
    layers = [  # du, dv, bias_mant, bias_exp, vth per neuron
        ([4095, 2000, 0, 100], [0, 300, 4095, 10], [0, 5, -7, 100], [0, 1, 6, 2], [10, 40, 3, 200]),
        ([4095, 50], [100, 0], [1, 0], [7, 0], [20, 1]),
    ]
    inputs = torch.rand(25, 3, generator=g) < 0.4
    ours = [[torch.zeros(1, len(p[0]), dtype=torch.int32)] * 2 for p in layers]
    hand = [[[0] * len(p[0]), [0] * len(p[0])] for p in layers]
    for x in inputs:
        a_ours = (w1 @ x.long()).int()
        a_hand = [int(a) for a in a_ours]
        for layer, (params, w) in enumerate(zip(layers, (w2, None), strict=True)):
            tensors = [torch.tensor(p) for p in params]
            s, u, v = lif_fixed_scan(a_ours.view(1, 1, -1), *ours[layer], *tensors)
            ours[layer] = [u, v]
            spikes_hand = []
            for i, (du, dv, mant, exp, vth) in enumerate(zip(*params, strict=True)):
                u_h, v_h = hand[layer][0][i], hand[layer][1][i]
                spike, hand[layer][0][i], hand[layer][1][i] = _loihi_neuron_step(
                    a_hand[i], u_h, v_h, du, dv, mant << exp, vth
                )
                spikes_hand.append(spike)
            assert s.view(-1).tolist() == spikes_hand
            assert u.view(-1).tolist() == hand[layer][0] and v.view(-1).tolist() == hand[layer][1]
            if w is not None:
                a_ours = (w @ s.view(-1).long()).int()
                a_hand = [
                    sum(int(w[j, i]) * spikes_hand[i] for i in range(len(spikes_hand)))
                    for j in range(w.shape[0])
                ]


def test_lif_rejects_bad_shapes():
    current, v0, *params = _float_args(3, 2, 5, torch.float32)
    with pytest.raises(ValueError, match="expected v0 of shape"):
        lif_scan(current, v0[:, :4], *params)
    with pytest.raises(ValueError, match="expected reset"):
        lif_scan(current, v0, *params, reset="hard")
    a_in, u0, v0i, du, *rest = _fixed_args(3, 2, 5)
    with pytest.raises(ValueError, match="expected du in"):
        lif_fixed_scan(a_in, u0, v0i, du + 4096, *rest)
    with pytest.raises(ValueError, match="expected a_in of dtype"):
        lif_fixed_scan(a_in.float(), u0, v0i, du, *rest)

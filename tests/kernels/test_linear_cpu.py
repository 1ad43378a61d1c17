"""The compiled fully connected layer of small CPU batches (``kernels/linear``) against
``F.linear``: bit for bit with its large calls where it takes a call, the same bits at every row
count (the padding where it does not), and ``F.linear`` itself wherever the loop must not run."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganglion.kernels.lif import cpu_scan_available
from ganglion.kernels.linear import CPU_LINEAR_MAX_MACS
from ganglion.models.spiking.layers import Affine

# (out, in): the digits MLP's three layers, the CNN's read-out, odd and wide sizes
SHAPES = [(128, 64), (64, 128), (10, 64), (7, 33), (3, 512)]


def _layer(out: int, inp: int, seed: int = 0) -> Affine:
    g = torch.Generator().manual_seed(seed)
    return Affine(torch.randn(out, inp, generator=g), torch.randn(out, generator=g))


def _spikes(rows: int, inp: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, inp, generator=g) * (torch.rand(rows, inp, generator=g) < 0.3)


@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
def test_loop_equals_large_calls_where_it_runs_and_is_close_everywhere(shape):
    out, inp = shape
    layer = _layer(out, inp)
    x = _spikes(300, inp)
    loop = layer.cpu_loop()
    want = F.linear(x, layer.weight, layer.bias)
    for blocks in loop.candidates:
        np.testing.assert_allclose(loop.run(x.numpy(), blocks), want.numpy(), rtol=1e-5, atol=1e-5)
    blocks = loop._matching_blocks()
    if blocks is not None:
        assert np.array_equal(loop.run(x.numpy(), blocks), want.numpy())


@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
def test_a_row_gets_the_bits_of_a_large_call_at_every_row_count(shape):
    """MKL sums a row in another order in a call of a few rows (AVX-512): the layer gives a
    row the bits of a large call alone, in a few rows, and time-major, whichever path it takes
    (the loop, or zero rows padded where the loop does not equal MKL)."""
    out, inp = shape
    layer = _layer(out, inp)
    x = _spikes(300, inp)
    with torch.inference_mode():
        whole = F.linear(x, layer.weight, layer.bias)
        for rows in range(1, 21):
            assert torch.equal(layer.forward(x[:rows]), whole[:rows]), rows
            from_numpy = layer.numpy_forward(x[:rows].numpy())  # None: the loop does not take it
            assert from_numpy is None or np.array_equal(from_numpy, whole[:rows].numpy()), rows
        time_major = layer.forward(x[:6].reshape(3, 2, inp))
    assert torch.equal(time_major, whole[:6].reshape(3, 2, out))


def test_linear_runs_where_the_loop_must_not():
    layer = _layer(64, 128)
    loop = layer.cpu_loop()
    x = _spikes(2, 128)
    assert loop.numpy(x.numpy()) is not None or loop.blocks[torch.get_num_threads()] is None
    big = _spikes(CPU_LINEAR_MAX_MACS // layer.weight.numel() + 1, 128)
    assert loop.numpy(big.numpy()) is None  # above the size where MKL wins
    assert loop.numpy(x.double().numpy()) is None
    grad = x.clone().requires_grad_(True)
    y = layer.forward(grad)  # autograd records F.linear
    assert y.grad_fn is not None
    y.sum().backward()
    assert grad.grad is not None and grad.grad.abs().sum() > 0
    bad = Affine(layer.weight.clone(), layer.bias.clone())
    bad.weight[0, 0] = float("inf")
    assert not bad.cpu_loop().usable  # 0·inf is NaN in F.linear; the loop skips zeros
    want = F.linear(torch.cat([x, torch.zeros(62, 128)]), bad.weight, bad.bias)[:2]
    assert want.isnan().any()  # a large call's bits: the two rows are padded
    torch.testing.assert_close(bad.forward(x), want, rtol=0, atol=0, equal_nan=True)


def test_kernels_switch_turns_the_loop_off(monkeypatch):
    layer = _layer(10, 64)
    x = _spikes(40, 64)
    whole = F.linear(x, layer.weight, layer.bias)
    monkeypatch.setitem(os.environ, "GANGLION_KERNELS", "0")
    assert not cpu_scan_available()
    assert torch.equal(layer.forward(x[:1]), whole[:1])  # padded, not the loop


def test_changed_weights_are_prepared_again():
    layer = _layer(16, 24)
    x = _spikes(3, 24)
    layer.forward(x)
    with torch.no_grad():
        layer.weight.mul_(2.0)  # in place: the tensor's version moves
    np.testing.assert_allclose(
        layer.forward(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5
    )
    layer.weight = torch.zeros_like(layer.weight)  # a new tensor
    assert torch.equal(layer.forward(x), layer.bias.expand(3, -1))


@pytest.mark.parametrize("shape", [(16, 385), (16, 512), (16, 784), (512, 1024), (16, 2048)])
def test_wide_layers_take_the_blocked_loop_at_one_thread(shape):
    """Above 384 inputs MKL sums blocks of them (``cpu.mkl_blocks``): single-threaded, the loop
    does the same, so a wide layer's one row is not padded (16 rows cost 5x one)."""
    layer = _layer(*shape)
    x = _spikes(300, shape[1])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert layer.cpu_loop()._matching_blocks() is not None
        with torch.inference_mode():
            whole = F.linear(x, layer.weight, layer.bias)
            assert np.array_equal(layer.numpy_forward(x[:1].numpy()), whole[:1].numpy())
            assert torch.equal(layer.forward(x[:3]), whole[:3])
    finally:
        torch.set_num_threads(threads)


def test_what_torch_refuses_or_allows_stays_so():
    layer = _layer(8, 8)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        layer.forward(torch.randn(4, 6))  # a wrong width is not reshaped into rows
    assert layer.forward(torch.zeros(0, 8)).shape == (0, 8)
    assert layer.forward(torch.randn(8)).shape == (8,)
    with torch.inference_mode():  # inference tensors keep no version counter: torch runs them
        frozen = _layer(8, 8)
    assert not frozen.cpu_loop().usable
    x = _spikes(3, 8)
    torch.testing.assert_close(frozen.forward(x), F.linear(x, frozen.weight, frozen.bias))


def test_a_negative_zero_bias_is_left_to_torch():
    """The loop skips zero inputs, whose multiply-adds can only flip a zero sum's sign; a bias
    of -0 would show that sign, so such a layer takes F.linear (padded)."""
    weight = torch.randn(4, 64)
    weight[:, 0], weight[:, 1] = -1e-30, 1.0
    layer = Affine(weight, torch.full((4,), -0.0))
    assert not layer.cpu_loop().usable
    x = torch.zeros(300, 64)
    x[:, 0] = 1e-30  # the product underflows to -0
    whole = F.linear(x, layer.weight, layer.bias)
    assert torch.equal(torch.signbit(layer.forward(x[:1])), torch.signbit(whole[:1]))

"""The compiled convolution of small CPU batches (``kernels/conv``) against ``F.conv2d``: bit
for bit where it takes a call, the same bits at every batch size, and ``F.conv2d`` itself
wherever the loop must not run."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganglion.kernels.lif import cpu_scan_available
from ganglion.models.spiking.layers import Conv2d

# (out, in, kernel, padding, H, W): the digits CNN's two convolutions, odd sizes and paddings
SHAPES = [
    (16, 1, 3, (1, 1), 8, 8),
    (32, 16, 3, (1, 1), 4, 4),
    (8, 3, 3, (0, 1), 9, 7),
    (6, 4, 5, (2, 2), 6, 6),
    (5, 2, 2, (0, 0), 5, 3),
    (40, 9, 3, (1, 1), 5, 5),  # runs of 40, 80, 120: register blocks, then single vectors
]


def _layer(out: int, inp: int, k: int, padding: tuple[int, int], seed: int = 0) -> Conv2d:
    g = torch.Generator().manual_seed(seed)
    return Conv2d(
        torch.randn(out, inp, k, k, generator=g), torch.randn(out, generator=g), (1, 1), padding
    )


def _spikes(n: int, c: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g) * (torch.rand(n, c, h, w, generator=g) < 0.3)


@pytest.mark.parametrize("shape", SHAPES, ids=[str(s[:4]) for s in SHAPES])
def test_loop_equals_conv2d_where_it_runs_and_is_close_everywhere(shape):
    out, inp, k, padding, h, w = shape
    layer = _layer(out, inp, k, padding)
    x = _spikes(9, inp, h, w)
    loop = layer.cpu_loop()
    got = loop.run(x.numpy())
    want = F.conv2d(x, layer.weight, layer.bias, 1, padding)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
    if loop._matches_torch((inp, h, w)):
        assert np.array_equal(got, want.numpy())
        assert torch.equal(layer.forward(x), want)


@pytest.mark.parametrize("shape", SHAPES[:2], ids=["conv_0", "conv_4"])
def test_one_row_gives_the_bits_of_a_larger_batch(shape):
    """F.conv2d switches kernels at one row (its results differ in the last bits); the layer
    gives a row the same bits alone as inside a batch."""
    out, inp, k, padding, h, w = shape
    layer = _layer(out, inp, k, padding)
    x = _spikes(6, inp, h, w)
    with torch.inference_mode():
        whole = layer.forward(x)
        for i in range(x.shape[0]):
            assert torch.equal(layer.forward(x[i : i + 1]), whole[i : i + 1])


def test_conv2d_runs_where_the_loop_must_not():
    layer = _layer(32, 16, 3, (1, 1))
    loop = layer.cpu_loop()
    x = _spikes(2, 16, 4, 4)
    assert loop(x) is not None or not loop.shapes[(16, 4, 4)]
    big = _spikes(loop.sizes((16, 4, 4)).max_macs // loop._macs((16, 4, 4)) + 1, 16, 4, 4)
    assert loop(big) is None  # above the size where oneDNN wins
    assert loop(x.double()) is None
    grad = x.clone().requires_grad_(True)
    assert loop(grad) is None  # autograd records F.conv2d
    y = layer.forward(grad)
    y.sum().backward()
    assert grad.grad is not None and grad.grad.abs().sum() > 0
    with torch.inference_mode():
        assert loop(grad) is not None or not loop.shapes[(16, 4, 4)]
    strided = Conv2d(layer.weight, layer.bias, (2, 2), (1, 1))
    assert not strided.cpu_loop().usable
    assert torch.equal(strided.forward(x), F.conv2d(x, layer.weight, layer.bias, 2, (1, 1)))
    bad = Conv2d(layer.weight.clone(), layer.bias.clone(), (1, 1), (1, 1))
    bad.weight[0, 0, 0, 0] = float("inf")
    assert bad.cpu_loop()(x) is None  # 0·inf is NaN in F.conv2d; the loop skips zeros
    want = F.conv2d(x, bad.weight, bad.bias, 1, (1, 1))
    assert want.isnan().any()
    torch.testing.assert_close(bad.forward(x), want, rtol=0, atol=0, equal_nan=True)


def test_only_register_blocks_and_one_channel_keep_a_loop_on_large_calls():
    from ganglion.kernels.conv.layer import (
        BLOCKED_CONV_MAX_MACS,
        CPU_CONV_MAX_MACS,
        ONE_CHANNEL_MAX_MACS,
    )

    assert _layer(32, 16, 3, (1, 1)).cpu_loop().sizes((16, 4, 4)).max_macs == BLOCKED_CONV_MAX_MACS
    assert (
        _layer(16, 9, 3, (1, 1)).cpu_loop().sizes((9, 4, 4)).max_macs == CPU_CONV_MAX_MACS
    )  # 16 % 32
    assert (
        _layer(32, 4, 3, (1, 1)).cpu_loop().sizes((4, 4, 4)).max_macs == CPU_CONV_MAX_MACS
    )  # 4 in
    assert _layer(32, 4, 3, (1, 1)).cpu_loop().sizes((4, 8, 8)).max_macs == CPU_CONV_MAX_MACS
    assert _layer(16, 1, 3, (1, 1)).cpu_loop().sizes((1, 8, 8)).max_macs == ONE_CHANNEL_MAX_MACS
    assert (
        _layer(16, 1, 3, (1, 1)).cpu_loop().sizes((1, 4, 4)).max_macs == CPU_CONV_MAX_MACS
    )  # 4 < 8
    assert (
        _layer(4, 1, 3, (1, 1)).cpu_loop().sizes((1, 8, 8)).max_macs == CPU_CONV_MAX_MACS
    )  # 4 out


# (out, in, kernel, padding, H, W) of the columns loop: whole vectors of columns, an overlapping
# last vector, channels in blocks of 8 and one by one, wide kernels
COLUMN_SHAPES = [
    (16, 1, 3, (1, 1), 8, 8),
    (12, 2, 3, (1, 1), 6, 11),  # 12 channels, 11 columns: a last block and vector overlap
    (8, 3, 5, (2, 2), 7, 13),
    (21, 4, 2, (0, 1), 5, 17),
    (8, 1, 1, (0, 0), 3, 8),
]


@pytest.mark.parametrize("shape", COLUMN_SHAPES, ids=[str(s[:4]) for s in COLUMN_SHAPES])
@pytest.mark.parametrize("density", [1.0, 0.3])
def test_the_columns_loop_gives_the_bits_of_the_input_loop(shape, density):
    """Both loops add every output's taps in (ky, kx, c) order: the same bits on dense images
    (with zeros of both signs) and on spikes, and ``F.conv2d``'s where the layer checked it."""
    from ganglion.kernels.conv.columns import conv2d_columns_loop
    from ganglion.kernels.conv.cpu import conv2d_loop

    out, inp, k, (ph, pw), h, w = shape
    layer = _layer(out, inp, k, (ph, pw))
    loop = layer.cpu_loop()
    assert loop.sizes((inp, h, w)).by_columns
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, inp, h, w, generator=g) * (torch.rand(5, inp, h, w, generator=g) < density)
    x = x.numpy()
    x[0, 0, 0, :2] = [0.0, -0.0]
    oh, ow = h + 2 * ph - k + 1, w + 2 * pw - k + 1
    by_inputs = np.empty((5, out, oh, ow), np.float32)
    conv2d_loop(
        x, loop.flipped, loop.bias_array, ph, pw, by_inputs, np.empty(oh * ow * out, np.float32)
    )
    by_columns = np.full_like(by_inputs, np.nan)
    padded = np.empty((inp, h + 2 * ph, w + 2 * pw), np.float32)
    conv2d_columns_loop(x, loop.flipped, loop.bias_array, ph, pw, by_columns, padded)
    assert np.array_equal(by_columns, by_inputs)
    assert np.array_equal(loop.run(x), by_inputs)
    want = F.conv2d(torch.from_numpy(x), layer.weight, layer.bias, 1, (ph, pw)).numpy()
    np.testing.assert_allclose(by_columns, want, rtol=1e-5, atol=1e-5)
    if loop._matches_torch((inp, h, w)):
        assert np.array_equal(by_columns, want)


def test_the_columns_loop_refuses_what_does_not_fit():
    from ganglion.kernels.conv.columns import conv2d_columns_loop
    from ganglion.kernels.conv.cpu import flip_weight

    weight, bias = np.ones((8, 2, 3, 3), np.float32), np.zeros(8, np.float32)
    x = np.ones((2, 2, 6, 9), np.float32)
    flipped = flip_weight(weight)
    out, padded = np.empty((2, 8, 6, 9), np.float32), np.empty((2, 8, 11), np.float32)
    conv2d_columns_loop(x, flipped, bias, 1, 1, out, padded)
    assert np.array_equal(out[0, 0, 1, 1:8], np.full(7, 18, np.float32))  # 3x3 taps of 2 ones
    with pytest.raises(ValueError, match="padded"):
        conv2d_columns_loop(x, flipped, bias, 1, 1, out, np.empty((2, 8, 10), np.float32))
    narrow = np.ones((2, 2, 6, 7), np.float32)  # 7 output columns: less than a vector
    with pytest.raises(ValueError, match="padded"):
        conv2d_columns_loop(
            narrow, flipped, bias, 1, 1, out[..., :7].copy(), padded[..., :9].copy()
        )
    few = flip_weight(np.ones((7, 2, 3, 3), np.float32))  # 7 output channels: less than a block
    with pytest.raises(ValueError, match="padded"):
        conv2d_columns_loop(x, few, bias[:7], 1, 1, out[:, :7].copy(), padded)
    with pytest.raises(ValueError, match="output sides"):
        conv2d_columns_loop(x, flipped, bias, 0, 1, out, padded)


@pytest.mark.parametrize(
    "shape", [(16, 5, 3, (1, 1), 4, 4), (8, 3, 3, (0, 0), 6, 10)], ids=["digits", "no-padding"]
)
@pytest.mark.parametrize("zero_reset", [False, True], ids=["subtract", "zero"])
def test_scan_pool_equals_the_convolution_then_the_scan_then_the_pool(shape, zero_reset):
    from ganglion.kernels.scan_loops import float_scan_loop

    out, inp, k, padding, h, w = shape
    layer = _layer(out, inp, k, padding)
    steps, batch = 7, 3
    x = _spikes(steps * batch, inp, h, w).abs().numpy()
    conv = F.conv2d(torch.from_numpy(x), layer.weight, layer.bias, 1, padding).numpy()
    oh, ow = conv.shape[2:]
    n = out * oh * ow
    g = torch.Generator().manual_seed(2)
    params = tuple(torch.rand(n, generator=g).numpy() for _ in range(5))  # gain ... v_reset
    v0 = torch.rand(batch, n, generator=g).numpy()
    current = conv.reshape(steps, batch, n)
    spikes, v = float_scan_loop(current, 1, steps, params[0], v0, *params[1:], zero_reset)
    want = F.avg_pool2d(torch.from_numpy(spikes).reshape(-1, out, oh, ow), 2, 2)
    loop = layer.cpu_loop()
    done = loop.scan_pool(x.reshape(steps, batch, inp, h, w), params, v0, zero_reset)
    assert loop._matches_torch((inp, h, w)) and done is not None
    assert 0 < spikes.sum() < spikes.size
    assert np.array_equal(done[0], want.numpy().reshape(steps, batch, out, oh // 2, ow // 2))
    assert np.array_equal(done[1], v) and not np.shares_memory(done[1], v0)


def test_scan_pool_declines_what_it_does_not_suit():
    steps, batch = 2, 2
    for out, h, w in [(12, 4, 4), (16, 5, 4)]:  # channels not a multiple of 8; an odd side
        layer = _layer(out, 3, 3, (1, 1))
        x = _spikes(steps * batch, 3, h, w).numpy().reshape(steps, batch, 3, h, w)
        n = out * h * w
        params = tuple(np.ones(n, np.float32) for _ in range(5))
        assert (
            layer.cpu_loop().scan_pool(x, params, np.zeros((batch, n), np.float32), False) is None
        )
    layer = _layer(16, 3, 3, (1, 1))
    x = _spikes(steps * batch, 3, 4, 4).numpy().reshape(steps, batch, 3, 4, 4)
    short = tuple(np.ones(8, np.float32) for _ in range(5))  # not one per neuron
    assert layer.cpu_loop().scan_pool(x, short, np.zeros((batch, 256), np.float32), False) is None


def test_the_compiled_loops_refuse_arrays_that_do_not_fit_together():
    """They index without bounds checks: they check their arrays first."""
    from ganglion.kernels.conv.cpu import conv2d_loop, flip_weight
    from ganglion.kernels.conv.scan_pool import conv_scan_pool_loop

    weight = np.ones((8, 3, 3, 3), np.float32)
    flipped, bias = flip_weight(weight), np.zeros(8, np.float32)
    x = np.ones((2, 3, 4, 4), np.float32)
    conv2d_loop(
        x, flipped, bias, 1, 1, np.empty((2, 8, 4, 4), np.float32), np.empty(128, np.float32)
    )
    with pytest.raises(ValueError, match="output sides"):
        conv2d_loop(x, flipped, bias, 1, 1, np.empty((2, 8, 5, 5), np.float32),
                    np.empty(200, np.float32))  # fmt: skip
    with pytest.raises(ValueError, match="weights"):
        conv2d_loop(np.ones((2, 5, 4, 4), np.float32), flipped, bias, 1, 1,
                    np.empty((2, 8, 4, 4), np.float32), np.empty(128, np.float32))  # fmt: skip
    with pytest.raises(ValueError, match="acc"):
        conv2d_loop(x, flipped, bias, 1, 1, np.empty((2, 8, 4, 4), np.float32),
                    np.empty(64, np.float32))  # fmt: skip
    n = 8 * 4 * 4
    params = [np.ones(n, np.float32) for _ in range(5)]
    steps = x.reshape(1, 2, 3, 4, 4)
    v0 = np.zeros((2, n), np.float32)
    conv_scan_pool_loop(steps, flipped, bias, 1, 1, (4, 4), params[0], v0, *params[1:], False)
    with pytest.raises(ValueError, match="parameter"):
        conv_scan_pool_loop(steps, flipped, bias, 1, 1, (4, 4), params[0][:8], v0, *params[1:],
                            False)  # fmt: skip
    with pytest.raises(ValueError, match="potentials"):
        conv_scan_pool_loop(steps, flipped, bias, 1, 1, (4, 4), params[0], v0[:1], *params[1:],
                            False)  # fmt: skip
    with pytest.raises(ValueError, match="output sides"):
        conv_scan_pool_loop(steps, flipped, bias, 0, 0, (4, 4), params[0], v0, *params[1:], False)
    odd = flip_weight(np.ones((12, 3, 3, 3), np.float32))  # 12 channels: not whole vectors
    with pytest.raises(ValueError, match="channels"):
        conv_scan_pool_loop(steps, odd, np.zeros(12, np.float32), 1, 1, (4, 4),
                            *[np.ones(12 * 16, np.float32)] * 1, np.zeros((2, 192), np.float32),
                            *[np.ones(192, np.float32)] * 4, False)  # fmt: skip


def test_a_layer_too_large_to_probe_keeps_conv2d(monkeypatch):
    from ganglion.kernels.conv import cpu

    monkeypatch.setattr(cpu, "PROBE_MAX_VALUES", 67 * (16 * 16 + 32 * 16) - 1)  # one short
    layer = _layer(32, 16, 3, (1, 1))
    x = _spikes(3, 16, 4, 4)
    assert layer.cpu_loop()(x) is None  # F.conv2d's call
    assert torch.equal(layer.forward(x), F.conv2d(x, layer.weight, layer.bias, 1, (1, 1)))


def test_kernels_switch_turns_the_loop_off(monkeypatch):
    layer = _layer(16, 1, 3, (1, 1))
    x = _spikes(1, 1, 8, 8)
    monkeypatch.setitem(os.environ, "GANGLION_KERNELS", "0")
    assert not cpu_scan_available()
    assert torch.equal(layer.forward(x), F.conv2d(x, layer.weight, layer.bias, 1, (1, 1)))


def test_changed_weights_are_prepared_again():
    layer = _layer(16, 1, 3, (1, 1))
    x = _spikes(3, 1, 8, 8)
    first = layer.forward(x)
    with torch.no_grad():
        layer.weight.mul_(2.0)  # in place: the tensor's version moves
    np.testing.assert_allclose(
        layer.forward(x), F.conv2d(x, layer.weight, layer.bias, 1, (1, 1)), rtol=1e-5, atol=1e-5
    )
    layer.weight = torch.zeros_like(layer.weight)  # a new tensor
    assert torch.equal(layer.forward(x), layer.bias.view(1, -1, 1, 1).expand_as(first))

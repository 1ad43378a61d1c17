"""Lava backend: fixed_pt equals the torch fixed-point program spike for spike; floating_pt
agrees with the float reference within a stated tolerance; accuracy on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganglion.converters.loihi_quantize import quantize_loihi2
from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.runtime.session import load

pytestmark = pytest.mark.lava


def _both(program, x, **options):
    with load(program) as torch_session:
        expected = torch_session.run(x)
    with load(program, backend="lava", **options) as lava_session:
        got = lava_session.run(x)
    return expected, got


def test_fixed_pt_equals_torch_fixed_point_on_digits_mlp(quantized_mlp, digits_mlp):
    _, data = digits_mlp
    quantized_mlp.module.time.timesteps = 8  # a short run: same program, fewer steps
    try:
        expected, got = _both(quantized_mlp, data.x_test[:3])
    finally:
        quantized_mlp.module.time.timesteps = 32
    assert np.array_equal(expected, got)


def test_fixed_pt_equals_torch_spike_for_spike_with_leak_and_bias(leaky):
    program = leaky(timesteps=12)
    x = (torch.rand(12, 3, 6, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    fixed = quantize_loihi2(program, x)
    expected, got = _both(fixed, x.numpy())
    assert expected.shape == (12, 3, 4) and expected.sum() > 0
    assert np.array_equal(expected, got)


def test_fixed_pt_equals_torch_spike_for_spike_with_synaptic_current(cuba):
    """CubaLIF maps onto Lava's current-based LIF: du from syn_decay (0.75 -> du 1023)."""
    program = cuba(timesteps=12)
    x = (torch.rand(12, 3, 6, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    fixed = quantize_loihi2(program, x)
    assert fixed.manifest.report["loihi2"]["layers"]["lif1"]["du"] == 4095 - 3072
    expected, got = _both(fixed, x.numpy())
    assert expected.sum() > 0
    assert np.array_equal(expected, got)


def test_fixed_pt_equals_torch_through_conv_and_flatten(conv):
    program = conv(timesteps=6)
    x = torch.rand(16, 2, 4, 5, generator=torch.Generator().manual_seed(4))
    fixed = quantize_loihi2(program, x)
    expected, got = _both(fixed, x[:2].numpy())
    assert np.array_equal(expected, got)


def test_floating_pt_spike_counts_match_float_reference(digits_mlp):
    """Tolerance: per output neuron, |count − reference| ≤ 3 spikes of T = 24 (Lava's D = 3 step
    delay shifts the layers' transients), and the same predicted class for ≥ 4 of 5 samples."""
    model, data = digits_mlp
    opts = SpikingOptions(timesteps=24, reset="zero", decoding="count")
    program = convert_spiking(model, data.x_train, None, opts)
    expected, got = _both(program, data.x_test[:5], precision="floating_pt")
    assert np.abs(expected - got).max() <= 3
    assert (expected.argmax(-1) == got.argmax(-1)).sum() >= 4


def _lava_accuracy(program, x, y):
    with load(program, backend="lava") as session:
        return float((session.run(x).argmax(-1) == y).mean())


def test_fixed_pt_accuracy_within_two_points_of_ann_on_a_subset(quantized_mlp, digits_mlp):
    model, data = digits_mlp
    x, y = data.x_test[:100], data.y_test[:100]
    ann = float((model(torch.from_numpy(x)).argmax(-1).numpy() == y).mean())
    assert _lava_accuracy(quantized_mlp, x, y) >= ann - 0.02


@pytest.mark.slow
def test_fixed_pt_accuracy_within_two_points_of_ann_on_the_test_split(quantized_mlp, digits_mlp):
    model, data = digits_mlp
    ann = float((model(torch.from_numpy(data.x_test)).argmax(-1).numpy() == data.y_test).mean())
    assert _lava_accuracy(quantized_mlp, data.x_test, data.y_test) >= ann - 0.02


def test_fixed_pt_equals_torch_on_the_digits_cnn_with_pooling_folded(digits_cnn):
    model, data = digits_cnn
    opts = SpikingOptions(timesteps=4, reset="zero")
    program = convert_spiking(model, data.x_train[:64], None, opts)
    fixed = quantize_loihi2(program, data.x_train[:64])
    pools = [n for n, layer in program.module.graph.nodes.items() if "Pool" in type(layer).__name__]
    assert len(pools) == 2 and fixed.manifest.report["loihi2"]["folded_pooling"] == pools
    expected, got = _both(fixed, data.x_test[:3])
    assert np.abs(expected).sum() > 0
    assert np.array_equal(expected, got)

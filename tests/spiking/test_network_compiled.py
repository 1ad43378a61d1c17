"""Whole programs on the compiled CPU paths (numba scans, pooling, decode sum) equal the same
programs on the PyTorch references (``GANGLION_KERNELS=0``), float and fixed point."""

from __future__ import annotations

import pytest
import torch

from ganglion.converters.loihi_quantize import quantize_loihi2
from ganglion.converters.spiking import SpikingOptions, convert_spiking


def _both(monkeypatch, fn):  # noqa: ANN001, ANN202
    monkeypatch.setenv("GANGLION_KERNELS", "1")  # numba is a dependency: the compiled paths run
    compiled = fn()
    monkeypatch.setenv("GANGLION_KERNELS", "0")
    reference = fn()
    monkeypatch.delenv("GANGLION_KERNELS")
    return compiled, reference


@pytest.mark.parametrize("encoding", ["direct", "rate"])
def test_compiled_cnn_run_equals_reference(monkeypatch, digits_cnn, encoding) -> None:
    model, data = digits_cnn
    opts = SpikingOptions(timesteps=9, encoding=encoding, neuron="lif")
    net = convert_spiking(model, data.x_train[:64], None, opts).module
    x = torch.from_numpy(data.x_test[:5])
    with torch.inference_mode():
        compiled, reference = _both(monkeypatch, lambda: net.run(x, record=True))
    assert reference.abs().sum() > 0
    assert torch.equal(compiled, reference)


def test_compiled_fixed_point_run_and_step_equal_reference(monkeypatch, digits_mlp) -> None:
    model, data = digits_mlp
    program = convert_spiking(model, data.x_train[:64], None, SpikingOptions(timesteps=6))
    fixed = quantize_loihi2(program, data.x_train[:64]).module
    x = torch.from_numpy(data.x_test[:4])
    compiled, reference = _both(monkeypatch, lambda: fixed.run(x))
    assert reference.abs().sum() > 0
    assert torch.equal(compiled, reference)

    def stream() -> torch.Tensor:
        state = fixed.init_state(x.shape[0])
        for _ in range(fixed.time.timesteps + fixed.depth):
            out, state = fixed.step(x, state)
        return out

    streamed, streamed_reference = _both(monkeypatch, stream)
    assert torch.equal(streamed, streamed_reference)
    assert torch.equal(streamed, compiled)

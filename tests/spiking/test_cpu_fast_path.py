"""``CpuStep`` (``models/spiking/cpu_step.py``), the torch backend's lean CPU step, equals the
network's torch ``step`` bit for bit, output and every state array, step after step; it declines
the networks it does not take, and a session falls back to the torch path where it declines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.deployable import Deployable
from ganglion.models.spiking.cpu_step import CpuStep
from ganglion.runtime.session import load

STEPS = 10  # not a power of two: the membrane decoding's division rounds


def _converted(net: str, **options) -> tuple[Deployable, tuple[int, ...]]:
    torch.manual_seed(0)
    if net == "mlp":
        model, shape = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 5)), (12,)
    else:
        model = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(64, 5),
        )
        shape = (1, 8, 8)
    calibration = np.random.default_rng(0).uniform(0, 1, (64, *shape)).astype(np.float32)
    program = convert_spiking(model.eval(), calibration, None, SpikingOptions(STEPS, **options))
    return program, shape


def _inputs(shape: tuple[int, ...], batch: int) -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 1.5, (batch, *shape)).astype(np.float32)


@pytest.mark.parametrize(
    "net,options",
    [
        ("mlp", {"neuron": "if"}),
        ("mlp", {"neuron": "lif", "reset": "zero", "decoding": "count"}),
        ("cnn", {"neuron": "if"}),
        ("cnn", {"neuron": "lif", "decoding": "count"}),
    ],
)
@pytest.mark.parametrize("batch", [1, 3])
def test_cpu_step_equals_the_torch_step(net, options, batch) -> None:
    program, shape = _converted(net, **options)
    network = program.module
    fast = CpuStep.build(network)
    assert fast is not None
    x = _inputs(shape, batch)
    tensors = network.init_state(batch)
    arrays = {k: v.numpy().copy() for k, v in tensors.items()}
    with torch.inference_mode():
        for _ in range(STEPS):
            want, tensors = network.step(torch.from_numpy(x), tensors)
            result = fast(x, arrays)
            assert result is not None
            out, arrays = result
            assert np.array_equal(out, want.numpy())
            assert list(arrays) == list(tensors)
            for name, value in tensors.items():
                assert np.array_equal(arrays[name], value.numpy()), name
        network.run(torch.from_numpy(x), record=True)
    assert all(count.sum() > 0 for count in network.activity.values())  # resets were exercised


def test_cpu_step_equals_the_torch_step_on_every_node_type(handmade_network) -> None:
    """Conv, zero and subtract resets, sum-pool, flatten, scale, affine; time-major input."""
    fast = CpuStep.build(handmade_network)
    assert fast is not None
    xs = (torch.rand(STEPS, 2, 2, 4, 4, generator=torch.Generator().manual_seed(4)) < 0.5).float()
    tensors = handmade_network.init_state(2)
    arrays = {k: v.numpy().copy() for k, v in tensors.items()}
    with torch.inference_mode():
        for x in xs:
            want, tensors = handmade_network.step(x, tensors)
            out, arrays = fast(x.numpy(), arrays)
            assert np.array_equal(out, want.numpy())
            assert all(np.array_equal(arrays[k], v.numpy()) for k, v in tensors.items())


def test_cpu_step_declines_rate_input_and_residual_graphs(residual_net) -> None:
    program, _ = _converted("mlp", neuron="if", encoding="rate")
    assert CpuStep.build(program.module) is None
    x = np.random.default_rng(2).uniform(0, 1, (5, 1, 8, 8)).astype(np.float32)
    residual = convert_spiking(residual_net, x, None, SpikingOptions(timesteps=STEPS))
    assert CpuStep.build(residual.module) is None  # a node reads two nodes (the skip)


def test_session_step_takes_the_cpu_step_and_falls_back_without_kernels(monkeypatch) -> None:
    program, shape = _converted("mlp", neuron="if")
    session = load(program, backend="torch")
    assert session._cpu_step is not None
    x = _inputs(shape, 2)
    lean = [session.init_state(2)]
    for _ in range(STEPS):
        out, state = session.step(x, lean[-1])
        lean.append(state)
    monkeypatch.setenv("GANGLION_KERNELS", "0")  # the CPU step declines: the torch reference
    state = session.init_state(2)
    for _ in range(STEPS):
        reference, state = session.step(x, state)
    np.testing.assert_array_equal(out, reference)
    np.testing.assert_array_equal(out, session.run(x))


def test_cpu_step_follows_a_replaced_neuron_field() -> None:
    program, shape = _converted("mlp", neuron="lif")
    network = program.module
    fast = CpuStep.build(network)
    x = _inputs(shape, 2)
    neuron = next(iter(network.graph.neurons().values()))
    neuron.threshold = neuron.threshold * 0.5
    tensors = network.init_state(2)
    arrays = {k: v.numpy().copy() for k, v in tensors.items()}
    with torch.inference_mode():
        want, _ = network.step(torch.from_numpy(x), tensors)
        out, _ = fast(x, arrays)
    assert np.array_equal(out, want.numpy())
    neuron.threshold = neuron.threshold.double()  # the compiled loop cannot take it
    assert fast(x, arrays) is None

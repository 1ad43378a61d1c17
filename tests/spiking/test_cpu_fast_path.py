"""``CpuStep`` and ``CpuRun`` (``models/spiking/cpu_fast_path.py``), the torch backend's lean CPU
paths, equal the network's torch ``step`` (output and every state array, step after step) and
``run`` bit for bit; they decline the networks and calls they do not take, and a session then
takes the torch path."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.deployable import Deployable
from ganglion.models.spiking import network as network_module
from ganglion.models.spiking.cpu_fast_path import CpuRun, CpuStep
from ganglion.runtime.session import load

STEPS = 10  # not a power of two: the membrane decoding's division rounds
CONVERTED = [
    ("mlp", {"neuron": "if"}),
    ("mlp", {"neuron": "lif", "reset": "zero", "decoding": "count"}),
    ("cnn", {"neuron": "if"}),
    ("cnn", {"neuron": "lif", "decoding": "count"}),
]


def _converted(net: str, **options) -> tuple[Deployable, tuple[int, ...]]:
    torch.manual_seed(0)
    if net == "mlp":
        model, shape = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 5)), (12,)
    else:  # cnn2: a second convolution over spikes, its neuron and pool in one pass
        blocks = [nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2)]
        if net == "cnn2":
            blocks += [nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2)]
        model, shape = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(64, 5)), (1, 8, 8)
    calibration = np.random.default_rng(0).uniform(0, 1, (64, *shape)).astype(np.float32)
    program = convert_spiking(model.eval(), calibration, None, SpikingOptions(STEPS, **options))
    return program, shape


def _inputs(shape: tuple[int, ...], batch: int) -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 1.5, (batch, *shape)).astype(np.float32)


@pytest.mark.parametrize("net,options", CONVERTED)
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
    assert fast(x, {k: v.tolist() for k, v in arrays.items()}) is None  # lists: torch path
    assert fast(x, {**arrays, "decode": arrays["decode"].astype(np.float64)}) is None
    neuron.threshold = neuron.threshold.double()  # the compiled loop cannot take it
    assert fast(x, arrays) is None
    neuron.threshold = neuron.threshold.float()
    assert fast(x, arrays) is not None
    network.graph = copy.deepcopy(network.graph)  # another graph: the chain no longer holds
    assert fast(x, arrays) is None


def test_session_step_takes_a_state_of_lists() -> None:
    program, shape = _converted("mlp", neuron="if")
    session = load(program, backend="torch")
    x = _inputs(shape, 2)
    listed = {k: v.tolist() for k, v in session.init_state(2).items()}
    out, _ = session.step(x, listed)
    want, _ = session.step(x, session.init_state(2))
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("net,options", CONVERTED)
@pytest.mark.parametrize("batch", [1, 5])
def test_cpu_run_equals_the_torch_run(net, options, batch) -> None:
    program, shape = _converted(net, **options)
    fast = CpuRun.build(program.module)
    assert fast is not None
    x = _inputs(shape, batch)
    with torch.inference_mode():
        want = program.module.run(torch.from_numpy(x), record=True)
        out = fast(x, rows_per_chunk=1024)
    assert out is not None and np.array_equal(out, want.numpy())
    assert all(count.sum() > 0 for count in program.module.activity.values())


def test_cpu_run_follows_an_edited_or_replaced_initial_membrane() -> None:
    """The initial membranes a run keeps per batch size are remade whenever ``v_init`` changes,
    also by edits its tensor's version does not count (``.data``, a numpy view): each run
    equals the torch run of the network as it is then. A neuron replaced in the graph takes
    the torch path."""
    program, shape = _converted("mlp", neuron="if")
    fast = CpuRun.build(program.module)
    neuron = next(iter(program.module.graph.neurons().values()))
    x = _inputs(shape, 3)
    outs = []
    with torch.inference_mode():
        for change in (None, "edit", "data", "view", "replace"):
            if change == "edit":
                neuron.v_init.mul_(0.0)
            elif change == "data":
                neuron.v_init.data.add_(0.3)
            elif change == "view":
                neuron.v_init.numpy()[::2] = 0.6
            elif change == "replace":
                neuron.v_init = neuron.threshold * 0.9
            want = program.module.run(torch.from_numpy(x)).numpy()
            out = fast(x, rows_per_chunk=1024)
            assert out is not None and np.array_equal(out, want)
            outs.append(out)
    assert all(not np.array_equal(a, b) for a, b in zip(outs, outs[1:], strict=False))
    graph = program.module.graph
    name = next(k for k, v in graph.nodes.items() if v is neuron)
    graph.nodes[name] = copy.deepcopy(neuron)
    assert fast(x, rows_per_chunk=1024) is None  # the torch path: not the chain it was built on


def test_cpu_run_equals_the_torch_run_on_every_node_type(handmade_network) -> None:
    fast = CpuRun.build(handmade_network)
    xs = (torch.rand(STEPS, 3, 2, 4, 4, generator=torch.Generator().manual_seed(5)) < 0.5).float()
    with torch.inference_mode():
        want = handmade_network.run(xs)
        out = fast(xs.numpy(), rows_per_chunk=1024)
    assert out.shape == (STEPS, 3, 5) and np.array_equal(out, want.numpy())
    assert out.flags.writeable and out.flags.c_contiguous


@pytest.mark.parametrize("net,options", CONVERTED)
def test_cpu_run_in_several_chunks_equals_the_torch_run(net, options, monkeypatch) -> None:
    """Runs longer than a chunk go through time in the torch path's chunks (3 steps of 3
    samples here, the last one shorter), carrying every membrane across."""
    program, shape = _converted(net, **options)
    fast = CpuRun.build(program.module)
    x = _inputs(shape, 3)
    monkeypatch.setattr(network_module, "CHUNK_ROWS", 9)
    with torch.inference_mode():
        want = program.module.run(torch.from_numpy(x))
        out = fast(x, rows_per_chunk=9)
        whole = fast(x, rows_per_chunk=1024)
    assert out is not None and np.array_equal(out, want.numpy())
    np.testing.assert_allclose(out, whole, rtol=1e-5, atol=1e-5)  # chunks change no spike


def test_cpu_run_in_several_chunks_on_every_node_type(handmade_network, monkeypatch) -> None:
    fast = CpuRun.build(handmade_network)
    xs = (torch.rand(STEPS, 3, 2, 4, 4, generator=torch.Generator().manual_seed(5)) < 0.5).float()
    monkeypatch.setattr(network_module, "CHUNK_ROWS", 12)
    with torch.inference_mode():
        want = handmade_network.run(xs)
        out = fast(xs.numpy(), rows_per_chunk=12)
    assert out.shape == (STEPS, 3, 5) and np.array_equal(out, want.numpy())
    assert out.flags.writeable and out.flags.c_contiguous


@pytest.fixture
def scan_pool_calls(monkeypatch) -> list:
    """What each ``CpuConv2d.scan_pool`` call returns, in order (the call itself unchanged)."""
    from ganglion.kernels.conv.layer import CpuConv2d

    calls = []
    scan_pool = CpuConv2d.scan_pool

    def spy(self, *args):  # noqa: ANN001, ANN002, ANN202
        calls.append(result := scan_pool(self, *args))
        return result

    monkeypatch.setattr(CpuConv2d, "scan_pool", spy)
    return calls


@pytest.mark.parametrize(
    "options", [{"neuron": "if"}, {"neuron": "lif", "reset": "zero", "decoding": "count"}]
)
def test_cpu_run_fuses_a_convolution_its_neuron_and_pool(
    options, monkeypatch, scan_pool_calls
) -> None:
    """A convolution over spikes, the neuron only it feeds and the pool only that neuron feeds
    go through ``CpuConv2d.scan_pool`` in one pass (at ``FUSED_CONV_MIN_ROWS`` rows or more),
    equal to the torch run bit for bit, in one chunk and in several."""
    from ganglion.models.spiking import cpu_fast_path

    program, shape = _converted("cnn2", **options)
    fast = CpuRun.build(program.module)
    x = _inputs(shape, 4)
    with torch.inference_mode():
        want = program.module.run(torch.from_numpy(x), record=True)
        out = fast(x, rows_per_chunk=1024)  # 40 rows
        assert scan_pool_calls and all(c is not None for c in scan_pool_calls)
        assert all(count.sum() > 0 for count in program.module.activity.values())
        monkeypatch.setattr(network_module, "CHUNK_ROWS", 12)
        monkeypatch.setattr(cpu_fast_path, "FUSED_CONV_MIN_ROWS", 1)
        chunked_want = program.module.run(torch.from_numpy(x))
        chunked = fast(x, rows_per_chunk=12)  # 3 steps of 4 samples, the last one shorter
    assert out is not None and np.array_equal(out, want.numpy())
    assert chunked is not None and np.array_equal(chunked, chunked_want.numpy())
    assert len(scan_pool_calls) == 1 + 4  # one call per chunk


def test_session_run_takes_the_cpu_run_and_equals_the_reference(monkeypatch) -> None:
    program, shape = _converted("cnn", neuron="lif")
    session = load(program, backend="torch")
    assert session._cpu_run is not None
    x = _inputs(shape, 3)
    lean = session.run(x)
    recorded = session.run(x, record=True)  # record: the torch path, which counts spikes
    assert session.activity()
    monkeypatch.setenv("GANGLION_KERNELS", "0")
    np.testing.assert_array_equal(lean, recorded)
    np.testing.assert_array_equal(lean, session.run(x))


def test_cpu_run_fuses_a_first_convolution_over_time_major_input(scan_pool_calls) -> None:
    """Time-major input straight into a convolution, leaky neurons (decay, gain, bias, zero
    reset) and an average pool: the one pass takes them at 48 rows, equal to the torch run."""
    from ganglion.models.manifest import SpikingTime
    from ganglion.models.spiking import Affine as AffineLayer
    from ganglion.models.spiking import (
        AvgPool2d,
        Conv2d,
        Flatten,
        Neuron,
        SpikingGraph,
        SpikingNetwork,
    )

    g = torch.Generator().manual_seed(11)
    shape = (8, 4, 4)
    neuron = Neuron(
        decay=torch.full(shape, 0.9),
        gain=torch.full(shape, 1.5),
        bias=torch.full(shape, 0.02),
        threshold=torch.rand(shape, generator=g) + 0.5,
        v_reset=torch.zeros(shape),
        v_init=torch.rand(shape, generator=g) * 0.3,
        reset="zero",
        model="lif",
    )
    nodes = {
        "conv": Conv2d(
            torch.randn(8, 2, 3, 3, generator=g), torch.randn(8, generator=g) * 0.1, padding=(1, 1)
        ),  # fmt: skip
        "lif": neuron,
        "pool": AvgPool2d((2, 2), (2, 2)),
        "flat": Flatten(),
        "fc": AffineLayer(torch.randn(5, 32, generator=g), torch.zeros(5)),
    }
    edges = [("input", "conv"), ("conv", "lif"), ("lif", "pool"), ("pool", "flat"),
             ("flat", "fc"), ("fc", "output")]  # fmt: skip
    network = SpikingNetwork(SpikingGraph(nodes, edges, input_shape=(2, 4, 4)),
                             SpikingTime(timesteps=12))  # fmt: skip
    fast = CpuRun.build(network)
    xs = (torch.rand(12, 4, 2, 4, 4, generator=g) < 0.4).float()
    with torch.inference_mode():
        want = network.run(xs, record=True)
        fired = int(network.activity["lif"].sum())
        out = fast(xs.numpy(), rows_per_chunk=1024)
    assert scan_pool_calls and all(c is not None for c in scan_pool_calls)
    assert 0 < fired < 12 * 4 * 128  # some neurons fire, not every one at every step
    assert out is not None and np.array_equal(out, want.numpy())

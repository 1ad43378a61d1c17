"""``SpikingNetwork.step``'s one-timestep walk equals the general chunk walk bit for bit, and
the session's cheaper state check still refuses every tampered state.

The general walk (``_chunk_step`` below) is ``step`` as it ran through ``_run_chunk`` on a chunk
of one timestep: it is the spec the fast path is held to, output and every state tensor, step
after step, for converted MLPs and CNNs (IF and LIF, direct and rate input, each decoding), a
time-major hand-built graph, and a recurrent graph with delays and every neuron convention.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

from ganglion.converters.loihi_quantize import quantize_loihi2
from ganglion.converters.spiking import SpikingOptions, convert_spiking, spiking_manifest
from ganglion.models.deployable import Deployable
from ganglion.models.errors import ShapeError
from ganglion.models.manifest import SpikingTime
from ganglion.models.spiking import Affine, SpikingGraph, SpikingNetwork
from ganglion.models.spiking.decoding import scale_decoded
from ganglion.models.spiking.encoding import encode_step
from ganglion.models.spiking.graph import INPUT, OUTPUT
from ganglion.models.spiking.layers import Delay
from ganglion.models.spiking.neuron import Neuron
from ganglion.runtime import tensors
from ganglion.runtime.session import load

STEPS = 6


def _chunk_step(
    net: SpikingNetwork, x: torch.Tensor, state: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One step through the general walk: ``_run_chunk`` over a chunk of one timestep."""
    constants = net._constants(x)
    seq = None
    if not constants:
        if net.time.encoding == "rate":
            x = encode_step(x, int(state["t"].item()), "rate", net.time.seed)
        seq = x.unsqueeze(0)
    carry = {k: v for k, v in state.items() if k not in ("t", "decode")}
    out = net._run_chunk(seq, 1, constants, carry, record=False)[0]
    new = {"t": state["t"] + 1, **carry}
    if net.time.decoding == "none":
        return out, new
    new["decode"] = state["decode"] + out
    return scale_decoded(new["decode"], net.time), new


def _assert_step_equals_chunk_walk(net: SpikingNetwork, xs: list[torch.Tensor]) -> None:
    """Steps both walks side by side from the same fresh state, comparing at every step; the
    inputs must make every spiking neuron layer fire (so resets are exercised)."""
    fast = general = net.init_state(xs[0].shape[0])
    with torch.inference_mode():
        for x in xs:
            out, fast = net.step(x, fast)
            want, general = _chunk_step(net, x, general)
            assert torch.equal(out, want)
            assert list(fast) == list(general)
            for name, value in general.items():
                assert torch.equal(fast[name], value), name
        net.run(torch.stack(xs) if net.takes_time_major_input else xs[0], record=True)
    assert net.activity and all(count.sum() > 0 for count in net.activity.values())


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 5)
    )


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5),
    )


def _converted(factory, shape: tuple[int, ...], **options) -> Deployable:  # noqa: ANN001
    torch.manual_seed(0)
    calibration = np.random.default_rng(0).uniform(0, 1, (64, *shape)).astype(np.float32)
    opts = SpikingOptions(timesteps=STEPS, **options)
    return convert_spiking(factory().eval(), calibration, None, opts)


CONVERTED = [
    ("mlp", {"neuron": "if"}),
    ("mlp", {"neuron": "lif", "encoding": "rate", "decoding": "count", "reset": "zero"}),
    ("cnn", {"neuron": "if", "decoding": "count"}),
    ("cnn", {"neuron": "lif", "encoding": "rate"}),
]


@pytest.mark.parametrize(
    "net,options", CONVERTED, ids=lambda c: "-".join(c.values()) if isinstance(c, dict) else c
)
def test_step_equals_the_chunk_walk_for_converted_programs(net, options) -> None:
    shape = (12,) if net == "mlp" else (1, 8, 8)
    program = _converted(_mlp if net == "mlp" else _cnn, shape, **options)
    x = torch.from_numpy(np.random.default_rng(1).uniform(0, 1, (3, *shape)).astype(np.float32))
    _assert_step_equals_chunk_walk(program.module, [x] * STEPS)


def test_step_equals_the_chunk_walk_for_a_time_major_graph(handmade_network) -> None:
    g = torch.Generator().manual_seed(4)
    xs = list((torch.rand(STEPS, 2, 2, 4, 4, generator=g) < 0.5).float())
    _assert_step_equals_chunk_walk(handmade_network, xs)


def _neuron(
    shape: tuple[int, ...], model: str, g: torch.Generator, fire: str = "gt", **conventions
) -> Neuron:
    full = torch.full
    spiking = model not in ("li", "i", "cubali")
    synaptic = model.startswith("cuba")
    return Neuron(
        decay=full(shape, 1.0 if model == "if" else 0.85),
        gain=full(shape, 0.9),
        bias=full(shape, 0.02),
        threshold=(torch.rand(shape, generator=g) * 0.5 + 0.4) * spiking,
        v_reset=full(shape, -0.05 * spiking),
        v_init=torch.rand(shape, generator=g) * 0.2,
        syn_decay=full(shape, 0.6) if synaptic else None,
        syn_gain=full(shape, 0.8) if synaptic else None,
        model=model,
        fire=fire if spiking else "none",
        **conventions,
    )


def recurrent_graph() -> SpikingGraph:
    """input [6] -> fc -> lif <-> rec (a cycle) -> delay -> cuba (CubaLIF, delayed zero reset,
    lower bound) -> head -(delay-1 edge)-> li -> output: plain neurons inside a cycle, a delay
    buffer, a delayed edge and a non-spiking output."""
    g = torch.Generator().manual_seed(5)
    rand = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    nodes = {
        "fc": Affine(rand(8, 6), rand(8) * 0.1),
        "lif": _neuron((8,), "lif", g, reset="zero"),
        "rec": Affine(rand(8, 8) * 0.4, rand(8) * 0.05),
        "delay": Delay(torch.randint(0, 3, (8,), generator=g).float()),
        "cuba": _neuron(
            (8,), "cubalif", g, "ge", reset="zero", reset_delay=1, v_min=torch.full((8,), -0.3)
        ),
        "head": Affine(rand(4, 8), torch.zeros(4)),
        "li": _neuron((4,), "li", g),
    }
    chain = [INPUT, "fc", "lif", "delay", "cuba", "head", "li", OUTPUT]
    edges = [*zip(chain, chain[1:], strict=False), ("lif", "rec"), ("rec", "lif")]
    return SpikingGraph(nodes, edges, (6,), delays={("head", "li"): 1})


@pytest.mark.parametrize("kernels", ["1", "0"], ids=["compiled", "reference"])
@pytest.mark.parametrize("time", ["time-major", "direct-membrane"])
def test_step_equals_the_chunk_walk_for_a_recurrent_graph_with_delays(
    monkeypatch, kernels, time
) -> None:
    monkeypatch.setenv("GANGLION_KERNELS", kernels)
    graph = recurrent_graph()
    assert graph.recurrent and graph.nodes["lif"].plain and not graph.nodes["cuba"].plain
    spiking_time = (
        SpikingTime(timesteps=STEPS)
        if time == "time-major"
        else SpikingTime(timesteps=STEPS, encoding="direct", decoding="membrane")
    )
    net = SpikingNetwork(graph, spiking_time)
    g = torch.Generator().manual_seed(6)
    xs = list(torch.rand(STEPS, 3, 6, generator=g) * 2)
    _assert_step_equals_chunk_walk(net, xs if time == "time-major" else xs[:1] * STEPS)


def test_compiled_step_equals_the_reference_step(monkeypatch) -> None:
    """The numba single-step update against the PyTorch reference scan, through ``step``."""
    net = _converted(_mlp, (12,), neuron="lif", reset="zero").module
    x = torch.from_numpy(np.random.default_rng(2).uniform(0, 1, (4, 12)).astype(np.float32))

    def stream() -> list[torch.Tensor]:
        state, seen = net.init_state(4), []
        for _ in range(STEPS):
            out, state = net.step(x, state)
            seen += [out, *state.values()]
        return seen

    compiled = stream()
    monkeypatch.setenv("GANGLION_KERNELS", "0")
    reference = stream()
    assert all(torch.equal(a, b) for a, b in zip(compiled, reference, strict=True))


@pytest.mark.parametrize("reset", ["subtract", "zero"])
@pytest.mark.parametrize("shape", [(3, 37), (2, 4, 3, 3)], ids=["B3-N37", "B2-4x3x3"])
def test_float_step_kernel_is_one_step_of_the_scan(reset, shape) -> None:
    from ganglion.kernels.lif import cpu

    g = torch.Generator().manual_seed(8)
    current, v0 = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    kept = v0.clone()
    n = int(np.prod(shape[1:]))
    params = cpu.float_params(
        torch.rand(n, generator=g) + 0.5,
        torch.rand(n, generator=g),
        torch.rand(n, generator=g) + 0.2,
        torch.randn(n, generator=g) * 0.1,
        torch.randn(n, generator=g) * 0.1,
    )
    spikes, v = cpu.float_step(current, v0, params, reset == "zero")
    flat = (current.reshape(1, shape[0], n), v0.reshape(shape[0], n))
    want_spikes, want_v = cpu.float_scan(*flat, params, reset == "zero")
    assert 0 < spikes.sum() < spikes.numel()
    assert torch.equal(spikes, want_spikes[0].reshape(shape))
    assert torch.equal(v, want_v.reshape(shape))
    assert torch.equal(v0, kept)


def test_step_output_shares_no_memory_with_the_state() -> None:
    """A non-spiking output neuron's output is its membrane's value, not the state tensor."""
    net = SpikingNetwork(recurrent_graph(), SpikingTime(timesteps=STEPS))
    out, state = net.step(torch.ones(2, 6), net.init_state(2))
    assert torch.equal(out, state["v.li"])
    assert out.data_ptr() != state["v.li"].data_ptr()


# ---- the session's state check ---------------------------------------------------------------


@functools.cache
def _session_program(kind: str) -> Deployable:
    if kind == "fixed-point":
        calibration = np.random.default_rng(0).uniform(0, 1, (64, 12)).astype(np.float32)
        return quantize_loihi2(_converted(_mlp, (12,), reset="zero"), calibration)
    graph = recurrent_graph()
    time = SpikingTime(timesteps=STEPS, encoding="direct", decoding="membrane")
    return Deployable(SpikingNetwork(graph, time), spiking_manifest(graph, time), graph.to_config())


def _tampered(state: dict[str, np.ndarray], how: str) -> dict[str, np.ndarray]:
    name = next(k for k in state if k.startswith("v."))
    changed = dict(state)
    if how == "wrong shape":
        changed[name] = np.zeros((state[name].shape[0], state[name].shape[1] + 1), np.float32)
    elif how == "missing":
        del changed[name]
    elif how == "extra":
        changed["v.unknown"] = state[name].copy()
    elif how == "reshaped in place":
        state[name].shape = (*state[name].shape[1:], state[name].shape[0])
    return changed


@pytest.mark.parametrize(
    "how", ["wrong shape", "missing", "extra", "reshaped in place", "another batch"]
)
@pytest.mark.parametrize(
    "backend,program", [("torch", "float"), ("torch", "fixed-point"), ("onnxruntime", "float")]
)
def test_session_refuses_a_tampered_state_after_a_trusted_step(backend, program, how) -> None:
    session = load(_session_program(program), backend)
    width = session.manifest.inputs[0].shape[1]
    x = np.random.default_rng(3).uniform(0, 1, (2, width)).astype(np.float32)
    _, state = session.step(x, session.init_state(2))
    _, state = session.step(x, state)  # accepted without a walk: the state it returned
    tampered = _tampered(state, how)
    with pytest.raises(ShapeError, match="state"):
        session.step(x[:1] if how == "another batch" else x, tampered)


@pytest.mark.parametrize("program", ["float", "fixed-point"])
def test_session_step_chain_equals_run(program) -> None:
    session = load(_session_program(program))
    width = session.manifest.inputs[0].shape[1]
    x = np.random.default_rng(4).uniform(0, 1, (3, width)).astype(np.float32)
    state = session.init_state(3)
    for _ in range(session.manifest.time.timesteps + session.manifest.time.delay):
        out, state = session.step(x, state)
    np.testing.assert_array_equal(out, session.run(x))


def test_state_check_walks_a_state_once_per_signature(monkeypatch) -> None:
    walks = []
    check_state = tensors.check_state
    monkeypatch.setattr(tensors, "check_state", lambda *a: walks.append(1) or check_state(*a))
    session = load(_session_program("float"))
    check = tensors.StateCheck(session.manifest.state)
    state = session.init_state(2)
    check(state, 2)
    check({k: v.copy() for k, v in state.items()}, 2)  # same names and shapes: no walk
    assert len(walks) == 1
    check(session.init_state(3), 3)
    check({k: v.tolist() for k, v in session.init_state(3).items()}, 3)  # lists: always walked
    assert len(walks) == 3
    with pytest.raises(ShapeError, match="state"):
        check(state, 3)


def test_compiled_step_sees_a_replaced_neuron_field(monkeypatch) -> None:
    """The compiled update's cached parameters follow a field set after a step."""
    net = _converted(_mlp, (12,), neuron="lif").module
    x = torch.from_numpy(np.random.default_rng(5).uniform(0, 1, (4, 12)).astype(np.float32))
    state = net.init_state(4)
    _, state = net.step(x, state)  # caches the compiled parameters
    neuron = next(iter(net.graph.neurons().values()))
    neuron.threshold = neuron.threshold * 0.5
    compiled = net.step(x, state)
    monkeypatch.setenv("GANGLION_KERNELS", "0")
    reference = net.step(x, state)
    assert torch.equal(compiled[0], reference[0])
    assert all(torch.equal(compiled[1][k], v) for k, v in reference[1].items())

"""Every node type and convention: NIR round trip bit-equal (one test walks the registry),
recurrent graphs, delays, and ``run`` == repeated ``step`` for all of them."""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from ganglion.converters.nir_graph import read_nir, write_nir
from ganglion.converters.nir_semantics import PRESETS, semantics_for
from ganglion.models.manifest import SpikingTime
from ganglion.models.spiking import SpikingGraph, SpikingNetwork
from ganglion.models.spiking.graph import INPUT, OUTPUT
from ganglion.models.spiking.layers import (
    LAYER_TYPES,
    Affine,
    AvgPool2d,
    Conv1d,
    Conv2d,
    Delay,
    Flatten,
    Scale,
    SumPool2d,
    Threshold,
    tensor_fields,
)
from ganglion.models.spiking.neuron import Neuron

GEN = torch.Generator().manual_seed(11)


def _neuron(shape: tuple[int, ...], model: str, **conventions) -> Neuron:
    full = torch.full
    leaky = model not in ("if", "i")
    synaptic = model.startswith("cuba")
    fire = conventions.pop("fire", "gt")
    spiking = model not in ("li", "i", "cubali")  # threshold and v_reset unused otherwise
    return Neuron(
        decay=full(shape, 0.85 if leaky else 1.0),
        gain=full(shape, 0.7),
        bias=full(shape, 0.01 if leaky else 0.0),
        threshold=(torch.rand(shape, generator=GEN) * 0.5 + 0.4) * spiking,
        v_reset=full(shape, -0.05 * spiking),
        v_init=torch.rand(shape, generator=GEN) * 0.2,
        syn_decay=full(shape, 0.6) if synaptic else None,
        syn_gain=full(shape, 0.4) if synaptic else None,
        model=model,
        fire=fire if spiking else "none",
        **conventions,
    )


def every_node_graph(**conventions) -> SpikingGraph:
    """One graph holding every registered node type and every neuron model, with a
    recurrent edge and a synaptic delay: input [2, 4, 4] -> ... -> [5]."""
    rand = lambda *s: torch.randn(*s, generator=GEN)  # noqa: E731
    nodes = {
        "conv2": Conv2d(rand(2, 2, 3, 3) * 0.5, rand(2) * 0.1, padding=(1, 1)),
        "scale": Scale(torch.rand(2, 4, 4, generator=GEN) + 0.5),
        "avg": AvgPool2d((1, 1), (1, 1)),
        "sum": SumPool2d((1, 1), (1, 1)),
        "rows": Flatten(1, 2),
        "conv": Conv1d(rand(3, 2, 3), rand(3) * 0.1, padding=1),
        "cuba": _neuron((3, 16), "cubalif", **conventions),
        "delay": Delay(torch.randint(0, 3, (3, 16), generator=GEN).float()),
        "flat": Flatten(),
        "fc": Affine(rand(8, 48) * 0.3, torch.zeros(8)),
        "lif": _neuron((8,), "lif", **conventions),
        "rec": Affine(rand(8, 8) * 0.3, rand(8) * 0.05),
        "if": _neuron((8,), "if", **conventions),
        "head": Affine(rand(5, 8), torch.zeros(5)),
        "li": _neuron((5,), "li", **conventions),
        "int": _neuron((5,), "i", **conventions),
        "cubali": _neuron((5,), "cubali", **conventions),
        "spike": Threshold(torch.full((5,), 0.3)),
    }
    chain = [
        INPUT,
        "conv2",
        "scale",
        "avg",
        "sum",
        "rows",
        "conv",
        "cuba",
        "delay",
        "flat",
        "fc",
        "lif",
        "if",
        "head",
    ]
    edges = [*zip(chain, chain[1:], strict=False), ("lif", "rec"), ("rec", "lif")]
    edges += [("head", n) for n in ("li", "int", "cubali")]
    edges += [(n, "spike") for n in ("li", "int", "cubali")] + [("spike", OUTPUT)]
    return SpikingGraph(nodes, edges, (2, 4, 4), delays={("head", "li"): 1})


def assert_bit_equal(a: SpikingGraph, b: SpikingGraph) -> None:
    assert set(a.nodes) == set(b.nodes)
    assert sorted(a.edges) == sorted(b.edges) and a.delays == b.delays
    for name, layer in a.nodes.items():
        other = b.nodes[name]
        assert type(layer) is type(other), name
        plain = {k: v for k, v in vars(layer).items() if not isinstance(v, torch.Tensor)}
        assert plain == {k: v for k, v in vars(other).items() if not isinstance(v, torch.Tensor)}
        for field, tensor in tensor_fields(layer).items():
            assert torch.equal(tensor, getattr(other, field).reshape(tensor.shape)), (name, field)


def test_the_round_trip_graph_covers_every_registered_node_type() -> None:
    graph = every_node_graph()
    assert {type(n).__name__ for n in graph.nodes.values()} == set(LAYER_TYPES)
    models = {n.model for n in graph.neurons().values()}
    assert models == {"if", "lif", "li", "i", "cubalif", "cubali"}


@pytest.mark.parametrize(
    "conventions",
    [
        {},
        {"reset": "zero", "reset_delay": 1, "fire": "ge"},
        {"spikes": "many", "decay_mode": "exact", "synaptic_input": "jump"},
    ],
    ids=["plain", "zero-delayed-ge", "many-exact-jump"],
)
def test_every_node_type_round_trips_nir_bit_equal(tmp_path: Path, conventions) -> None:
    graph = every_node_graph(**conventions)
    write_nir(graph, tmp_path / "g.nir", dt=1e-3, dt_leaky=1e-6)
    back = read_nir(tmp_path / "g.nir", semantics=semantics_for("norse"))  # metadata wins
    assert_bit_equal(graph, back)
    x = torch.rand(9, 2, 2, 4, 4, generator=GEN)
    time = SpikingTime()
    assert torch.equal(SpikingNetwork(graph, time).run(x), SpikingNetwork(back, time).run(x))


def _stream(network: SpikingNetwork, x: torch.Tensor) -> torch.Tensor:
    state, outs = network.init_state(x.shape[1]), []
    for x_t in x:
        out, state = network.step(x_t, state)
        outs.append(out)
    return torch.stack(outs)


@pytest.mark.parametrize("chunk_rows", [1024, 6])
def test_run_equals_repeated_step_for_a_recurrent_graph_with_delays(monkeypatch, chunk_rows):
    from ganglion.models.spiking import network as network_module

    monkeypatch.setattr(network_module, "CHUNK_ROWS", chunk_rows)  # 6: a chunk per 3 steps
    net = SpikingNetwork(every_node_graph(reset_delay=1, v_min=None), SpikingTime())
    x = torch.rand(14, 2, 2, 4, 4, generator=GEN) * 2
    with torch.no_grad():
        whole, streamed = net.run(x, record=True), _stream(net, x)
    assert net.graph.recurrent and whole.sum() > 0 and net.activity["lif"].sum() > 0
    assert torch.equal(whole, streamed)


def test_recurrent_edge_carries_the_previous_steps_spikes() -> None:
    """One IF neuron feeding itself through weight 1: an input pulse at t = 0 that fires it
    keeps it firing, one step after another (never in the same step)."""
    one = torch.ones(1)
    neuron = Neuron(one, one, 0 * one, 0.5 * one, 0 * one, 0 * one, reset="zero")
    nodes = {"n": neuron, "w": Affine(torch.ones(1, 1), torch.zeros(1))}
    graph = SpikingGraph(nodes, [(INPUT, "n"), ("n", "w"), ("w", "n"), ("n", OUTPUT)], (1,))
    assert graph.delays == {("n", "w"): 1}  # moved back onto the neuron's output
    x = torch.zeros(5, 1, 1)
    x[0] = 1.0
    out = SpikingNetwork(graph, SpikingTime()).run(x)
    assert out.reshape(-1).tolist() == [1.0, 1.0, 1.0, 1.0, 1.0]


def test_delay_node_shifts_each_element_by_its_steps() -> None:
    steps = torch.tensor([0.0, 1.0, 3.0])
    graph = SpikingGraph({"d": Delay(steps)}, [(INPUT, "d"), ("d", OUTPUT)], (3,))
    x = torch.arange(1.0, 7.0).reshape(6, 1, 1).expand(6, 1, 3)
    out = SpikingNetwork(graph, SpikingTime()).run(x)[:, 0]
    assert out[:, 0].tolist() == [1, 2, 3, 4, 5, 6]
    assert out[:, 1].tolist() == [0, 1, 2, 3, 4, 5]
    assert out[:, 2].tolist() == [0, 0, 0, 1, 2, 3]


def test_sinabs_rules_fire_several_spikes_and_bound_the_membrane() -> None:
    one = torch.ones(1)
    neuron = Neuron(one, one, 0 * one, one, 0 * one, 0 * one, v_min=-one, reset="subtract",
                    fire="ge", spikes="many")  # fmt: skip
    graph = SpikingGraph({"n": neuron}, [(INPUT, "n"), ("n", OUTPUT)], (1,))
    x = torch.tensor([3.5, -4.0, 1.0, 0.5]).reshape(4, 1, 1)
    out = SpikingNetwork(graph, SpikingTime()).run(x).reshape(-1)
    # 3.5 -> 3 spikes, 0.5 left; -4 -> bounded at -1; +1 -> 0, no spike; +0.5 -> 0.5
    assert out.tolist() == [3.0, 0.0, 0.0, 0.0]


def test_presets_name_their_framework_and_differ() -> None:
    assert set(PRESETS) == {"nir", "snntorch", "norse", "sinabs", "spikingjelly", "lava"}
    assert len({tuple(sorted(p.to_dict().items())) for p in PRESETS.values()}) == len(PRESETS)


def test_nested_graph_is_inlined_with_prefixed_names(tmp_path: Path) -> None:
    inner = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=np.array([3])),
            "lif": nir.IF(r=np.ones(3), v_threshold=np.ones(3), v_reset=np.zeros(3)),
            "output": nir.Output(output_type=np.array([3])),
        },
        edges=[("input", "lif"), ("lif", "output")],
    )
    graph = nir.NIRGraph(
        nodes={
            "input": nir.Input(input_type=np.array([2])),
            "fc": nir.Linear(weight=np.ones((3, 2))),
            "sub": inner,
            "output": nir.Output(output_type=np.array([3])),
        },
        edges=[("input", "fc"), ("fc", "sub"), ("sub", "output")],
    )
    nir.write(tmp_path / "nested.nir", graph)
    ours = read_nir(tmp_path / "nested.nir", dt=1.0)
    assert list(ours.nodes) == ["fc", "sub.lif"]
    assert sorted(ours.edges) == sorted([(INPUT, "fc"), ("fc", "sub.lif"), ("sub.lif", OUTPUT)])

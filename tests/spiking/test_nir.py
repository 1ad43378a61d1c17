"""NIR: ours -> NIR -> ours is bit-equal; broken or unsupported files get errors naming them."""

from __future__ import annotations

from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from ganglion.converters.nir_graph import read_nir, to_nir, write_nir
from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.errors import NIRError
from ganglion.models.manifest import SpikingTime
from ganglion.models.spiking import SpikingGraph, SpikingNetwork
from ganglion.models.spiking.layers import tensor_fields


def assert_graphs_bit_equal(a: SpikingGraph, b: SpikingGraph) -> None:
    assert list(a.nodes) == list(b.nodes)
    assert sorted(a.edges) == sorted(b.edges)
    for name, layer in a.nodes.items():
        other = b.nodes[name]
        assert type(layer) is type(other), name
        for field, tensor in tensor_fields(layer).items():
            assert torch.equal(tensor, getattr(other, field).reshape(tensor.shape)), (name, field)


@pytest.mark.parametrize("decoding", ["membrane", "count"])
@pytest.mark.parametrize("neuron", ["if", "lif"])
def test_converted_program_round_trips_bit_equal(digits_cnn, tmp_path: Path, neuron, decoding):
    model, data = digits_cnn
    d = convert_spiking(
        model,
        data.x_train[:64],
        None,
        SpikingOptions(neuron=neuron, decoding=decoding, timesteps=6),
    )
    write_nir(d.module.graph, tmp_path / "g.nir")
    back = read_nir(tmp_path / "g.nir")
    assert_graphs_bit_equal(d.module.graph, back)
    x = torch.from_numpy(data.x_test[:16])
    again = SpikingNetwork(back, d.module.time)
    assert torch.equal(d.module.run(x), again.run(x))


def test_every_node_type_round_trips(handmade_graph: SpikingGraph, tmp_path: Path) -> None:
    write_nir(handmade_graph, tmp_path / "h.nir")
    assert_graphs_bit_equal(handmade_graph, read_nir(tmp_path / "h.nir"))


def test_residual_program_round_trips(residual_net, tmp_path: Path) -> None:
    x = torch.rand(8, 1, 8, 8)
    graph = convert_spiking(residual_net, x, None).module.graph
    write_nir(graph, tmp_path / "r.nir")
    assert_graphs_bit_equal(graph, read_nir(tmp_path / "r.nir"))


def test_nir_file_uses_standard_nodes(digits_mlp) -> None:
    model, data = digits_mlp
    graph = to_nir(convert_spiking(model, data.x_train[:32], None).module.graph)
    kinds = {type(n).__name__ for n in graph.nodes.values()}
    assert kinds == {"Input", "Output", "Affine", "IF"}
    neuron = next(n for n in graph.nodes.values() if isinstance(n, nir.IF))
    assert neuron.v_threshold.shape == neuron.r.shape == (128,)  # per-neuron arrays
    assert neuron.metadata["reset"] == "subtract"


def test_lif_discretization_follows_dt(tmp_path: Path) -> None:
    tau, dt = np.full(3, 2e-3), 1e-3
    graph = nir.NIRGraph(
        nodes={
            "in": nir.Input(input_type={"input": np.array([3])}),
            "lif": nir.LIF(
                tau=tau,
                r=np.full(3, 2.0),
                v_leak=np.full(3, 0.5),
                v_threshold=np.ones(3),
                v_reset=np.zeros(3),
            ),
            "out": nir.Output(output_type={"output": np.array([3])}),
        },
        edges=[("in", "lif"), ("lif", "out")],
    )
    nir.write(tmp_path / "lif.nir", graph)
    neuron = read_nir(tmp_path / "lif.nir", dt=dt).nodes["lif"]
    assert torch.allclose(neuron.decay, torch.full((3,), 0.5))  # 1 - dt/tau
    assert torch.allclose(neuron.gain, torch.full((3,), 1.0))  # dt*r/tau
    assert torch.allclose(neuron.bias, torch.full((3,), 0.25))  # dt*v_leak/tau
    assert neuron.reset == "zero"


def test_truncated_nir_names_the_file(handmade_graph, tmp_path: Path) -> None:
    good = tmp_path / "good.nir"
    write_nir(handmade_graph, good)
    cut = tmp_path / "cut.nir"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(NIRError, match=r"cut\.nir: not a readable NIR"):
        read_nir(cut)


def test_not_hdf5_names_the_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.nir"
    text.write_text("hello")
    with pytest.raises(NIRError, match=r"notes\.nir: not a readable NIR \(HDF5\) file"):
        read_nir(text)
    with pytest.raises(NIRError, match="no such file"):
        read_nir(tmp_path / "absent.nir")


def test_imported_graph_runs_time_major(handmade_graph, tmp_path: Path) -> None:
    write_nir(handmade_graph, tmp_path / "h.nir")
    net = SpikingNetwork(read_nir(tmp_path / "h.nir"), SpikingTime())
    out = net.run(torch.rand(5, 2, 2, 4, 4))
    assert out.shape == (5, 2, 5)


def test_node_names_from_a_file_reach_the_terminal_as_plain_text(tmp_path: Path) -> None:
    """A NIR node named with an escape sequence or rich markup: ``inspect`` shows it, but as
    text (control characters replaced), never restyling or retitling the terminal."""
    from ganglion.runtime.cli import invoke

    evil = "a\x1b[7m\x07[b]"  # reverse video, a bell, rich markup
    graph = nir.NIRGraph(
        nodes={
            "in": nir.Input(input_type={"input": np.array([3])}),
            evil: nir.Affine(weight=np.ones((2, 3)), bias=np.zeros(2)),
            "if": nir.IF(r=np.ones(2), v_threshold=np.ones(2)),
            "out": nir.Output(output_type={"output": np.array([2])}),
        },
        edges=[("in", evil), (evil, "if"), ("if", "out")],
    )
    nir.write(tmp_path / "named.nir", graph)
    code, _, err = invoke("import-nir", str(tmp_path / "named.nir"), "-o", str(tmp_path / "b"))
    assert code == 0, err
    code, out, err = invoke("inspect", str(tmp_path / "b"))
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out
    assert "a\ufffd[7m\ufffd[b]" in out  # shown, not obeyed


def _chain_nodes(out_name: str = "out") -> dict:
    rng = np.random.default_rng(0)
    return {
        "in": nir.Input(input_type={"input": np.array([3])}),
        "fc": nir.Affine(
            weight=rng.standard_normal((3, 3)).astype(np.float32), bias=np.zeros(3, np.float32)
        ),  # fmt: skip
        "if": nir.IF(
            r=np.full(3, 1e4, np.float32),
            v_threshold=np.ones(3, np.float32),
            v_reset=np.zeros(3, np.float32),
        ),  # fmt: skip
        out_name: nir.Output(output_type={"output": np.array([3])}),
    }


@pytest.mark.parametrize("out_name", ["output", "out"])
def test_a_skip_edge_from_input_to_output_imports_whatever_the_output_is_called(
    tmp_path: Path, out_name: str
) -> None:
    edges = [("in", "fc"), ("fc", "if"), ("if", out_name), ("in", out_name)]
    nir.write(tmp_path / "skip.nir", nir.NIRGraph(nodes=_chain_nodes(out_name), edges=edges))
    graph = read_nir(tmp_path / "skip.nir", dt=1e-4)
    net = SpikingNetwork(graph, SpikingTime(timesteps=4))
    x = torch.rand(4, 2, 3, generator=torch.Generator().manual_seed(1))
    alone = SpikingNetwork(
        read_nir(_write_chain(tmp_path / "chain.nir"), dt=1e-4), SpikingTime(timesteps=4)
    )
    with torch.no_grad():  # the output sums the spikes and the input itself
        torch.testing.assert_close(net.run(x), alone.run(x) + x, rtol=0, atol=0)


def _write_chain(path: Path) -> Path:
    edges = [("in", "fc"), ("fc", "if"), ("if", "out")]
    nir.write(path, nir.NIRGraph(nodes=_chain_nodes(), edges=edges))
    return path


def test_a_node_type_nir_does_not_define_is_named(tmp_path: Path) -> None:
    import h5py

    path = _write_chain(tmp_path / "newer.nir")
    with h5py.File(path, "r+") as file:  # as a newer NIR writer might label a node
        del file["node/nodes/fc/type"]
        file["node/nodes/fc/type"] = "MaxPool2d"
    for type_check in (True, False):
        with pytest.raises(NIRError, match=r"newer\.nir: node 'fc' has type 'MaxPool2d'"):
            read_nir(path, type_check=type_check)


def test_an_unconnected_node_is_named_not_the_nodes_nir_adds_around_it(tmp_path: Path) -> None:
    nodes = {**_chain_nodes(), "spare": nir.Affine(weight=np.eye(2), bias=np.zeros(2))}
    graph = nir.NIRGraph(
        nodes=nodes, edges=[("in", "fc"), ("fc", "if"), ("if", "out")], type_check=False
    )
    nir.write(tmp_path / "spare.nir", graph)
    with pytest.raises(NIRError, match="node 'spare' has no edge into it or none out of it"):
        read_nir(tmp_path / "spare.nir")

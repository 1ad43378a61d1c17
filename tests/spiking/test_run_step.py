"""run (whole input) equals repeated step (streaming) for every spiking program shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.errors import ShapeError
from ganglion.models.spiking import SpikingNetwork


def _stream(network: SpikingNetwork, x: torch.Tensor, steps: int) -> list[torch.Tensor]:
    state = network.init_state(x.shape[1] if network.takes_time_major_input else x.shape[0])
    outs = []
    for t in range(steps):
        out, state = network.step(x[t] if network.takes_time_major_input else x, state)
        outs.append(out)
    assert int(state["t"]) == steps
    return outs


@pytest.mark.parametrize("encoding", ["direct", "rate"])
@pytest.mark.parametrize("decoding", ["membrane", "count"])
@pytest.mark.parametrize("neuron", ["if", "lif"])
def test_run_equals_repeated_step_converted(digits_cnn, encoding, decoding, neuron) -> None:
    model, data = digits_cnn
    opts = SpikingOptions(timesteps=10, encoding=encoding, decoding=decoding, neuron=neuron)
    net = convert_spiking(model, data.x_train[:64], None, opts).module
    x = torch.from_numpy(data.x_test[:7])
    with torch.no_grad():
        whole = net.run(x)
        streamed = _stream(net, x, 10)
    assert torch.equal(whole, streamed[-1])


def test_run_equals_repeated_step_time_major(handmade_network) -> None:
    x = (torch.rand(12, 3, 2, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    with torch.no_grad():
        whole = handmade_network.run(x)
        streamed = torch.stack(_stream(handmade_network, x, 12))
    assert whole.shape == (12, 3, 5)
    assert whole.sum() > 0, "the test network must spike"
    assert torch.equal(whole, streamed)


def test_residual_run_equals_repeated_step(residual_net) -> None:
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    net = convert_spiking(residual_net, x, None, SpikingOptions(timesteps=9)).module
    with torch.no_grad():
        assert torch.equal(net.run(x), _stream(net, x, 9)[-1])


def test_record_counts_spikes_per_neuron(handmade_network) -> None:
    x = torch.ones(4, 2, 2, 4, 4)
    with torch.no_grad():
        out = handmade_network.run(x, record=True)
    assert set(handmade_network.activity) == {"lif1", "lif2"}
    assert torch.equal(handmade_network.activity["lif2"], out.sum(dim=(0, 1)))


def test_wrong_input_shape_is_refused(digits_mlp) -> None:
    model, data = digits_mlp
    net = convert_spiking(model, data.x_train[:32], None).module
    with pytest.raises(ShapeError, match=r"features \(64,\), got shape \(3, 65\)"):
        net.run(torch.zeros(3, 65))
    with pytest.raises(ShapeError, match="floating point"):
        net.run(torch.zeros(3, 64, dtype=torch.int64))


def test_time_major_program_wants_a_time_axis(handmade_network) -> None:
    with pytest.raises(ShapeError, match=r"\[T, batch, ...\]"):
        handmade_network.run(torch.zeros(3, 2, 4, 4))


def test_module_to_reaches_the_graph_tensors(handmade_network) -> None:
    """``Module.to`` (how the torch backend puts a program on a GPU) converts every node tensor,
    though the nodes are plain dataclasses, not submodules."""
    from ganglion.models.spiking.layers import tensor_fields

    def dtypes() -> set[torch.dtype]:
        return {
            t.dtype
            for layer in handmade_network.graph.nodes.values()
            for t in tensor_fields(layer).values()
        }

    assert dtypes() == {torch.float32}
    handmade_network.to(torch.float64)
    assert dtypes() == {torch.float64}


def test_rate_spikes_of_a_sample_do_not_depend_on_its_batch() -> None:
    """Each sample's spikes come from its own features, t and the seed: alone, reversed or
    among others it gets the same spikes (a served model's answer must not depend on the
    other requests)."""
    from ganglion.models.spiking.rate_code import rate_spikes

    x = np.random.default_rng(3).random((8, 5, 4), dtype=np.float32)
    for t in range(4):
        whole = rate_spikes(x, t, seed=11)
        assert np.array_equal(rate_spikes(x[::-1], t, seed=11), whole[::-1])
        assert all(np.array_equal(rate_spikes(x[i : i + 1], t, 11)[0], whole[i]) for i in range(8))
        assert 0 < whole.mean() < 1 and not np.array_equal(whole, rate_spikes(x, t, seed=12))


def test_graph_nir_says_how_the_program_runs_over_time(tmp_path) -> None:
    """NIR itself carries no T, encoding or decoding; a peer reads them from ganglion_time."""
    import json

    import nir

    from ganglion.runtime.bundle import save_bundle

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    calib = np.random.default_rng(0).random((16, 4), dtype=np.float32)
    options = SpikingOptions(timesteps=6, encoding="rate", decoding="count")
    bundle = save_bundle(convert_spiking(model.eval(), calib, options=options), tmp_path / "b")
    time = json.loads(nir.read(str(bundle / "graph.nir")).metadata["ganglion_time"])
    assert (time["timesteps"], time["encoding"], time["decoding"]) == (6, "rate", "count")


@pytest.mark.parametrize(
    ("encoding", "decoding"), [("rate", "count"), ("direct", "membrane"), ("direct", "count")]
)
def test_import_nir_reads_ganglion_time_back(tmp_path, encoding, decoding) -> None:
    """export -> import-nir runs as the original: same T, encoding, decoding and seed."""
    from ganglion.runtime.bundle import save_bundle
    from ganglion.runtime.cli import invoke
    from ganglion.runtime.session import load

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    calib = np.random.default_rng(0).random((16, 4), dtype=np.float32)
    options = SpikingOptions(timesteps=6, encoding=encoding, decoding=decoding, seed=5)
    bundle = save_bundle(convert_spiking(model.eval(), calib, options=options), tmp_path / "b")
    code, _, err = invoke("import-nir", str(bundle / "graph.nir"), "-o", str(tmp_path / "back"))
    assert code == 0, err
    original, again = load(bundle), load(tmp_path / "back")
    assert again.manifest.time.timesteps == 6
    assert again.manifest.time.encoding == encoding and again.manifest.time.seed == 5
    x = np.random.default_rng(1).random((3, 4), dtype=np.float32)
    np.testing.assert_array_equal(again.run(x), original.run(x))


@pytest.mark.parametrize(
    ("note", "words"),
    [
        ('{"timesteps": 0}', "manifest.time.timesteps"),
        ('{"encoding": "magic"}', "manifest.time.encoding"),
        ('{"seed": -1}', "manifest.time.seed"),
        ('{"timesteps": 4, "shell": "rm"}', "unknown field 'shell'"),
        ("[1, 2]", "must be a JSON object"),
        ("{", "not valid JSON"),
    ],
)
def test_a_bad_ganglion_time_is_refused_naming_the_file(tmp_path, note, words) -> None:
    import nir

    from ganglion.converters.nir_graph import TIME_KEY
    from ganglion.runtime.cli import invoke

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    calib = np.random.default_rng(0).random((16, 4), dtype=np.float32)
    program = convert_spiking(model.eval(), calib, options=SpikingOptions(timesteps=4))
    from ganglion.runtime.bundle import save_bundle

    graph = nir.read(str(save_bundle(program, tmp_path / "b") / "graph.nir"))
    graph.metadata[TIME_KEY] = note
    path = tmp_path / "hostile.nir"
    nir.write(str(path), graph)
    code, _, err = invoke("import-nir", str(path), "-o", str(tmp_path / "out"))
    assert code != 0 and err.count("\n") == 1 and str(path) in err and words in err, err
    assert not (tmp_path / "out").exists()

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

"""ANN -> SNN conversion: accuracy on digits, residual networks, options, and every error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.errors import ConversionError
from ganglion.models.spiking import Neuron, Scale
from ganglion.runtime.demo import accuracy_sweep


@pytest.mark.parametrize("network", ["digits_mlp", "digits_cnn"])
def test_converted_digits_network_keeps_ann_accuracy(network: str, request) -> None:
    model, data = request.getfixturevalue(network)
    rows = {r.timesteps: r for r in accuracy_sweep(network, model, data, [16, 32])}
    assert rows[32].ann_accuracy > 0.95
    assert rows[16].gap_points <= 0.5 + 1e-9
    assert rows[32].gap_points <= 0.2 + 1e-9


def test_report_has_thresholds_rates_and_accuracy(digits_mlp) -> None:
    model, data = digits_mlp
    d = convert_spiking(model, data.x_train[:300], data.y_train[:300], SpikingOptions(timesteps=16))
    report = d.manifest.report
    assert set(report["layers"]) == set(d.module.graph.neurons())
    for layer in report["layers"].values():
        assert 0.0 < layer["firing_rate"] < 1.0
        assert layer["threshold_min"] > 0
    assert 0.9 < report["ann_accuracy"] <= 1.0
    assert abs(report["ann_accuracy"] - report["snn_accuracy"]) < 0.05


def test_thresholds_are_percentiles_of_relu_activations(digits_mlp) -> None:
    model, data = digits_mlp
    x = torch.from_numpy(data.x_train)
    d = convert_spiking(model, x, None, SpikingOptions(percentile=99.0))
    hidden = torch.relu(model[0](x))
    expected = torch.quantile(hidden.flatten(), 0.99)
    first = next(iter(d.module.graph.neurons().values()))
    assert torch.allclose(first.threshold, expected.expand_as(first.threshold), rtol=1e-4)


def test_per_channel_thresholds_differ_by_channel(digits_cnn) -> None:
    model, data = digits_cnn
    d = convert_spiking(model, data.x_train[:200], None, SpikingOptions(per_channel=True))
    neuron = next(iter(d.module.graph.neurons().values()))
    per_channel = neuron.threshold.reshape(neuron.shape[0], -1)
    assert torch.all(per_channel == per_channel[:, :1])  # constant inside a channel
    assert per_channel[:, 0].unique().numel() > 1


def test_residual_network_sums_branches_and_matches_ann(residual_net) -> None:
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    d = convert_spiking(residual_net, x, None, SpikingOptions(timesteps=256, percentile=100.0))
    graph = d.module.graph
    merging = [n for n in graph.neurons() if len(graph.predecessors(n)) == 2]
    assert merging, "the neuron after the addition must receive both branches"
    assert any(isinstance(layer, Scale) for layer in graph.nodes.values())
    with torch.no_grad():
        ann, snn = residual_net(x), d.module.run(x)
    assert torch.corrcoef(torch.stack([ann.flatten(), snn.flatten()]))[0, 1] > 0.99
    assert (ann.argmax(-1) == snn.argmax(-1)).float().mean() > 0.9


def test_batchnorm_is_folded_and_dropout_dropped(digits_cnn) -> None:
    model, data = digits_cnn
    d = convert_spiking(model, data.x_train[:100], None)
    types = {type(layer).__name__ for layer in d.module.graph.nodes.values()}
    assert types == {"Conv2d", "Neuron", "AvgPool2d", "Flatten", "Affine"}


@pytest.mark.parametrize("neuron,decay", [("if", 1.0), ("lif", 0.99)])
def test_neuron_option_sets_decay(digits_mlp, neuron: str, decay: float) -> None:
    model, data = digits_mlp
    d = convert_spiking(model, data.x_train[:100], None, SpikingOptions(neuron=neuron))
    for layer in d.module.graph.neurons().values():
        assert torch.all(layer.decay == decay) and layer.model == neuron


def test_count_decoding_adds_a_spiking_output_layer(digits_mlp) -> None:
    model, data = digits_mlp
    d = convert_spiking(
        model, data.x_train, data.y_train, SpikingOptions(decoding="count", timesteps=64)
    )
    graph = d.module.graph
    assert isinstance(graph.nodes[graph.predecessors("output")[0]], Neuron)
    counts = d.module.run(torch.from_numpy(data.x_test))
    assert torch.all(counts == counts.round()) and counts.max() <= 64
    acc = float((counts.argmax(-1).numpy() == data.y_test).mean())
    assert acc > 0.9


def test_rate_encoding_is_seeded(digits_mlp) -> None:
    model, data = digits_mlp
    x = torch.from_numpy(data.x_test[:50])
    outs = [
        convert_spiking(
            model, data.x_train[:100], None, SpikingOptions(encoding="rate", seed=s)
        ).module.run(x)
        for s in (1, 1, 2)
    ]
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])


class _Sigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(4, 8), nn.Sigmoid())
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def test_unsupported_layer_error_names_layer_path_and_supported_set() -> None:
    with pytest.raises(ConversionError) as err:
        convert_spiking(_Sigmoid().eval(), torch.rand(8, 4))
    message = str(err.value)
    assert "Sigmoid" in message and "'features.1'" in message
    assert "supported: Linear, Conv2d, AvgPool2d" in message


def test_batchnorm_without_preceding_layer_is_refused() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 2)).eval()
    with pytest.raises(ConversionError, match="BatchNorm must directly follow"):
        convert_spiking(model, torch.rand(8, 4))


def test_calibration_data_of_the_wrong_shape_is_refused(digits_mlp) -> None:
    model, _ = digits_mlp
    with pytest.raises(ConversionError, match=r"calibration x has features \(32,\)"):
        convert_spiking(torch.export.export(model, (torch.rand(2, 64),)), torch.rand(10, 32))


@pytest.mark.parametrize(
    "field,value",
    [("neuron", "izhikevich"), ("encoding", "latency"), ("decoding", "first"), ("timesteps", 0)],
)
def test_bad_options_are_refused(field: str, value) -> None:
    with pytest.raises(ConversionError, match=field):
        SpikingOptions(**{field: value})

"""Low-latency conversion (``SpikingOptions.method``): calibration against the ANN, MSE and
burst thresholds, and the programs they make being ordinary spiking programs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.models.errors import ConversionError
from ganglion.models.spiking import SpikingNetwork
from ganglion.runtime.bundle import load_bundle, save_bundle
from ganglion.runtime.cli import invoke as _ganglion
from ganglion.runtime.session import load

CALIB = 400  # calibration samples: enough for per-channel means, quick to run


def _convert(digits_mlp, **options: object):
    model, data = digits_mlp
    return convert_spiking(model, data.x_train[:CALIB], None, SpikingOptions(**options))


def _hidden_mean_errors(network: SpikingNetwork, model: torch.nn.Module, x: torch.Tensor):
    """Per hidden layer: |E[spike rate · θ] − E[ANN ReLU output]| averaged over neurons,
    from a recorded run and the ANN's own forward pass (not the calibration code)."""
    with torch.no_grad():
        network.run(x, record=True)
        relus, h = [], x
        for layer in model:
            h = layer(h)
            if isinstance(layer, torch.nn.ReLU):
                relus.append(h.mean(0))
    neurons = network.graph.neurons()
    steps = network.time.timesteps * x.shape[0]
    errors = []
    for (name, neuron), ann_mean in zip(neurons.items(), relus, strict=True):
        snn_mean = network.activity[name] / steps * neuron.threshold
        errors.append(float((snn_mean - ann_mean).abs().mean()))
    return errors


def test_calibration_removes_the_mean_error_of_every_hidden_layer(digits_mlp) -> None:
    model, data = digits_mlp
    x = torch.from_numpy(data.x_train[:CALIB])
    plain = _hidden_mean_errors(_convert(digits_mlp, timesteps=4, method="mse").module, model, x)
    calibrated = _convert(digits_mlp, timesteps=4, method="calibrated").module
    fixed = _hidden_mean_errors(calibrated, model, x)
    assert all(after < 0.5 * before for before, after in zip(plain, fixed, strict=True)), (
        plain,
        fixed,
    )


def test_calibration_lowers_the_rms_error_of_leaky_layers(digits_mlp) -> None:
    """Leaky neurons lose charge the ANN never loses: a systematic error calibration removes,
    layer by layer and at the output (measured here against the ANN's logits)."""
    model, data = digits_mlp
    options = {"timesteps": 8, "neuron": "lif", "leak": 0.9}
    calibrated = _convert(digits_mlp, method="calibrated", **options)
    layers = calibrated.manifest.report["calibration"]
    assert set(layers) == {"relu_1", "relu_4", "output"}
    assert all(e["rmse_after"] < e["rmse_before"] for e in layers.values()), layers
    uncalibrated = _convert(digits_mlp, method="mse", **options)
    x = torch.from_numpy(data.x_test)
    with torch.no_grad():
        logits = model(x)
        rms = {
            name: float((program.module.run(x) - logits).pow(2).mean().sqrt())
            for name, program in (("mse", uncalibrated), ("calibrated", calibrated))
        }
    assert rms["calibrated"] < 0.8 * rms["mse"], rms


@pytest.mark.parametrize("method", ["calibrated", "burst"])
def test_low_latency_program_run_equals_repeated_step(digits_mlp, method: str) -> None:
    net = _convert(digits_mlp, timesteps=4, method=method).module
    x = torch.from_numpy(digits_mlp[1].x_test[:9])
    with torch.no_grad():
        whole = net.run(x)
        state = net.init_state(x.shape[0])
        for _ in range(4):
            streamed, state = net.step(x, state)
    assert torch.equal(whole, streamed)


@pytest.mark.parametrize("method", ["calibrated", "burst"])
def test_low_latency_bundle_runs_the_same_on_onnxruntime(
    digits_mlp, method: str, tmp_path: Path
) -> None:
    program = _convert(digits_mlp, timesteps=4, method=method)
    folder = save_bundle(program, tmp_path / method)
    x = digits_mlp[1].x_test[:16]
    with load(program) as reference, load(folder, backend="onnxruntime") as onnx:
        np.testing.assert_allclose(onnx.run(x), reference.run(x), atol=1e-5, rtol=0)


def test_burst_neurons_fire_several_spikes_in_one_step(digits_mlp) -> None:
    net = _convert(digits_mlp, timesteps=4, method="burst").module
    assert all(n.spikes == "many" for n in net.graph.neurons().values())
    most = 0.0
    for sample in digits_mlp[1].x_test[:16]:
        with torch.no_grad():
            net.run(torch.from_numpy(sample[None]), record=True)
        most = max(most, *(float(count.max()) for count in net.activity.values()))
    assert most > 4, "some neuron should fire more spikes than the 4 timesteps"


@pytest.fixture(scope="module")
def archive(tmp_path_factory, digits_mlp) -> Path:
    model, data = digits_mlp
    root = tmp_path_factory.mktemp("method")
    torch.export.save(
        torch.export.export(model, (torch.from_numpy(data.x_train[:2]),)), str(root / "mlp.pt2")
    )
    np.savez(root / "calib.npz", x=data.x_train[:CALIB], y=data.y_train[:CALIB])
    return root


def test_method_flag_is_recorded_in_the_manifest(archive: Path) -> None:
    out = archive / "calibrated"
    code, text, _ = _ganglion(
        "convert", "spiking", str(archive / "mlp.pt2"), "--calib", str(archive / "calib.npz"),
        "-o", str(out), "--timesteps", "4", "--method", "calibrated",
    )  # fmt: skip
    assert code == 0 and "method calibrated" in text and "calibrated relu_4" in text
    manifest = load_bundle(out).manifest
    assert manifest.report["method"] == "calibrated"
    assert set(manifest.report["calibration"]) == {"relu_1", "relu_4", "output"}
    assert manifest.provenance["options"]["method"] == "calibrated"
    assert manifest.provenance["calibration"]["corrected_samples"] == CALIB
    info = json.loads(_ganglion("inspect", str(out), "--json")[1])
    assert info["report"]["method"] == "calibrated"


def test_unknown_method_is_one_line_and_writes_nothing(archive: Path) -> None:
    out = archive / "bad"
    code, _, err = _ganglion(
        "convert", "spiking", str(archive / "mlp.pt2"), "--calib", str(archive / "calib.npz"),
        "-o", str(out), "--method", "ttfs",
    )  # fmt: skip
    assert code != 0 and not out.exists()
    assert err.count("\n") == 1 and "--method must be one of" in err and "'ttfs'" in err


def test_unknown_method_is_refused_in_python() -> None:
    with pytest.raises(ConversionError, match="method"):
        SpikingOptions(method="signed")


@pytest.mark.parametrize("method", ["percentile", "mse"])
def test_calibration_data_that_overflows_a_layer_is_refused_naming_it(method) -> None:
    """A NaN compared false with zero, so an overflowing layer read as a silent one and got
    threshold 1.0: the bundle converted, then failed to load."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    torch.nn.init.ones_(mlp[0].weight)  # 8 x 3e38 is beyond float32
    calib = np.full((4, 8), 3e38, np.float32)
    with pytest.raises(ConversionError, match=r"layer '\w+' is not finite on calibration sample 0"):
        convert_spiking(mlp.eval(), calib, None, SpikingOptions(timesteps=4, method=method))

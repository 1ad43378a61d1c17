"""The torch fixed-point program: run == repeated step, quantization report, bundle round trip."""

from __future__ import annotations

import numpy as np
import torch

from ganglion.converters.loihi_quantize import quantize_loihi2
from ganglion.runtime.bundle import load_bundle, save_bundle
from ganglion.runtime.session import load


def test_run_equals_repeated_step_over_t_plus_depth_steps(quantized_mlp, digits_mlp):
    _, data = digits_mlp
    program = quantized_mlp.module
    x = torch.from_numpy(data.x_test[:3])
    state = program.init_state(3)
    for _ in range(program.time.timesteps + program.depth):
        out, state = program.step(x, state)
    assert program.depth == 3
    assert torch.equal(out, program.run(x))


def test_quantized_bundle_says_loihi2_fixed_and_round_trips(quantized_mlp, digits_mlp, tmp_path):
    _, data = digits_mlp
    path = save_bundle(quantized_mlp, tmp_path / "q")
    loaded = load_bundle(path)
    assert loaded.manifest.numerics == "loihi2-fixed"
    with load(path) as session:
        again = session.run(data.x_test[:5])
    expected = quantized_mlp.module.run(torch.from_numpy(data.x_test[:5])).numpy()
    assert np.array_equal(again, expected)


def test_quantization_report_has_per_layer_error_and_accuracy_change(quantized_mlp):
    report = quantized_mlp.manifest.report["loihi2"]
    weights = [v for v in report["layers"].values() if "weight_rms_error" in v]
    neurons = [v for v in report["layers"].values() if "vth" in v]
    assert len(weights) == 3 and len(neurons) == 2
    assert all(0 <= w["weight_rms_error"] < 0.05 for w in weights)
    assert all(0 < n["vth"] < 2**17 for n in neurons)
    assert abs(report["accuracy"]["change_points"]) <= 2.0


def test_leak_and_bias_program_quantizes_with_bounded_spike_change(leaky):
    program = leaky(timesteps=40)
    x = (torch.rand(40, 4, 6, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    fixed = quantize_loihi2(program, x)
    assert fixed.manifest.report["loihi2"]["layers"]["lif1"]["dv"] == 410  # 4096 · (1 − 0.9)
    reference = program.module.run(x).sum(0)
    shifted = fixed.module.run(x).sum(0)  # D = 2 steps later: the last 2 input steps are unseen
    assert (reference - shifted).abs().max() <= 4


def test_cubalif_program_quantizes_with_bounded_spike_change(cuba):
    program = cuba(timesteps=40)
    x = (torch.rand(40, 4, 6, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    fixed = quantize_loihi2(program, x)
    layers = fixed.manifest.report["loihi2"]["layers"]
    assert (layers["lif1"]["du"], layers["lif2"]["du"]) == (1023, 2047)  # 4095 − 4096 · c
    reference = program.module.run(x).sum(0)
    shifted = fixed.module.run(x).sum(0)  # D = 2 steps later: the last 2 input steps are unseen
    assert reference.sum() > 0
    assert (reference - shifted).abs().max() <= 4

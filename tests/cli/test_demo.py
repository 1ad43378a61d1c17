"""The demo's code paths: bundle writing and the deployment tour across backends and targets."""

from __future__ import annotations

from pathlib import Path

from ganglion.runtime.demo import write_demo_bundle
from ganglion.runtime.demo_tour import LAVA_TARGET, SIMULATED_DEVICES, deployment_tour


def test_demo_tour_agrees_across_backends(digits_mlp, tmp_path: Path) -> None:
    model, data = digits_mlp
    bundle = write_demo_bundle("mlp", model, data, tmp_path, timesteps=8)
    for name in ("mlp.pt2", "mlp-calib.npz", "mlp-test-x.npy"):
        assert (tmp_path / name).is_file()
    rows = {row.target: row for row in deployment_tour(bundle, data, lava_samples=2)}
    reference = rows["torch (CPU)"]
    assert reference.accuracy > 0.9
    assert rows["onnxruntime (CPU)"].agreement == "1.000 of predictions"
    assert abs(rows["loihi2 fixed point, torch predictor"].accuracy - reference.accuracy) < 0.03
    assert rows[LAVA_TARGET].agreement == "identical outputs on 2 samples"
    for device in SIMULATED_DEVICES:
        row = rows[f"{device} (batch 1)"]
        assert row.how.startswith("simulated") and row.energy_mj > 0
    assert rows["loihi2 chip fit"].agreement.endswith("fits: True")

"""The demo's code paths: bundle writing and the deployment tour across backends and targets."""

from __future__ import annotations

from pathlib import Path

from ganglion.runtime.demo import DEMO_MARK, claim_demo_folder, write_demo_bundle
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
    streaming = rows["torch (CPU), streaming step"]
    assert streaming.agreement == f"bit-identical to run on {len(data.y_test)} samples"
    assert streaming.accuracy == reference.accuracy and streaming.latency_ms > 0
    assert abs(rows["loihi2 fixed point, torch predictor"].accuracy - reference.accuracy) < 0.03
    assert rows[LAVA_TARGET].agreement == "identical outputs on 2 samples"
    for device in SIMULATED_DEVICES:
        row = rows[f"{device} (batch 1)"]
        assert row.how.startswith("simulated") and row.energy_mj > 0
    assert rows["loihi2 chip fit"].agreement.endswith("fits: True")


def test_demo_writes_only_into_its_own_folder(tmp_path: Path, one_line_error) -> None:
    """A folder with a user's files, a bundle or a folder inside one is refused before any
    training, and nothing in it changes; a new, empty or earlier demo folder is taken."""
    from ganglion.runtime.bundle import save_bundle
    from ganglion.runtime.cli import invoke

    users = tmp_path / "users"
    users.mkdir()
    (users / "mlp.pt2").write_bytes(b"my model")
    bundle = Path(tmp_path / "b")
    save_bundle(_tiny_program(), bundle)
    listing = sorted(p.name for p in bundle.iterdir())
    refused = {users: "holds files the demo did not write", bundle: "inside the bundle"}
    refused[bundle / "demo"] = "inside the bundle"
    for out, words in refused.items():
        code, _, err = invoke("demo", "--quick", "--out", str(out))
        one_line_error(code, err, str(out), words)
    assert (users / "mlp.pt2").read_bytes() == b"my model"
    assert sorted(p.name for p in bundle.iterdir()) == listing
    for fresh in (tmp_path / "new" / "demo", users):
        claim_demo_folder(fresh, force=fresh == users)
        claim_demo_folder(fresh)  # marked now: a later run takes it without --force
        assert (fresh / DEMO_MARK).is_file()
    assert (users / "mlp.pt2").read_bytes() == b"my model"


def _tiny_program():
    import numpy as np
    import torch

    from ganglion.converters.spiking import SpikingOptions, convert_spiking

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    calib = np.random.default_rng(0).uniform(0, 1, (16, 4)).astype(np.float32)
    return convert_spiking(model.eval(), calib, None, SpikingOptions(timesteps=4))

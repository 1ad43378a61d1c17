"""``ganglion quantize`` and ``ganglion inspect --target loihi2`` from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ganglion.converters.spiking import SpikingOptions, convert_spiking
from ganglion.runtime.bundle import load_bundle, save_bundle
from ganglion.runtime.cli.app import main


def _cli(args: list[str]) -> int:
    """Exit code of ``ganglion ARGS``."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code or 0


def test_quantize_writes_a_loihi2_fixed_bundle_that_runs_on_torch(digits_mlp, tmp_path, capsys):
    model, data = digits_mlp
    program = convert_spiking(model, data.x_train, None, SpikingOptions(timesteps=8))
    source = save_bundle(program, tmp_path / "float")
    np.savez(tmp_path / "calib.npz", x=data.x_train[:128], y=data.y_train[:128])
    assert (
        _cli(
            [
                "quantize",
                str(source),
                "--target",
                "loihi2",
                "-o",
                str(tmp_path / "q"),
                "--calib",
                str(tmp_path / "calib.npz"),
            ]
        )
        == 0
    )
    assert "points" in capsys.readouterr().out
    assert load_bundle(tmp_path / "q").manifest.numerics == "loihi2-fixed"
    np.save(tmp_path / "x.npy", data.x_test[:4])
    assert (
        _cli(
            [
                "run",
                str(tmp_path / "q"),
                "--input",
                str(tmp_path / "x.npy"),
                "--output",
                str(tmp_path / "y.npy"),
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "y.npy").shape == (4, 10)
    capsys.readouterr()
    assert _cli(["inspect", str(tmp_path / "q"), "--target", "loihi2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fits"] is True
    assert _cli(["inspect", str(tmp_path / "q"), "--target", "loihi2", "--chips", "0"]) == 1
    assert "--chips must be at least 1, got 0" in capsys.readouterr().err
